"""The training step of bench/train_step.cpp written as common PyTorch code: torchvision's
ResNets (in-place ReLU and residual additions), or the Fashion-MNIST demo's ConvNet as nn
modules; the frozen teacher in eval mode under torch.no_grad(); CE + KD (T = 4) as
F.kl_div(log_softmax, softmax, reduction="batchmean") * T^2; SGD with momentum.

  python3 bench/train_step.py --net resnet|convnet [--kd] [--batch 32] [--size 224] [--steps 10]
                              [--warmup 2] [--threads 1] [--channels-last]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def convnet(widths, depth, classes=10):
    """ConvNet of distill::models::ConvNet: per stage `depth` conv3x3-BN-ReLU units, a 2x2
    max-pool between stages, global average pool, linear head."""
    layers, cin = [], 3
    for s, w in enumerate(widths):
        for _ in range(depth):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        if s + 1 < len(widths):
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="resnet", choices=["resnet", "convnet"])
    p.add_argument("--kd", action="store_true")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.net == "resnet":
        import torchvision
        classes, size = 1000, a.size or 224
        student = torchvision.models.resnet18()
        teacher = torchvision.models.resnet34() if a.kd else None
    else:
        classes, size = 10, a.size or 28
        student = convnet([16, 32, 64], 1)
        teacher = convnet([16, 32, 64], 2) if a.kd else None
    images = torch.randn(a.batch, 3, size, size)
    labels = torch.randint(0, classes, (a.batch,))
    if a.channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last) if teacher is not None else None
        images = images.contiguous(memory_format=torch.channels_last)
    student.train()
    if teacher is not None:
        teacher.eval()
        for q in teacher.parameters():
            q.requires_grad_(False)
    sgd = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    t = 4.0
    wall, cpu = [], []
    for s in range(a.warmup + a.steps):
        t0, c0 = time.perf_counter(), time.thread_time()
        sgd.zero_grad()
        logits = student(images)
        loss = F.cross_entropy(logits, labels)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(images)
            loss = loss + F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits / t, 1),
                                   reduction="batchmean") * t * t
        loss.backward()
        sgd.step()
        c1, t1 = time.thread_time(), time.perf_counter()
        if s >= a.warmup:
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
    print("pytorch net %s %s batch %d size %d threads %d%s step_s %.6g cpu_s %.6g img_s %.6g" % (
        a.net, "kd" if a.kd else "alone", a.batch, size, a.threads, " channels_last" if a.channels_last else "",
        statistics.median(wall), statistics.median(cpu), a.batch / statistics.median(wall)))


if __name__ == "__main__":
    main()
