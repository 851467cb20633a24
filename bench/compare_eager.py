#!/usr/bin/python3
"""Eager PyTorch against distill's fused losses, on the same ATen (Debian's python3-torch).

Times forward+backward of each logit loss written the way the common PyTorch implementations
write it (F.kl_div with batchmean; DKD with one-hot masks and the -1000 trick as mdistiller;
DIST with per-row/column Pearson as the DIST authors; ...), reads loss_bench's JSON results for
the same shapes, and prints the ratios. With --memory it also runs one forward+backward per
loss at 1024 x 32000 in a fresh process (both here and through `loss_bench --peak-memory`) and
reports the peak resident memory beyond the inputs, in units of one [N, C] float32 tensor.

    build/bench/loss_bench --benchmark_format=json --benchmark_out=bench/results/loss_bench.json
    /usr/bin/python3 bench/compare_eager.py bench/results/loss_bench.json --memory build/bench/loss_bench

One intra-op thread on both sides unless --threads says otherwise. On a GPU machine
(bench/gpu.sh) `--device cuda --compile` compares with eager and torch.compile'd CUDA versions.
"""
import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def kd(s, t, y):
    T = 4.0
    return F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1).detach(), reduction="batchmean") * T * T


def dml(s, t, y, eps=1e-12):
    p, q = F.softmax(s, dim=1), F.softmax(t, dim=1)
    return (q * torch.log((q + eps) / (p + eps)) + p * torch.log((p + eps) / (q + eps))).sum(1).mean() / 2


def dkd(s, t, y, T=1.0, alpha=1.0, beta=1.0):  # as mdistiller writes it (no warm-up)
    t = t.detach()
    gt = torch.zeros_like(s).scatter_(1, y.unsqueeze(1), 1).bool()
    other = torch.ones_like(s).scatter_(1, y.unsqueeze(1), 0).bool()
    ps, pt = F.softmax(s / T, dim=1), F.softmax(t / T, dim=1)
    cat = lambda p: torch.cat([(p * gt).sum(1, keepdims=True), (p * other).sum(1, keepdims=True)], dim=1)
    bs, bt = cat(ps), cat(pt)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T ** 2 / s.shape[0]
    nckd = F.kl_div(F.log_softmax(s / T - 1000.0 * gt, dim=1), F.softmax(t / T - 1000.0 * gt, dim=1),
                    reduction="sum") * T ** 2 / s.shape[0]
    return alpha * tckd + beta * nckd


def pearson(a, b, eps=1e-8):
    return F.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), eps=eps)


def dist(s, t, y, beta=1.0, gamma=1.0):  # as the DIST authors write it
    ys, yt = s.softmax(dim=1), t.softmax(dim=1)
    inter = 1 - pearson(ys, yt).mean()
    intra = 1 - pearson(ys.transpose(0, 1), yt.transpose(0, 1)).mean()
    return beta * inter + gamma * intra


def wsl(s, t, y, T=2.0):
    ce_s = F.cross_entropy(s.detach(), y, reduction="none")
    ce_t = F.cross_entropy(t.detach(), y, reduction="none")
    w = 1 - torch.exp(-torch.clamp(ce_s / (ce_t + 1e-7), min=0))
    kd_n = -(F.softmax(t / T, dim=1) * F.log_softmax(s / T, dim=1)).sum(1)
    return T * T * (kd_n * w).mean()


def skd(s, t, y, T=1.0, m=2.0, alpha=0.9):
    norm = lambda z: m * F.layer_norm(z, z.shape[1:], eps=1e-7)
    s2, t2 = norm(s), norm(t)
    kd_n = -(F.softmax(t2 / T, dim=1) * F.log_softmax(s2 / T, dim=1)).sum(1).mean() * T * T
    return alpha * kd_n + (1 - alpha) * F.cross_entropy(s2, y)


def ce_smoothed(s, t, y):
    return F.cross_entropy(s, y, label_smoothing=0.1)


def ce_soft(s, t, y):  # the SSLD-style soft target: the teacher's softmax (PyTorch's probability targets)
    return F.cross_entropy(s, F.softmax(t.detach(), dim=1))


LOSSES = {"kd": kd, "dml": dml, "dkd": dkd, "dist": dist, "wsl": wsl, "skd": skd, "ce_smoothed": ce_smoothed,
          "ce_soft": ce_soft}
# Whether the teacher gets a gradient (as in distill: KD, DKD and CE keep it out).
TEACHER_GRAD = {"kd": False, "dml": True, "dkd": False, "dist": True, "wsl": True, "skd": True, "ce_smoothed": False,
                "ce_soft": False}
SHAPES = [(64, 1000), (256, 1000), (1024, 1000), (1024, 32000)]


def inputs(n, c, loss, device="cpu"):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(n, c, generator=g).mul_(3).to(device).requires_grad_()
    t = torch.randn(n, c, generator=g).mul_(3).to(device).requires_grad_(TEACHER_GRAD[loss])
    y = torch.randint(0, c, (n,), generator=g).to(device)
    return s, t, y


def time_us(fn, device, min_seconds=0.5):
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    runs, start = 0, time.perf_counter()
    while True:
        fn()
        sync()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 3:
            return elapsed / runs * 1e6


def fwd_bwd(fn, s, t, y):
    def run():
        s.grad = None
        t.grad = None
        fn(s, t, y).backward()
    return run


def cpp_times(path, device):
    """{(loss or "floor", n, c): microseconds} for one device from loss_bench's JSON."""
    data = json.load(open(path))
    out = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue  # with --benchmark_repetitions, the median stands for the case
        parts = b.get("run_name", b["name"]).split("/")  # [cuda/]fwd_bwd/kd/256/1000[/real_time]
        on_cuda = parts[0] == "cuda"
        if on_cuda != (device == "cuda"):
            continue
        parts = [p for p in parts[1 if on_cuda else 0:] if p != "real_time"]
        if parts[0] == "fwd_bwd" and len(parts) == 4:
            key = (parts[1], int(parts[2]), int(parts[3]))
        elif parts[0] == "floor_two_softmax" and len(parts) == 3:
            key = ("floor", int(parts[1]), int(parts[2]))
        else:
            continue
        unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
        out[key] = b["real_time"] * unit
    return out


def peak_python(loss, n, c):
    """Peak RSS beyond the inputs of one forward+backward, in [N, C] float tensors."""
    code = f"""
import torch, sys
sys.path.insert(0, {repr(sys.path[0])})
import compare_eager as m
torch.set_num_threads(1)
s, t, y = m.inputs({n}, {c}, {repr(loss)})
def status_kb(field):  # VmRSS: resident now; VmHWM: peak of this process image (ru_maxrss would
    # carry the parent's peak across exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
base = status_kb("VmRSS")
m.LOSSES[{repr(loss)}](s, t, y).backward()
print((status_kb("VmHWM") - base) * 1024 / ({n} * {c} * 4))
"""
    return float(subprocess.check_output([sys.executable, "-c", code]).decode().strip())


def peak_cpp(binary, loss):
    out = subprocess.check_output([binary, f"--peak-memory={loss}"]).decode()
    return float(out.strip().split()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cpp_json", nargs="?", help="loss_bench JSON output (without it: only --memory)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd versions")
    parser.add_argument("--shapes", default=",".join(f"{n}x{c}" for n, c in SHAPES),
                        help="comma-separated NxC list (default: all four)")
    parser.add_argument("--compile-shapes", help="NxC list for torch.compile (default: --shapes)")
    parser.add_argument("--memory", metavar="LOSS_BENCH", help="also measure peak memory at 1024x32000 (CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compile and not hasattr(torch, "compile"):
        print(f"torch {torch.__version__} has no torch.compile: timing eager only")
        args.compile = False
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    compile_shapes = ([tuple(int(v) for v in s.split("x")) for s in args.compile_shapes.split(",")]
                      if args.compile_shapes else shapes)
    cpp = cpp_times(args.cpp_json, args.device) if args.cpp_json else {}
    print(f"torch {torch.__version__} on {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else f", {torch.get_num_threads()} thread(s)")
          + "; forward+backward in microseconds; floor = two softmax passes (loss_bench)\n")
    header = f"{'loss':<12} {'N x C':>11} {'eager py':>9}"
    if args.compile:
        header += f" {'compiled':>9}"
    header += f" {'distill':>9} {'vs eager':>8}"
    if args.compile:
        header += f" {'vs comp':>8}"
    if cpp:
        print(header + f" {'floor':>8} {'x floor':>8}")
    for loss in LOSSES if cpp else []:
        compiled = torch.compile(LOSSES[loss]) if args.compile else None
        for n, c in shapes:
            ours, floor = cpp.get((loss, n, c)), cpp.get(("floor", n, c))
            if ours is None:
                continue
            s, t, y = inputs(n, c, loss, args.device)
            eager = time_us(fwd_bwd(LOSSES[loss], s, t, y), args.device)
            line = f"{loss:<12} {f'{n}x{c}':>11} {eager:>9.0f}"
            comp = None
            if compiled is not None and (n, c) in compile_shapes:
                comp = time_us(fwd_bwd(compiled, s, t, y), args.device)
                line += f" {comp:>9.0f}"
            elif compiled is not None:
                line += f" {'-':>9}"
            line += f" {ours:>9.0f} {eager / ours:>7.1f}x"
            if compiled is not None:
                line += f" {comp / ours:>7.1f}x" if comp is not None else f" {'-':>8}"
            print(line + f" {floor:>8.0f} {ours / floor:>7.2f}x", flush=True)
    if args.memory:
        print("\npeak memory of one forward+backward at 1024x32000 beyond the inputs, in [N, C] float32 tensors "
              "(the gradients included)")
        print(f"{'loss':<12} {'eager py':>10} {'distill':>10}")
        for loss in LOSSES:
            print(f"{loss:<12} {peak_python(loss, 1024, 32000):>10.2f} {peak_cpp(args.memory, loss):>10.2f}", flush=True)


if __name__ == "__main__":
    main()
