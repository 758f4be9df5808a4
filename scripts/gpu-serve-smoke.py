#!/usr/bin/env python3
"""End-to-end check of `dsinfer serve` on a running server (the GPU machine's `serve` step of gpu-run.sh).

Sends concurrent chat and completion requests of different prompt lengths (so the engine mixes prefill chunks
with decode steps), streaming and not, with ignore_eos so every request must produce exactly max_tokens; then
repeats one greedy request alone and checks it returns the same text as in the crowd (greedy decoding must not
depend on what else is in the batch beyond bf16 noise: reported, not failed), and reads /metrics.
Prints one JSON line per check and exits non-zero if a request failed or returned the wrong token count.
  gpu-serve-smoke.py PORT [CONCURRENCY]
"""
import json
import sys
import threading
import time
import urllib.error
import urllib.request

port = int(sys.argv[1])
conc = int(sys.argv[2]) if len(sys.argv) > 2 else 24
base = f"http://127.0.0.1:{port}"


def post(path, body, stream=False):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        raw = r.read().decode()
    if not stream:
        return json.loads(raw)
    chunks = [json.loads(l[6:]) for l in raw.splitlines() if l.startswith("data: ") and l != "data: [DONE]"]
    return chunks


def wait_ready():
    for _ in range(600):
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.5)
    return False


if not wait_ready():
    print(json.dumps({"check": "ready", "ok": False}))
    sys.exit(1)

with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
    model = json.loads(r.read())["data"][0]["id"]
words = "the quick brown fox jumps over the lazy dog while seven sailors sing".split()
results, errors = [None] * conc, []


def one(i):
    n_words = 3 + (i * 37) % 300
    prompt = " ".join(words[(i + j) % len(words)] for j in range(n_words))
    max_tokens = 8 + (i * 13) % 56
    stream = i % 3 == 0
    try:
        t0 = time.time()
        if i % 2 == 0:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0, "ignore_eos": True, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            out = post("/v1/chat/completions", body, stream)
        else:
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8, "top_p": 0.9,
                    "ignore_eos": True, "stream": stream, "seed": i}
            if stream:
                body["stream_options"] = {"include_usage": True}
            out = post("/v1/completions", body, stream)
        usage = (out[-1] if stream else out).get("usage") or {}
        got = usage.get("completion_tokens")
        results[i] = {"i": i, "prompt_words": n_words, "max_tokens": max_tokens, "stream": stream,
                      "completion_tokens": got, "s": round(time.time() - t0, 3),
                      "ok": got == max_tokens}
        if i == 0:
            results[i]["text"] = "".join(c["choices"][0]["delta"].get("content") or "" for c in out if c["choices"])
    except Exception as e:  # noqa: BLE001
        errors.append(f"request {i}: {e}")


t0 = time.time()
threads = [threading.Thread(target=one, args=(i,)) for i in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.time() - t0
bad = [r for r in results if r is None or not r["ok"]]
print(json.dumps({"check": "concurrent", "requests": conc, "failed": len(bad), "errors": errors[:5],
                  "wall_s": round(wall, 2),
                  "completion_tokens": sum((r or {}).get("completion_tokens") or 0 for r in results)}))
for r in results:
    if r is not None and not r["ok"]:
        print(json.dumps(r))

# The first request again, alone (greedy): same text as in the crowd?
alone = post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": " ".join(
    words[j % len(words)] for j in range(3))}], "max_tokens": 8, "temperature": 0, "ignore_eos": True,
    "stream": True}, stream=True)
text = "".join(c["choices"][0]["delta"].get("content") or "" for c in alone if c["choices"])
same = results[0] is not None and results[0].get("text") == text
print(json.dumps({"check": "greedy_alone_vs_batched", "same_text": same}))

# Bad input must get a clear error and the server must keep serving.
try:
    post("/v1/chat/completions", {"model": model, "messages": "not a list"})
    print(json.dumps({"check": "bad_request", "ok": False}))
    bad.append("bad request accepted")
except urllib.error.HTTPError as e:
    print(json.dumps({"check": "bad_request", "ok": e.code == 400, "code": e.code}))

with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
    metrics = r.read().decode()
lines = [l for l in metrics.splitlines() if l.startswith(("dsinfer:generation_tokens_total", "dsinfer:prompt_tokens",
                                                          "dsinfer:prefix_cache", "dsinfer:engine_requests_finished",
                                                          "dsinfer:kv_cache_capacity"))]
print(json.dumps({"check": "metrics", "lines": lines[:12]}))
sys.exit(1 if bad or errors else 0)
