"""Issue 20 probes in plain PyTorch, independent of distill: the Fashion-MNIST student
(ConvNet 16/32/64, one unit per stage, as examples/recipes/fashion_mnist/baseline.json) trained
5 epochs (batch 128, Momentum 0.9, weight decay 5e-4, cosine from 0.1, flips) by one method,
with the demo's teacher (output/fashion_mnist/teacher/best_model_student.pt) run online.

  MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_TOP_PAD_=268435456 \\
      /usr/bin/python3 bench/experiments/pytorch_student.py METHOD [SEED] [LR]

METHOD:
  baseline        cross-entropy only
  baseline_crop   the same with a random-resized crop of 85-100 % of the area, aspect 0.9-1.1
                  (the side clamped to the image, without the reference's area bound): does a
                  mild crop cost the student as much as in `distill train`?
  kd              CE + KL at T = 4 (weight T^2), the teacher's logits
  simkd           SimKD (Chen et al., CVPR 2022): the student's last stage goes through a
                  projector (1x1, 3x3, 1x1 convolutions, factor 2) to the teacher's 64 features,
                  learnt by MSE alone; its logits are the teacher's frozen classifier on them
  simkd_ce        SimKD's MSE plus CE on those logits
  projector_ce    the control for both: SimKD's student (the projector included) with a linear
                  head of its own, cross-entropy only, no teacher
  projector_kd    that student (projector and head of its own) with KD as above
  baseline_shift  cross-entropy with a random translation of up to 2 pixels each way (zero padding,
                  no zoom) after the flip
  kd_shift        KD as above on the same translated views (the teacher sees what the student sees)
  baseline_mixup  mixup (alpha 0.2) of flipped images, cross-entropy on the mixed labels
  kd_mixup        the same mixup, CE on the mixed labels plus KD on the mixed images (function
                  matching: the teacher labels the very image the student sees)
  simkd_plain_ce  SimKD without the projector (the student's own 64 features, same 24.3 K student):
                  MSE to the teacher's pooled features plus CE through the teacher's frozen classifier
  hint_kd         KD plus MSE between the last stage's 64 x 7 x 7 maps of student and teacher (the
                  widths agree, so no regressor)
  teacher_crop    no training: the teacher's test top-1 on whole images and on the mild crops
  crop_sides      no training: the shorter sides of 100000 crops drawn as distill's (the
                  reference's) RandCropImage draws them with the mild crop's settings
LR: the starting learning rate (default 0.1).
Results: docs/results-notes.md ("Settings chosen on held-out training images").
"""
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from student_step import student_body, unit  # the same student as the step-time floor

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = "/usr/share/datasets/fashion-mnist/"
METHOD = sys.argv[1]
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 0
LR = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
torch.set_num_threads(1)
torch.manual_seed(SEED)
np.random.seed(SEED)


def idx(name, header):
    return np.frombuffer(gzip.open(DATA + name).read(), np.uint8, offset=header)


x_train = torch.tensor(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)).float()
y_train = torch.tensor(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
x_test = torch.tensor(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)).float()
y_test = torch.tensor(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))


def normalise(x):  # the recipes' NormalizeImage, grey replicated to three channels
    return ((x / 255.0 - 0.286) / 0.353).expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)


def shift(x, pad=2):
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    for i, (dx, dy) in enumerate(torch.randint(0, 2 * pad + 1, (x.shape[0], 2)).tolist()):
        out[i] = padded[i, :, dy:dy + 28, dx:dx + 28]
    return out


def mild_crop(x):
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        aspect, side = math.sqrt(np.random.uniform(0.9, 1.1)), math.sqrt(784 * np.random.uniform(0.85, 1.0))
        w, h = min(28, int(side * aspect)), min(28, int(side / aspect))
        left, top = np.random.randint(0, 28 - w + 1), np.random.randint(0, 28 - h + 1)
        out[i] = F.interpolate(x[i:i + 1, :, top:top + h, left:left + w], size=(28, 28), mode="bilinear",
                               align_corners=False)[0]
    return out


# The teacher (ConvNet 16/32/64, two units per stage) from distill's checkpoint, frozen, eval mode.
weights = torch.load(os.path.join(SOURCE, "output/fashion_mnist/teacher/best_model_student.pt"))


def conv_bn_relu(x, prefix):
    x = F.conv2d(x, weights[prefix + ".conv.weight"], padding=1)
    return F.relu(F.batch_norm(x, weights[prefix + ".bn.running_mean"], weights[prefix + ".bn.running_var"],
                               weights[prefix + ".bn.weight"], weights[prefix + ".bn.bias"], False, 0.0, 1e-5))


def teacher_maps(x):
    for s in range(3):
        x = conv_bn_relu(conv_bn_relu(x, "stages.%d.0" % s), "stages.%d.1" % s)
        if s < 2:
            x = F.max_pool2d(x, 2)
    return x


def teacher_feature(x):
    return teacher_maps(x).mean((2, 3))


def teacher_classifier(feature):
    return F.linear(feature, weights["fc.weight"], weights["fc.bias"])


def kd_term(logits, teacher_feature):
    """KD at T = 4, weighted T^2 as the recipes' KL term."""
    return 16 * F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(teacher_classifier(teacher_feature) / 4, 1),
                         reduction="batchmean")


def top1(predict, images):
    with torch.no_grad():
        return sum((predict(normalise(images[b:b + 500])).argmax(1) == y_test[b:b + 500]).sum().item()
                   for b in range(0, 10000, 500)) / 100


if METHOD == "crop_sides":  # src/data.cpp random_crop, replayed: the area is capped so the crop fits
    sides = {}
    for _ in range(100000):
        aspect = math.sqrt(np.random.uniform(0.9, 1.1))
        bound = min(1 / aspect ** 2, aspect ** 2)
        side = math.sqrt(784 * np.random.uniform(min(0.85, bound), min(1.0, bound)))
        shorter = min(max(1, min(28, int(side * aspect))), max(1, min(28, int(side / aspect))))
        sides[shorter] = sides.get(shorter, 0) + 1
    print("shorter side of the crop: count of 100000:", dict(sorted(sides.items())))
    sys.exit()

if METHOD == "teacher_crop":
    predict = lambda x: teacher_classifier(teacher_feature(x))
    print("teacher: whole test images %.2f %%, mild crops %.2f %%" % (top1(predict, x_test), top1(predict, mild_crop(x_test))))
    sys.exit()


simkd = METHOD.startswith("simkd")
plain = METHOD == "simkd_plain_ce"
with_projector = (simkd and not plain) or METHOD.startswith("projector_")
body = student_body()
head = nn.Linear(64, 10)
projector = nn.Sequential(*unit(64, 32, 1), *unit(32, 32, 3), *unit(32, 64, 1))
for m in list(body.modules()) + list(projector.modules()):
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
body.to(memory_format=torch.channels_last)
projector.to(memory_format=torch.channels_last)


def student(x):
    """(logits, the feature SimKD matches or the last stage's maps)."""
    if plain:
        feature = body(x).mean((2, 3))
        return teacher_classifier(feature), feature
    if METHOD == "hint_kd":
        maps = body(x)
        return head(maps.mean((2, 3))), maps
    if with_projector:
        feature = projector(body(x)).mean((2, 3))
        return (teacher_classifier(feature) if simkd else head(feature)), feature
    return head(body(x).mean((2, 3))), None


trained = list(body.parameters()) + (list(projector.parameters()) if with_projector else []) + \
    ([] if simkd else list(head.parameters()))
epochs, batch = 5, 128
steps = epochs * math.ceil(60000 / batch)
optimiser = torch.optim.SGD(trained, lr=LR, momentum=0.9, weight_decay=5e-4)
schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
start = time.time()
for epoch in range(epochs):
    body.train()
    projector.train()
    order = torch.randperm(60000)
    for b in range(0, 60000, batch):
        i = order[b:b + batch]
        x, y = x_train[i], y_train[i]
        x = torch.where((torch.rand(len(i)) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
        if METHOD == "baseline_crop":
            x = mild_crop(x)
        elif METHOD.endswith("_shift"):
            x = shift(x)
        mix = None
        if METHOD.endswith("_mixup"):
            mix, partner = float(np.random.beta(0.2, 0.2)), torch.randperm(len(i))
            x = mix * x + (1 - mix) * x[partner]
        x = normalise(x)
        logits, feature = student(x)
        ce = F.cross_entropy(logits, y) if mix is None else \
            mix * F.cross_entropy(logits, y) + (1 - mix) * F.cross_entropy(logits, y[partner])
        if METHOD in ("baseline", "baseline_crop", "projector_ce", "baseline_shift", "baseline_mixup"):
            loss = ce
        else:
            with torch.no_grad():
                maps = teacher_maps(x)
                target = maps.mean((2, 3))
            if METHOD in ("kd", "projector_kd", "kd_shift", "kd_mixup"):
                loss = ce + kd_term(logits, target)
            elif METHOD == "hint_kd":
                loss = ce + kd_term(logits, target) + F.mse_loss(feature, maps)
            elif METHOD == "simkd":
                loss = F.mse_loss(feature, target)
            elif METHOD in ("simkd_ce", "simkd_plain_ce"):
                loss = F.mse_loss(feature, target) + ce
            else:
                sys.exit("unknown method " + METHOD)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
body.eval()
projector.eval()
print("%s seed %d lr %g: test top-1 %.2f %% (%.0f s)" % (METHOD, SEED, LR, top1(lambda x: student(x)[0], x_test),
                                                        time.time() - start))
