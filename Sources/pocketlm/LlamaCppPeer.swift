import Foundation

/// llama.cpp as bench-flash's peer: the project's llama-cpp-python venv (weights-tools/bench_peer.py builds it) runs
/// the ordinary (unpacked) file with mmap, as llama.cpp does by default, greedy from the same prompt ids, and prints
/// one JSON line: decode tok/s, the greedy ids, the storage bytes its decode read, its peak RSS.
enum LlamaCppPeer {
    /// The venv's python: $POCKETLM_CACHE (default ~/.cache/pocketlm)/llama-cpp-venv/bin/python.
    static var defaultPython: String {
        let cache = ProcessInfo.processInfo.environment["POCKETLM_CACHE"]
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/pocketlm").path
        return "\(cache)/llama-cpp-venv/bin/python"
    }

    /// The worker: logits of the last position only (logits_all off; the batch asks for the last row), read from
    /// the context, so nothing per position is allocated; /proc/self/io around the decode loop only.
    static let script = #"""
    import ctypes, json, resource, sys, time
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    a = json.loads(sys.argv[1])

    def storage_read():
        try:
            for line in open("/proc/self/io"):
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def peak_rss():
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    t0 = time.perf_counter()
    llm = Llama(model_path=a["model"], n_ctx=a["n_ctx"], n_batch=64, n_ubatch=64, n_threads=a["threads"],
                n_threads_batch=a["threads"], use_mmap=True, logits_all=False, flash_attn=False, verbose=False)
    load_ms = (time.perf_counter() - t0) * 1000
    vocab = llm.n_vocab()

    def step(ids):
        llm.eval(ids)
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(vocab,))
        return int(np.argmax(row))

    nxt = step(a["prompt_tokens"])
    out = [nxt]
    r0, t1 = storage_read(), time.perf_counter()
    for _ in range(a["gen_tokens"] - 1):
        nxt = step([nxt])
        out.append(nxt)
    seconds = time.perf_counter() - t1
    steps = max(1, a["gen_tokens"] - 1)
    print(json.dumps({"tokens": out, "tokens_per_second": steps / seconds, "ms_per_token": seconds * 1000 / steps,
                      "storage_read_bytes_per_token": (storage_read() - r0) / steps,
                      "peak_rss_bytes": peak_rss(), "load_ms": load_ms}))
    """#

    struct Result: Decodable {
        var tokens: [Int]
        var tokens_per_second: Double
        var ms_per_token: Double
        var storage_read_bytes_per_token: Double
        var peak_rss_bytes: Int
        var load_ms: Double
    }

    /// The python arguments for one run.
    static func arguments(model: String, promptTokens: [Int], genTokens: Int, contextLength: Int, threads: Int) throws -> [String] {
        struct Args: Encodable { let model: String; let prompt_tokens: [Int]; let gen_tokens: Int; let n_ctx: Int; let threads: Int }
        let json = try JSONEncoder().encode(Args(model: model, prompt_tokens: promptTokens, gen_tokens: genTokens,
                                                 n_ctx: contextLength, threads: threads))
        return ["-c", script, String(decoding: json, as: UTF8.self)]
    }
}
