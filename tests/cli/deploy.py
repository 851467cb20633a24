#!/usr/bin/python3
"""Deployment end to end (run by tests/cli/run.cmake after it trained the KD student):

- `distill export` writes a TorchScript file that Python's torch.jit.load runs without distill,
  whose state_dict() equals the state dict `distill export --format state_dict` writes, and
  which carries the preprocessing, top-k and class names;
- examples/predict (libtorch and libjpeg-turbo only) prints the same top-k as `distill infer`,
  and `distill infer` given the TorchScript file prints the same as given the checkpoint;
- bad cases are one-line errors: a damaged or truncated export given to infer, an export of a
  model name the recipe lacks, an unreadable image among good ones (the rest still printed).

    deploy.py --distill D --predict P --recipe R --weights W --images DIR --work DIR
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import torch


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def run(command, expect_rc=0):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    print("$ " + " ".join(command) + "\n" + done.stdout + done.stderr, flush=True)
    if done.returncode != expect_rc:
        fail("exit status %d, expected %d: %s" % (done.returncode, expect_rc, " ".join(command)))
    return done


def results(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def same_predictions(a, b, what):
    if len(a) != len(b):
        fail("%s: %d results against %d" % (what, len(a), len(b)))
    for x, y in zip(a, b):
        if os.path.basename(x["file_name"]) != os.path.basename(y["file_name"]):
            fail("%s: files differ: %s, %s" % (what, x["file_name"], y["file_name"]))
        if x["class_ids"] != y["class_ids"] or x["label_names"] != y["label_names"]:
            fail("%s: %s: top-k %s %s against %s %s" % (what, x["file_name"], x["class_ids"], x["label_names"],
                                                      y["class_ids"], y["label_names"]))
        if max(abs(s - t) for s, t in zip(x["scores"], y["scores"])) > 2e-5:
            fail("%s: %s: scores %s against %s" % (what, x["file_name"], x["scores"], y["scores"]))


def main():
    p = argparse.ArgumentParser()
    for name in ("distill", "predict", "recipe", "weights", "images", "work"):
        p.add_argument("--" + name, required=True)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    common = ["-c", a.recipe, "-o", "Global.pretrained_model=" + a.weights]
    exported = os.path.join(a.work, "inference.pt")
    state_dict = os.path.join(a.work, "student.pt")
    run([a.distill, "export"] + common + ["--out", exported])
    run([a.distill, "export"] + common + ["--format", "state_dict", "--out", state_dict])

    # Python runs the export without distill; its names and tensors are the state dict's.
    extra = {"distill/model.json": "", "distill/preprocess.txt": "", "distill/postprocess.txt": "", "distill/labels.txt": ""}
    module = torch.jit.load(exported, _extra_files=extra)
    weights = torch.load(state_dict)
    scripted = module.state_dict()
    if sorted(scripted) != sorted(weights):
        fail("the export's state_dict() keys differ from the state dict's: %s" % sorted(set(scripted) ^ set(weights)))
    for key, value in weights.items():
        if not torch.equal(scripted[key], value):
            fail("the export's %s differs from the state dict's" % key)
    info = json.loads(extra["distill/model.json"])
    if info["model"] != "Student" or info["outputs"] != ["logits"] or len(info["input_shape"]) != 3:
        fail("distill/model.json: %s" % info)
    if "normalize" not in extra["distill/preprocess.txt"].decode() or "Coat" not in extra["distill/labels.txt"].decode():
        fail("the export lacks its preprocessing or class names: %s" % extra)
    c, h, w = info["input_shape"]
    with torch.no_grad():
        for batch in (1, 7):
            logits = module(torch.randn(batch, c, h, w))
            if tuple(logits.shape) != (batch, 10):
                fail("torch.jit.load(export)(x) at batch %d gave %s" % (batch, tuple(logits.shape)))
    print("Python: %d tensors with the state dict's names; logits at batch 1 and 7" % len(scripted), flush=True)

    # --with-taps: forward returns a dict with the logits (and the student's return patterns).
    tapped = os.path.join(a.work, "tapped.pt")
    run([a.distill, "export"] + common + ["--with-taps", "--out", tapped])
    with torch.no_grad():
        outputs = torch.jit.load(tapped)(torch.randn(2, c, h, w))
    if not isinstance(outputs, dict) or "logits" not in outputs or tuple(outputs["logits"].shape) != (2, 10):
        fail("an export --with-taps returned %r" % type(outputs))

    # eval takes the export as its weights and gives the checkpoint's evaluation (the student's
    # numbers; the checkpoint also holds the teacher, so its eval adds the teacher's agreement).
    limit = ["-o", "DataLoader.Eval.dataset.limit=64"]
    evaluations = [re.search(r"evaluated Student on 64 images: (.*? loss [0-9.]+)( top1_Teacher .*)?$",
                             run([a.distill, "eval", "-c", a.recipe, "-o", "Global.pretrained_model=" + weights] + limit).stdout,
                             re.M)
                   for weights in (a.weights, exported)]
    if not all(evaluations) or evaluations[0].group(1) != evaluations[1].group(1):
        fail("distill eval of the export differs from the checkpoint's: %s" % [e and e.group(1) for e in evaluations])
    if not evaluations[0].group(2) or " agree_Teacher " not in evaluations[0].group(2) or evaluations[1].group(2):
        fail("distill eval reports the teacher's agreement for the whole checkpoint only: %s" % [e.group(0) for e in evaluations])

    # The deployed program, `distill infer` with the checkpoint and with the export agree.
    images = sorted(glob.glob(os.path.join(a.images, "*.jpg")))
    predicted = results(run([a.predict, exported] + images).stdout)
    inferred = results(run([a.distill, "infer"] + common + ["-o", "Infer.batch_size=2"] + images).stdout)
    from_export = results(run([a.distill, "infer", "-c", a.recipe, "-o", "Global.pretrained_model=" + exported] + images).stdout)
    if len(inferred) != len(images) or not inferred[0]["label_names"]:
        fail("distill infer printed %s" % inferred)
    same_predictions(predicted, inferred, "predict against distill infer")
    same_predictions(from_export, inferred, "distill infer of the export against the checkpoint")
    print("predict, distill infer and distill infer of the export agree on %d images" % len(images), flush=True)

    # Bad cases.
    data = open(exported, "rb").read()
    damaged = os.path.join(a.work, "damaged.pt")
    middle = len(data) // 2
    open(damaged, "wb").write(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    done = run([a.distill, "infer", "-c", a.recipe, "-o", "Global.pretrained_model=" + damaged] + images, expect_rc=1)
    if "damaged.pt" not in done.stderr or "damaged" not in done.stderr.replace("damaged.pt", ""):
        fail("a damaged export: %s" % done.stderr)
    truncated = os.path.join(a.work, "truncated.pt")
    open(truncated, "wb").write(data[:middle])
    done = run([a.distill, "infer", "-c", a.recipe, "-o", "Global.pretrained_model=" + truncated] + images, expect_rc=1)
    if "truncated.pt" not in done.stderr:
        fail("a truncated export: %s" % done.stderr)
    done = run([a.distill, "export"] + common + ["-o", "Arch.infer_model_name=Nobody", "--out", os.path.join(a.work, "x.pt")],
               expect_rc=1)
    if "Nobody" not in done.stderr:
        fail("an export of a missing model name: %s" % done.stderr)
    mixed = os.path.join(a.work, "mixed")
    shutil.rmtree(mixed, ignore_errors=True)
    os.makedirs(os.path.join(mixed, "sub"))
    for image in images:
        shutil.copy(image, os.path.join(mixed, "sub", os.path.basename(image)))
    open(os.path.join(mixed, "broken.jpg"), "wb").write(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = run([a.distill, "infer"] + common + [mixed], expect_rc=1)
    if len(results(done.stdout)) != len(images) or "broken.jpg" not in done.stderr:
        fail("a folder with one bad image: every good image is printed and the bad one named")
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
