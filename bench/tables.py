#!/usr/bin/python3
"""Markdown tables for BENCHMARKS.md from the files in bench/results/ (see its commands).

    /usr/bin/python3 bench/tables.py [bench/results]
"""
import json
import sys
from pathlib import Path


def compare_rows(path):
    """Rows of a compare_eager.py timing table: loss, shape, eager, distill, speed-up, floor, x floor."""
    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[1].count("x") == 1 and parts[2].isdigit():
            rows.append(parts)
    return rows


def timing_table(path):
    out = ["| loss | N x C | eager py | distill | distill vs eager | floor | distill / floor |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for loss, shape, eager, ours, speedup, floor, ratio in compare_rows(path):
        out.append(f"| {loss} | {shape} | {eager} | {ours} | {speedup} | {floor} | {ratio.rstrip('x')} |")
    return "\n".join(out)


def medians(path):
    data = json.loads(Path(path).read_text())
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
        out[b.get("run_name", b["name"]).replace("/real_time", "")] = b["real_time"] * unit
    return out


def us(v):
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def forward_table(path):
    t = medians(path)
    shapes = ["64/1000", "256/1000", "1024/1000", "1024/32000"]
    out = ["| loss | 64x1000 | 256x1000 | 1024x1000 | 1024x32000 |", "|---|---:|---:|---:|---:|"]
    for loss in ["kd", "dkd", "dml", "dist", "wsl", "skd", "ce_smoothed", "ce_torch"]:
        out.append(f"| {loss} | " + " | ".join(us(t[f"fwd/{loss}/{s}"]) for s in shapes) + " |")
    return "\n".join(out)


def ce_line(path):
    t = medians(path)
    shapes = [s for s in ["64/1000", "256/1000", "1024/1000", "1024/32000"] if f"fwd_bwd/ce_torch/{s}" in t]
    return ", ".join(f"{s.replace('/', 'x')}: distill {us(t[f'fwd_bwd/ce_smoothed/{s}'])}, "
                     f"torch {us(t[f'fwd_bwd/ce_torch/{s}'])}" for s in shapes)


def memory_table(path):
    grads = {"kd": 1, "dkd": 1, "ce_smoothed": 1, "wsl": 2, "skd": 2, "dml": 2, "dist": 2}
    out = ["| loss | gradients | eager py | distill | distill beyond the gradients |", "|---|---:|---:|---:|---:|"]
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in grads:
            loss, eager, ours = parts[0], float(parts[1]), float(parts[2])
            out.append(f"| {loss} | {grads[loss]} | {eager:.2f} | {ours:.2f} | {round(ours) - grads[loss]} |")
    return "\n".join(out)


def main():
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    print("## Forward + backward, default allocator\n\n" + timing_table(d / "compare_cpu.txt"))
    print("\n## Forward + backward, glibc keeps freed memory\n\n" + timing_table(d / "compare_cpu_keepmem.txt"))
    print("\nCE fwd+bwd, kept memory: " + ce_line(d / "loss_bench_cpu_keepmem.json"))
    print("CE fwd+bwd, default allocator: " + ce_line(d / "loss_bench_cpu.json"))
    print("\n## Forward only\n\n" + forward_table(d / "loss_bench_cpu.json"))
    t = medians(d / "loss_bench_cpu.json")
    print(f"\nfeatures: distance_l2 {us(t['fwd_bwd/distance_l2'])}, mgd {us(t['fwd_bwd/mgd'])}, "
          f"afd {us(t['fwd_bwd/afd'])}")
    print("\n## Peak memory\n\n" + memory_table(d / "memory_cpu.txt"))


if __name__ == "__main__":
    main()
