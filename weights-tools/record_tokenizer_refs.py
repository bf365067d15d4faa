#!/usr/bin/env python3
"""Record llama.cpp's tokenizer ids, end-of-generation sets and chat-template renderings as test data.

Why: PocketLM must produce llama.cpp's token ids exactly. This runs llama.cpp itself (llama-cpp-python 0.3.36
in the peer venv that bench_peer.ensure_llama_cpp() builds) on a set of hard strings for four vocabularies,
and llama.cpp's `llama_chat_apply_template` (plus jinja2 on the real templates) on a few conversations, and
writes what they produce to weights-tools/reference/tokenizer-llamacpp.json, which is committed; the Swift tests
(PreTokenizerVariantTests, GemmaTokenizerTests, ChatTemplateTests) compare against it and never run Python.

Vocabularies:
  smollm2-smollm     SmolLM2-135M-Instruct.Q4_1.gguf as shipped (pre-tokenizer smollm)
  smollm2-qwen2      .fixtures/smollm2-vocab-qwen2.gguf      (make_vocab_fixtures.py: SmolLM2's vocabulary, pre qwen2)
  smollm2-llama-bpe  .fixtures/smollm2-vocab-llama-bpe.gguf  (same, pre llama-bpe)
  gemma3-270m        gemma-3-270m-q4_k_m.gguf (SentencePiece, 262,144 pieces; fetched by fetch.py)

For each: every string's ids without BOS, with special parsing off ("ids") and on ("ids_special"), the ids
of the whole prompt as llama.cpp's tokenize(add_bos=True, special=True) gives it for the chat prompts
("prompts"), llama.cpp's add_bos, BOS id and its EOG set (llama_vocab_is_eog over the whole vocabulary).

Run: python3 weights-tools/record_tokenizer_refs.py  (after `make fixtures`; needs the venv, the models and
jinja2). The llama.cpp part runs in a child process under the venv's python; the Jinja part here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

try:
    import common  # gguf-py and numpy: the parent's tools; the child in the llama.cpp venv needs neither
except ImportError:
    if "--child" not in sys.argv:
        raise
    common = None

OUT_NAME = "tokenizer-llamacpp.json"
VENV_PYTHON = Path.home() / ".cache/pocketlm/llama-cpp-venv/bin/python"

# Strings chosen to hit every branch of the splitting rules and the SentencePiece merge/partition logic.
HARD_STRINGS = [
    "Hello, world!",
    "hello world",
    "1234567",
    "3.14159 and 1,000,000 and 2024-12-06",
    "x = 12345678901234567890;",
    "year 2024, 123456789, 000 and 1000000",
    " zyxwv zyxwvu zyx wv",
    "I'm sure you'll see they've done it; we'd, we're, it's, DON'T, WE'LL, I'M, 'S 'LL 'Ve",
    "'s'",
    "'",
    "naïve café résumé façade crème brûlée",
    "e\u0301 a\u0308 combining marks: n\u0303o\u0308",
    "हिन्दी में लिखा गया पाठ",
    "ภาษาไทย ไม่มีช่องว่าง",
    "Ελληνικά, русский, עברית, العربية",
    "日本語のテキストと中文文本。한국어 텍스트",
    "東京タワー３３３メートル",
    "emoji 😀 🎉 ❤️ 👍🏽 👩‍👩‍👧 🇫🇷 🦙",
    "  two leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e      f",
    "tabs\tbetween\t\twords\t",
    "line one\nline two\n\nline four\n\n\n\nend",
    "windows\r\nline\r\nbreaks\r\n",
    " \n \n  \n",
    "\n",
    " ",
    "   ",
    "mixed \t\n whitespace \u00a0nbsp \u3000ideographic \u2028separator",
    "punctuation!!! ??? ... --- ;;; ((())) [[]] {{}} <<>>",
    "...,,,!!!???",
    "a+b=c; x<y>z; 50% off $100 #tag @user ~tilde ^caret |pipe `tick`",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<html><body><table><tr><td>cell</td></tr></table></body></html>",
    "https://example.com/path?query=1&other=two#frag",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
    "CamelCaseIdentifier snake_case_identifier kebab-case-identifier",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ ａｎｄ １２３",
    "math: ∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷ π",
    "superscripts ² ³ ¹ fractions ½ ¼ roman Ⅻ circled ① ②",
    "control chars \u0001\u0002\u001b[0m bell\u0007",
    "new scripts: \U0001e4d0\U0001e4d1 \U00031350 \U0001fae8 \U00010d40",
    "<|im_start|>user\nHi<|im_end|>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>",
    "<unused0> <unused6241> <bos> <eos> <pad> <mask> <unk> </s> <s>",
    "text with <|endoftext|> in the middle",
    "<start_of_image> and [multimodal]",
    "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    "                                        forty spaces",
    "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\ttabs",
    "Ünïcödé ÀÉÎÕÜ àéîõü ßẞ ĳĲ ŉ ǅ",
    "zero\u200bwidth\u200cjoiner\u200dand\ufeffbom",
    "GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007\n\n Copyright (C) 2007 Free "
    "Software Foundation, Inc. <https://fsf.org/>\n Everyone is permitted to copy and distribute verbatim copies\n"
    " of this license document, but changing it is not allowed.",
]

# Conversations for the chat templates (llama.cpp's test-chat-template.cpp uses the first shape).
CONVERSATIONS = {
    "system-user-assistant-user": [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Who are you"},
    ],
    "user-assistant-user": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "whitespace-content": [
        {"role": "system", "content": "  Be brief.\n"},
        {"role": "user", "content": "\n  Hello  \n"},
        {"role": "assistant", "content": "   I am an assistant   "},
        {"role": "user", "content": "Another question\t"},
    ],
}

QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# Meta-Llama-3-8B-Instruct's template (also llama.cpp's test-chat-template.cpp "Llama-3" case).
LLAMA3_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                   "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
                   "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                   "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
                   "<|end_header_id|>\n\n' }}{% endif %}")

LLAMA2_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
                   "message['content'] + ' [/INST]' }}{% endif %}{% endfor %}")
PHI3_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' "
                 "+ message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == "
                 "'assistant') %}{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}")


def vocabularies(fixtures: Path, cache: Path) -> list[dict]:
    return [
        {"name": "smollm2-smollm", "path": str(cache / common.SMOLLM2_Q4_1_NAME), "file": common.SMOLLM2_Q4_1_NAME,
         "where": "cache"},
        {"name": "smollm2-qwen2", "path": str(fixtures / "smollm2-vocab-qwen2.gguf"),
         "file": "smollm2-vocab-qwen2.gguf", "where": "fixtures"},
        {"name": "smollm2-llama-bpe", "path": str(fixtures / "smollm2-vocab-llama-bpe.gguf"),
         "file": "smollm2-vocab-llama-bpe.gguf", "where": "fixtures"},
        {"name": "gemma3-270m", "path": str(cache / common.GEMMA3_NAME), "file": common.GEMMA3_NAME,
         "where": "cache"},
    ]


def chat_templates(smollm2_template: str) -> list[dict]:
    return [
        {"name": "smollm2", "template": smollm2_template, "family": "chatml"},
        {"name": "qwen2.5", "template": QWEN25_TEMPLATE, "family": "chatml"},
        {"name": "gemma3", "template": GEMMA3_TEMPLATE, "family": "gemma"},
        {"name": "llama3", "template": LLAMA3_TEMPLATE, "family": "llama3"},
        {"name": "builtin-chatml", "template": "chatml", "family": "chatml"},
        {"name": "builtin-gemma", "template": "gemma", "family": "gemma"},
        {"name": "builtin-llama3", "template": "llama3", "family": "llama3"},
        {"name": "llama2", "template": LLAMA2_TEMPLATE, "family": None},
        {"name": "phi3", "template": PHI3_TEMPLATE, "family": None},
    ]


# ------------------------------------------------------------------------------------------------------------
# The llama.cpp side (runs under the venv's python).
# ------------------------------------------------------------------------------------------------------------


def llama_child(job: dict) -> dict:
    import ctypes

    import llama_cpp
    from llama_cpp import Llama

    out: dict = {"llama_cpp_python": llama_cpp.__version__, "vocabularies": [], "chat": []}
    for v in job["vocabularies"]:
        llm = Llama(model_path=v["path"], vocab_only=True, verbose=False)
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        n = llama_cpp.llama_vocab_n_tokens(vocab)
        eog = [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)]
        cases = []
        for text in job["strings"]:
            b = text.encode("utf-8")
            cases.append({"text": text, "ids": llm.tokenize(b, add_bos=False, special=False),
                          "ids_special": llm.tokenize(b, add_bos=False, special=True)})
        prompts = [{"text": p, "ids": llm.tokenize(p.encode("utf-8"), add_bos=True, special=True)}
                   for p in job["prompts"].get(v["name"], [])]
        out["vocabularies"].append({
            "name": v["name"], "file": v["file"], "where": v["where"], "n_vocab": n,
            "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            "bos": llama_cpp.llama_vocab_bos(vocab), "eos": llama_cpp.llama_vocab_eos(vocab),
            "eog_ids": eog, "cases": cases, "prompts": prompts,
        })
        del llm
    for t in job["templates"]:
        for conv_name, conv in CONVERSATIONS.items():
            keep = []  # the message structs must outlive the call
            msgs = (llama_cpp.llama_chat_message * len(conv))()
            for i, m in enumerate(conv):
                role, content = m["role"].encode(), m["content"].encode()
                keep += [role, content]
                msgs[i].role, msgs[i].content = role, content
            buf = ctypes.create_string_buffer(1 << 16)
            rc = llama_cpp.llama_chat_apply_template(t["template"].encode(), msgs, len(conv), True, buf, len(buf))
            out["chat"].append({"template": t["name"], "conversation": conv_name,
                                "llama_cpp": buf.raw[:rc].decode("utf-8") if rc >= 0 else None})
    return out


# ------------------------------------------------------------------------------------------------------------
# The parent: builds the job, renders the real templates with jinja2, writes the JSON.
# ------------------------------------------------------------------------------------------------------------


def render_jinja(template: str, conv: list[dict], bos: str) -> str | None:
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=conv, add_generation_prompt=True, bos_token=bos,
                                                eos_token="")
    except jinja2.exceptions.TemplateError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parent.parent / ".fixtures")
    ap.add_argument("--python", type=Path, default=VENV_PYTHON, help="python of the llama-cpp-python venv")
    ap.add_argument("--out", type=Path, default=None, help=f"default: weights-tools/reference/{OUT_NAME}")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        json.dump(llama_child(json.load(sys.stdin)), sys.stdout, ensure_ascii=False)
        return 0
    args.out = args.out or common.REFERENCE_DIR / OUT_NAME

    cache = common.cache_dir()
    vocabs = vocabularies(args.fixtures, cache)
    for v in vocabs:
        if not Path(v["path"]).is_file():
            raise common.ToolError(f"missing {v['path']}: run `make fetch fixtures` first")
    smollm2_template = common.field_value(common.open_gguf(vocabs[0]["path"]), "tokenizer.chat_template")
    templates = chat_templates(smollm2_template)

    # Rendered chat prompts whose ids are recorded too (end to end: template text -> llama.cpp ids).
    conv = CONVERSATIONS["system-user-assistant-user"]
    prompts = {
        "smollm2-smollm": [render_jinja(smollm2_template, conv, "")],
        "smollm2-qwen2": [render_jinja(QWEN25_TEMPLATE, CONVERSATIONS["user-assistant-user"], "")],
        "smollm2-llama-bpe": [render_jinja(LLAMA3_TEMPLATE, conv, "")],
        "gemma3-270m": [render_jinja(GEMMA3_TEMPLATE, conv, ""),
                        render_jinja(GEMMA3_TEMPLATE, CONVERSATIONS["user-assistant-user"], "")],
    }
    job = {"vocabularies": vocabs, "strings": HARD_STRINGS, "prompts": prompts, "templates": templates}
    if not args.python.is_file():
        raise common.ToolError(f"no llama-cpp-python venv at {args.python}: run bench_peer.ensure_llama_cpp()")
    proc = subprocess.run([str(args.python), __file__, "--child"], input=json.dumps(job), capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)})
    if proc.returncode != 0:
        raise common.ToolError(f"llama.cpp child failed:\n{proc.stderr[-4000:]}")
    got = json.loads(proc.stdout)

    chat = []
    for t in templates:
        for conv_name, conv in CONVERSATIONS.items():
            rec = next(c for c in got["chat"] if c["template"] == t["name"] and c["conversation"] == conv_name)
            is_name = t["template"] in ("chatml", "gemma", "llama3")
            chat.append({
                "template_name": t["name"], "template": t["template"], "family": t["family"],
                "conversation": conv_name, "messages": conv, "llama_cpp": rec["llama_cpp"],
                # The real template rendered by jinja2 with an empty bos_token (llama.cpp's legacy templates add
                # BOS through the tokenizer instead); null for built-in names and templates jinja2 refuses.
                "jinja": None if is_name else render_jinja(t["template"], conv, ""),
            })

    for v in got["vocabularies"]:
        for v0 in vocabs:
            if v0["name"] == v["name"]:
                v["pre"] = common.field_value(common.open_gguf(v0["path"]), "tokenizer.ggml.pre")

    doc = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "llama_cpp_python": got["llama_cpp_python"],
        "generator": "weights-tools/record_tokenizer_refs.py",
        "schema": {
            "vocabularies[]": "name, file (in the model cache or .fixtures, per 'where'), pre, n_vocab, add_bos, "
                              "bos, eos, eog_ids (llama_vocab_is_eog), cases[] {text, ids (no BOS, special off), "
                              "ids_special (no BOS, special on)}, prompts[] {text, ids (BOS added, special on)}",
            "chat[]": "template_name, template, family (chatml/gemma/llama3, null = PocketLM must refuse), "
                      "conversation, messages, llama_cpp (llama_chat_apply_template with add_ass, null when it "
                      "fails), jinja (the real template rendered by jinja2, bos_token empty)",
        },
        "vocabularies": got["vocabularies"],
        "chat": chat,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(main())
    common.run_cli(main)
