#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (--metrics gpu__time_duration.sum --csv) by kernel: total us, calls, share.
  ncu-summary.py FILE.csv [STEPS]   (STEPS: divide the totals by this many steps)"""
import csv
import sys
from collections import defaultdict

rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
head = rows[0]
name_i, metric_i, value_i, unit_i = (head.index(k) for k in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit"))
tot, calls = defaultdict(float), defaultdict(int)
for r in rows[1:]:
    if r[metric_i] != "gpu__time_duration.sum":
        continue
    v = float(r[value_i].replace(",", ""))
    unit = r[unit_i]
    v = v / 1000.0 if unit in ("nsecond", "ns") else v * 1000.0 if unit in ("msecond", "ms") else v
    name = r[name_i].replace("(anonymous namespace)::", "").replace("<unnamed>::", "").replace("void ", "")
    name = name.split("<")[0].split("(")[0].strip().split("::")[-1] or name[:60]
    tot[name] += v
    calls[name] += 1
all_us = sum(tot.values())
print(f"total {all_us / steps:.1f} us per step over {sum(calls.values()) / steps:.0f} kernels per step")
for name, us in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{us / steps:9.1f} us {calls[name] / steps:6.1f} calls {100 * us / all_us:5.1f}%  {name}")
