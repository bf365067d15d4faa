"""`pocketlm serve` against real clients: OpenAI's Python package, curl, and a concurrent load.

Why: the server is for other people's programs. These tests run the release binary on the real SmolLM2-135M-Instruct
Q4_1 and check what a client sees — the same greedy text as `pocketlm run`, exact usage counts, server-sent events
ending with [DONE], OpenAI error objects with 4xx statuses for bad requests, 503 + Retry-After past the queue,
cancellation when a client disconnects, bounded memory under load, and a drain on SIGTERM.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".build" / "release" / "pocketlm"
CACHE = Path(os.environ.get("POCKETLM_CACHE") or Path.home() / ".cache" / "pocketlm")
MODEL = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"


class Server:
    """A `pocketlm serve` process on a free port; stopped with SIGTERM."""

    def __init__(self, *args: str, model: Path = MODEL):
        for path, how in ((BIN, "swift build -c release"), (MODEL, "make fetch")):
            if not path.exists():
                raise RuntimeError(f"missing {path}: run `{how}` first")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--model", str(model), "--port", "0", "--threads", "2", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"on http://([\d.]+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"serve did not start: {line}{self.proc.stderr.read()}")
        self.url = f"http://{m.group(1)}:{m.group(2)}"
        self.port = int(m.group(2))
        # Keep draining stderr so the server never blocks on a full pipe.
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def post(url: str, body, timeout: float = 120) -> tuple[int, dict, dict]:
    """POSTs `body` (a dict, or raw bytes) and returns (status, headers, parsed JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def stream(url: str, body: dict, timeout: float = 120) -> list[str]:
    """POSTs a streaming request and returns the `data:` payloads."""
    req = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        text = r.read().decode()
    return [e[6:] for e in text.split("\n\n") if e.startswith("data: ")]


def run_cli(*args: str) -> dict:
    """`pocketlm run … --json`: the library's own greedy generation, the reference for the server's replies."""
    out = subprocess.run([str(BIN), "run", "--model", str(MODEL), "--threads", "2", "--temperature", "0", "--json", *args],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def server():
    s = Server("--parallel", "4", "--queue", "64", "--context", "1024")
    yield s
    assert s.stop() == 0


def test_openai_client_chat_plain_and_streaming(server):
    import openai  # weights-tools/requirements.txt; `make python-deps` installs it
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    question = "What is the capital of France?"
    expected = run_cli("--chat", "--prompt", question, "--max-tokens", "40")

    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": question}],
                                           temperature=0, max_tokens=40)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected["text"]
    assert reply.usage.prompt_tokens == len(expected["prompt_tokens"])
    assert reply.usage.completion_tokens == len(expected["tokens"])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == ("length" if len(expected["tokens"]) == 40 else "stop")

    chunks = list(client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": question}],
                                                 temperature=0, max_tokens=40, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected["text"]
    assert chunks[-1].usage.completion_tokens == len(expected["tokens"])
    # The streamed request repeats the first: its whole prompt but the last token is in a slot's cache.
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == len(expected["prompt_tokens"]) - 1

    models = client.models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_openai_client_text_completion(server):
    import openai  # weights-tools/requirements.txt; `make python-deps` installs it
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    expected = run_cli("--prompt", "The capital of France is", "--max-tokens", "16")
    r = client.completions.create(model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=16)
    assert r.choices[0].text == expected["text"]
    assert r.usage.completion_tokens == len(expected["tokens"])
    pieces = client.completions.create(model="smollm2", prompt="The capital of France is", temperature=0,
                                       max_tokens=16, stream=True)
    assert "".join(p.choices[0].text for p in pieces) == expected["text"]
    # A bad value comes back as the client's own error type, with our message.
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="smollm2", prompt="x", temperature=5)


def test_speculate_lookup_same_text_and_draft_counts():
    """`serve --speculate lookup`: a request decoding alone drafts from its prompt; the reply is `run`'s greedy text."""
    import openai  # weights-tools/requirements.txt; `make python-deps` installs it
    source = (REPO / "configs" / "speculation" / "repeat.txt").read_text()
    expected = run_cli("--chat", "--prompt", source, "--max-tokens", "96")
    s = Server("--parallel", "2", "--context", "1024", "--speculate", "lookup:8")
    try:
        status, _, body = post(s.url + "/v1/chat/completions", {
            "messages": [{"role": "user", "content": source}], "temperature": 0, "max_tokens": 96})
        assert status == 200
        assert body["choices"][0]["message"]["content"] == expected["text"]
        assert body["usage"]["completion_tokens"] == len(expected["tokens"])
        timings = body["timings"]
        # A repeat of its input: most drafts are accepted.
        assert timings["draft_n"] > 0 and timings["draft_n_accepted"] > timings["draft_n"] // 2
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused")
        chunks = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": source}],
                                                temperature=0, max_tokens=96, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected["text"]
    finally:
        assert s.stop() == 0
    # A draft length below 1 is refused before the server starts.
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([str(BIN), "serve", "--model", str(MODEL), "--speculate", "lookup:0"], check=True,
                       capture_output=True, timeout=60)


def test_memory_budget_one_slot(tmp_path):
    """`serve --memory-budget` on a packed model, one slot: `run`'s greedy text, a follow-up request reuses the
    conversation's KV cache, the process stays under its budget; more slots than the budget plans for are refused."""
    packed = tmp_path / "smollm2-q4_1.flash.gguf"
    subprocess.run([str(BIN), "pack", "--model", str(MODEL), "--out", str(packed)], check=True, capture_output=True,
                   timeout=300)
    question = "What is the capital of France?"
    expected = run_cli("--chat", "--prompt", question, "--max-tokens", "24", "--context", "512")
    budget = 160 << 20
    s = Server("--memory-budget", str(budget), "--context", "512", model=packed)
    try:
        first = [{"role": "user", "content": question}]
        status, _, body = post(s.url + "/v1/chat/completions", {"messages": first, "temperature": 0, "max_tokens": 24})
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == expected["text"]
        follow = first + [{"role": "assistant", "content": expected["text"]}, {"role": "user", "content": "And of Germany?"}]
        status, _, body2 = post(s.url + "/v1/chat/completions", {"messages": follow, "temperature": 0, "max_tokens": 24})
        assert status == 200, body2
        assert body2["usage"]["prompt_tokens_details"]["cached_tokens"] >= body["usage"]["prompt_tokens"], body2["usage"]
        assert s.rss_kib() * 1024 <= budget
    finally:
        assert s.stop() == 0
    refused = subprocess.run([str(BIN), "serve", "--model", str(packed), "--memory-budget", str(budget), "--parallel", "2"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "use --parallel 1" in refused.stderr, refused.stderr


CURL_CASES = [
    # (what, body, status, param)
    ("malformed JSON", b'{"messages": [', 400, None),
    ("wrong type", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}', 400, "max_tokens"),
    ("unknown role", b'{"messages": [{"role": "robot", "content": "hi"}]}', 400, "messages[0].role"),
    ("bad value", b'{"messages": [{"role": "user", "content": "hi"}], "top_p": -1}', 400, "top_p"),
    ("unsupported feature", b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n"),
    ("over-long prompt", json.dumps({"messages": [{"role": "user", "content": "word " * 2000}]}).encode(), 400, "messages"),
    ("oversized body", b'{"prompt": "' + b"x" * (3 << 20) + b'"}', 413, None),
]


def curl(url: str, data: bytes | None = None, method: str = "POST") -> tuple[int, dict, str]:
    args = ["curl", "-s", "-i", "-X", method, url, "-H", "Content-Type: application/json"]
    if data is not None:
        args += ["--data-binary", "@-"]
    out = subprocess.run(args, input=data, capture_output=True, check=True).stdout.decode(errors="replace")
    head, _, body = out.partition("\r\n\r\n")
    status = int(head.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in head.split("\r\n")[1:])}
    return status, headers, body


@pytest.mark.parametrize("what,body,status,param", CURL_CASES, ids=[c[0] for c in CURL_CASES])
def test_curl_bad_requests(server, what, body, status, param):
    code, headers, text = curl(server.url + "/v1/chat/completions", body)
    assert code == status, text
    assert headers["content-type"] == "application/json"
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    assert curl(server.url + "/health", method="GET")[0] == 200


def test_curl_unknown_route(server):
    code, _, text = curl(server.url + "/v1/embeddings", b"{}")
    assert code == 404 and "/v1/embeddings" in json.loads(text)["error"]["message"]


def test_queue_full_is_503_with_retry_after():
    s = Server("--parallel", "1", "--queue", "1", "--context", "512")
    try:
        long = {"prompt": "Count: 1, 2, 3,", "max_tokens": 300, "temperature": 0}
        def health() -> dict:
            return json.loads(curl(s.url + "/health", method="GET")[2])

        def wait_for(what: str, ready) -> None:
            deadline = time.time() + 30
            while not ready(health()):
                assert time.time() < deadline, f"never {what}: {health()}"
                time.sleep(0.02)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            busy = pool.submit(stream, s.url + "/v1/completions", long)
            wait_for("running", lambda h: h["running"] == 1)
            waiting = pool.submit(post, s.url + "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
            wait_for("queued", lambda h: h["waiting"] == 1)
            code, headers, text = curl(s.url + "/v1/completions", b'{"prompt": "Hi", "max_tokens": 2}')
            assert code == 503
            assert headers["retry-after"] == "1"
            assert json.loads(text)["error"]["code"] == "server_busy"
            assert busy.result()[-1] == "[DONE]"
            assert waiting.result()[0] == 200
    finally:
        assert s.stop() == 0


def disconnect_midway(port: int, body: dict) -> None:
    """Starts a streaming request, reads its first bytes and hangs up."""
    data = json.dumps({**body, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        got = b""
        while b"data: " not in got:
            chunk = sock.recv(4096)
            assert chunk, "connection closed before the first event"
            got += chunk


def test_load_16_clients_same_greedy_text_bounded_rss(server):
    prompts = ["The capital of France is", "Water boils at", "def add(a, b):", "The first three planets are",
               "Once upon a time", "The opposite of hot is", "1, 1, 2, 3, 5,", "A haiku about the sea:"]
    # What each prompt gets alone (the server idle, one request at a time).
    alone = {}
    for i, p in enumerate(prompts):
        code, _, o = post(server.url + "/v1/completions", {"prompt": p, "max_tokens": 12 + i, "temperature": 0})
        assert code == 200
        alone[p] = o["choices"][0]["text"]
    rss_before = server.rss_kib()
    failures: list[str] = []

    def client(c: int) -> None:
        for r in range(8):
            i = (c + r) % len(prompts)
            body = {"prompt": prompts[i], "max_tokens": 12 + i, "temperature": 0}
            kind = (c * 8 + r) % 4
            if kind == 0:
                code, _, o = post(server.url + "/v1/completions", body)
                if code != 200 or o["choices"][0]["text"] != alone[prompts[i]]:
                    failures.append(f"plain {code} {o}")
            elif kind == 1:
                events = stream(server.url + "/v1/completions", body)
                text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
                if events[-1] != "[DONE]" or text != alone[prompts[i]]:
                    failures.append(f"stream {text!r}")
            elif kind == 2:
                disconnect_midway(server.port, {**body, "max_tokens": 200})
            else:
                code, _, o = post(server.url + "/v1/completions", {"prompt": prompts[i], "temperature": "warm"})
                if code != 400 or o["error"]["param"] != "temperature":
                    failures.append(f"bad request {code} {o}")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(client, c) for c in range(16)]:
            f.result()
    assert not failures, failures[:5]
    # Disconnected requests were cancelled: nothing is left running once the clients are done.
    deadline = time.time() + 20
    while True:
        health = json.loads(curl(server.url + "/health", method="GET")[2])
        if health["running"] == 0 and health["waiting"] == 0:
            break
        assert time.time() < deadline, f"requests still running after every client left: {health}"
        time.sleep(0.1)
    grown = server.rss_kib() - rss_before
    assert grown < 64 * 1024, f"RSS grew by {grown} KiB under load"


def test_keep_alive_connection_does_not_grow_per_request(server):
    """One keep-alive connection (as OpenAI's client pools them) serving thousands of completions: each request used
    to leave a close callback holding its event stream until the connection closed, ~0.5 KB per request."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    body = json.dumps({"prompt": "Hi", "max_tokens": 1, "temperature": 0}).encode()

    def complete() -> None:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["usage"]["completion_tokens"] == 1

    for _ in range(500):
        complete()
    rss_before = server.rss_kib()
    for _ in range(8000):
        complete()
    grown = server.rss_kib() - rss_before
    conn.close()
    assert grown < 1024, f"RSS grew by {grown} KiB over 8000 requests on one connection"


def test_sigterm_drains_in_flight_requests():
    s = Server("--parallel", "2", "--context", "512")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        inflight = pool.submit(stream, s.url + "/v1/completions",
                               {"prompt": "Count: 1, 2, 3,", "max_tokens": 120, "temperature": 0})
        deadline = time.time() + 30
        while json.loads(curl(s.url + "/health", method="GET")[2])["running"] < 1:
            assert time.time() < deadline
            time.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        events = inflight.result(timeout=120)
    assert events[-1] == "[DONE]"
    usage_free = [json.loads(e) for e in events[:-1]]
    assert usage_free[-1]["choices"][0]["finish_reason"] == "length"
    assert s.proc.wait(timeout=60) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s.port), timeout=2).close()
