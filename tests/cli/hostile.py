#!/usr/bin/python3
"""Mistyped and hostile command lines and recipe values: each must end with exit status 1 and
one line "distill: <what was wrong, and where>", never a C++ exception's text, a backtrace, a
crash or a run that goes on.

    hostile.py --distill build/examples/distill --work DIR
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "..", "distributed", "recipe.json")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--distill", required=True)
    p.add_argument("--work", required=True)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    deep = os.path.join(a.work, "deep.json")
    with open(deep, "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    train = [a.distill, "train", "-c", RECIPE, "-o", "Global.output_dir=" + os.path.join(a.work, "out")]
    # A YAML recipe (JSON's text is YAML too) with a mistyped key on line 3: the error names the line.
    typo = os.path.join(a.work, "typo.yaml")
    with open(RECIPE) as f:
        text = f.read().replace('"Global": {', '"Global": {\n    "epochz": 1,', 1)
    with open(typo, "w") as f:
        f.write(text)
    cases = [
        # (command line, fragments the message must hold)
        ([a.distill, "train", "-c", RECIPE, "--threads", "abc"], ["--threads", "abc"]),
        ([a.distill, "train", "-c", RECIPE, "--threads", "-5"], ["--threads", "-5"]),
        ([a.distill, "train", "-c", RECIPE, "--nproc", "2", "--timeout", "abc"], ["--timeout", "abc"]),
        ([a.distill, "train", "-c", RECIPE, "--nproc", "0"], ["--nproc", "0"]),
        ([a.distill, "train", "-c", HERE], ["is a directory"]),
        ([a.distill, "train", "-c", deep], ["deep.json", "nested deeper than 100"]),
        (train + ["-o", "Arch.models[99999999999999999999].x=1"], ["override", "bad index"]),
        (train + ["-o", "Global.epochs=1e309"], ["Global.epochs"]),
        (train + ["-o", "Global.output_dir="], ["Global.output_dir", "must not be empty"]),
        (train + ["-o", "Loss={}"], ["Loss"]),
        (train + ["-o", "Loss=[]"], ["Loss"]),
        (train + ["-o", "Loss=text"], ["Loss"]),
        (train + ["-o", "Loss.Train={}"], ["Loss.Train"]),
        (train + ["-o", "Loss.Train[0].DistillationGTCELoss.weight=-1"], ["Loss.Train[0]", "weight"]),
        (train + ["-o", "Loss.Train[1].DistillationKLDivLoss.temperature=0"], ["Loss.Train[1]", "temperature"]),
        (train + ["-o", "Optimizer.momentum=-1"], ["Optimizer", "momentum"]),
        (train + ["-o", "Optimizer.weight_decay=-1"], ["Optimizer", "weight decay"]),
        (train + ["-o", "Optimizer.lr.learning_rate=1e300"], ["Optimizer.lr", "learning_rate"]),
        (train + ["-o", "Arch.models[1].Student.widths=[0, 8]"], ["Arch.models[1].Student", "widths"]),
        (train + ["-o", "Arch.models[1].Student.depth=1000000000000000000"], ["Arch.models[1].Student", "depth"]),
        (train + ["-o", "DataLoader.Train.sampler.batch_size=1000000000"], ["batch_size", "limit"]),
        (train + ["-o", "Global.pretrained_model=" + HERE], ["not a readable torch.save file"]),
        (train + ["--format", "onnx"], ["--format", "only for distill export and distill infer"]),
        ([a.distill, "train", "-c", typo], ["Global.epochz", "unknown key", "typo.yaml line 3"]),
        (train + ["--with-taps"], ["--with-taps", "only for distill export"]),
        ([a.distill, "export", "-c", RECIPE, "-o", "Global.pretrained_model=x.pt", "--format", "onnx"], ["--format", "onnx"]),
        ([a.distill, "infer", "-c", RECIPE, "-o", "Global.pretrained_model=x.pt", "--format", "yaml"], ["--format", "yaml"]),
        ([a.distill, "export", "-c", os.path.join(HERE, "..", "..", "examples", "recipes", "fashion_mnist", "kd.json"),
          "-o", "Global.pretrained_model=x.pt", "-o", "Global.image_shape=[3, 0, 8]"], ["Global.image_shape", "[3,0,8]"]),
    ]
    failures = 0
    for command, fragments in cases:
        shown = " ".join(command[1:]).replace(HERE, "<tests/cli>").replace(a.work, "<work>")
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        err = done.stderr.strip()
        problems = []
        if done.returncode != 1:
            problems.append("exit status %d, expected 1" % done.returncode)
        if not err.startswith("distill: "):
            problems.append("the message does not start with 'distill: '")
        for bad in ("unexpected error", "terminate called", "Exception raised from", "frame #"):
            if bad in err:
                problems.append("the message holds '%s'" % bad)
        for fragment in fragments:
            if fragment not in err:
                problems.append("the message lacks '%s'" % fragment)
        print(("ok   " if not problems else "FAIL ") + shown + "\n     " + err.replace("\n", "\n     "))
        if problems:
            failures += 1
            print("     -> " + "; ".join(problems))
    if failures:
        print("FAIL: %d of %d command lines" % (failures, len(cases)))
        sys.exit(1)
    print("PASS: %d command lines, each a one-line error that names what was wrong" % len(cases))


if __name__ == "__main__":
    main()
