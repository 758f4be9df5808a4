#!/usr/bin/env python3
"""`dsinfer bench` on a tiny shape (CPU, random weights): every JSON record carries the fields results from
different runs are compared by (the CUDA issue's list), with figures that are positive and consistent with each
other, and the batched prefill matches the one-at-a-time one (--check-batching --batching-tol)."""
import glob
import json
import subprocess
import sys
import tempfile

REQUIRED = ["date", "gpu", "commit", "shape", "batch", "context", "decode_tok_s", "prefill_tok_s",
            "roofline_decode_tok_s", "copy_GBps", "peer_decode_tok_s"]


def main():
    dsinfer, shape = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([dsinfer, "bench", "--shape", shape, "--layers", "0", "--batch", "1", "2", "--context",
                              "16", "--decode-steps", "2", "--prefill", "8", "--prefill-batch", "1", "2",
                              "--check-batching", "--batching-tol", "1e-5", "--commit", "abc1234", "--out", out],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            sys.exit(f"bench failed ({run.returncode}):\n{run.stderr[-2000:]}")
        files = glob.glob(f"{out}/cpu-*.json")
        if len(files) != 1:
            sys.exit(f"expected one results file, found {files}")
        rows = json.load(open(files[0]))
    decode = [r for r in rows if r["decode_tok_s"] is not None]
    prefill = [r for r in rows if r["prefill_tok_s"] is not None]
    problems = []
    for r in rows:
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            problems.append(f"record {r} lacks {missing}")
        if r.get("commit") != "abc1234":
            problems.append(f"commit {r.get('commit')!r}")
    if sorted((r["batch"], r["context"]) for r in decode) != [(1, 16), (2, 16)]:
        problems.append(f"decode rows {[(r['batch'], r['context']) for r in decode]}")
    if sorted(r["prefill_batch"] for r in prefill) != [1, 2]:
        problems.append(f"prefill rows {[r['prefill_batch'] for r in prefill]}")
    for r in decode:
        if not (r["decode_tok_s"] > 0 and r["roofline_decode_tok_s"] > 0 and r["bytes_per_decode_step"] > 0):
            problems.append(f"decode figures {r}")
        step_us = r["batch"] / r["decode_tok_s"] * 1e6
        if abs(r["decode_us_per_layer"] * r["layers"] - step_us) > 1e-6 * step_us:
            problems.append(f"decode_us_per_layer {r['decode_us_per_layer']} against a step of {step_us} us")
        if abs(r["roofline_ratio"] - r["decode_tok_s"] / r["roofline_decode_tok_s"]) > 1e-9:
            problems.append(f"roofline_ratio {r}")
    for r in prefill:
        step_us = r["prefill_batch"] * r["prefill_tokens"] / r["prefill_tok_s"] * 1e6
        if not (r["prefill_tok_s"] > 0 and abs(r["prefill_us_per_layer"] * r["layers"] - step_us) <= 1e-6 * step_us):
            problems.append(f"prefill figures {r}")
    if problems:
        sys.exit("\n".join(problems))
    print(f"PASS bench JSON: {len(decode)} decode and {len(prefill)} prefill records")


if __name__ == "__main__":
    main()
