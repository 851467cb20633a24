"""One training step of the Fashion-MNIST student (ConvNet 16/32/64 x1, batch 128, SGD with
momentum) in PyTorch on one thread: the floor under `distill train`'s student runs (issue 20).
Run it with glibc told to keep freed memory, as distill does, or the timings wander by 3-7x:

  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_TOP_PAD_=268435456 \
      /usr/bin/python3 bench/experiments/student_step.py [--variants]

--variants times the channels-last step with bfloat16 autocast and at batches of 256 and 512
(per 128 images): can precision or batch size buy the 2.7x the three-seed time goal needs?
"""
import sys
import time

import torch
import torch.nn as nn


def unit(cin, cout, k=3):
    """ConvBN-ReLU, as distill's ConvNet units (k x k, no bias)."""
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def student_body():
    """The student's three stages (ConvNet 16/32/64, one unit per stage), before pooling."""
    return nn.Sequential(*unit(3, 16), nn.MaxPool2d(2), *unit(16, 32), nn.MaxPool2d(2), *unit(32, 64))


def step_ms(channels_last, batch=128, steps=40, bf16=False):
    torch.manual_seed(0)
    net = nn.Sequential(student_body(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch, 3, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        x, net = x.contiguous(memory_format=torch.channels_last), net.to(memory_format=torch.channels_last)
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps * 1000


# Multiply-adds of the three convolutions per image (forward); backward is about twice that,
# less the first convolution's input gradient.
MACS = [28 * 28 * 16 * 3 * 9, 14 * 14 * 32 * 16 * 9, 7 * 7 * 64 * 32 * 9]

if __name__ == "__main__":
    torch.set_num_threads(1)
    flop = (3 * 2 * sum(MACS) - 2 * MACS[0]) * 128
    if "--variants" in sys.argv:
        for rounds in range(2):
            for name, options in (("float32", {}), ("bfloat16 autocast", {"bf16": True}),
                                  ("batch 256", {"batch": 256, "steps": 20}), ("batch 512", {"batch": 512, "steps": 10})):
                ms = step_ms(True, **options) * 128 / options.get("batch", 128)
                print("%-17s %.1f ms per 128 images" % (name, ms))
        sys.exit()
    for rounds in range(2):
        for cl in (True, False):
            ms = step_ms(cl)
            print("channels-last %-5s %.1f ms a step, %.1f s an epoch of 60000, %.0f GFLOP/s" % (
                cl, ms, ms * 60000 / 128 / 1000, flop / ms / 1e6))
