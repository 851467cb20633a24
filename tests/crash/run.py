#!/usr/bin/python3
"""Crash safety of `distill train`: runs killed with SIGKILL at chosen points and at random
moments leave only files that load (or no file), and resuming from latest.pt ends with the
weights, checkpoints and metrics of an uninterrupted run.

    run.py --distill build/examples/distill --work DIR

Kills at chosen points use strace's fault injection: the process gets SIGKILL at its k-th
rename (a checkpoint written to NAME.tmp, not yet moved into place) or its k-th fsync (the
temporary file written, not yet flushed). Random kills come at seeded random times.
"""
import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "..", "distributed", "recipe.json")
EPOCHS = 3


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def command(a, out, resume):
    c = [a.distill, "train", "-c", RECIPE, "-o", "Global.epochs=%d" % EPOCHS, "-o", "Global.output_dir=" + out,
         "-o", "DataLoader.Train.dataset.limit=96", "-o", "DataLoader.Train.sampler.batch_size=16",
         "-o", "DataLoader.Eval.dataset.limit=64", "-o", "Global.print_batch_step=1"]
    if resume and os.path.exists(os.path.join(out, "latest.pt")):
        c += ["-o", "Global.checkpoints=" + os.path.join(out, "latest.pt")]
    return c


def check_files(out, label):
    """Every checkpoint on disk loads completely; returns their names."""
    names = []
    for path in sorted(glob.glob(os.path.join(out, "*.pt"))):
        try:
            entries = torch.load(path)
        except Exception as e:  # noqa: BLE001 - any failure to load is the finding
            fail("%s: %s does not load: %s" % (label, path, e))
        if not isinstance(entries, dict) or not entries:
            fail("%s: %s is not a state dict" % (label, path))
        names.append(os.path.basename(path))
    return names


def train_rows(out):
    rows = []
    for line in open(os.path.join(out, "metrics.jsonl")):
        r = json.loads(line)
        if r.get("type") == "train":
            rows.append((r["epoch"], r["step"], r["loss"]))
    return rows


def finish(a, out, label):
    """Resumes without faults until the run completes."""
    done = subprocess.run(command(a, out, True), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(done.stdout)
        fail("%s: the resumed run failed" % label)
    if "removed" in done.stdout:
        print("  " + "\n  ".join(l for l in done.stdout.splitlines() if l.startswith("removed")))


def compare(reference, out, label):
    leftovers = glob.glob(os.path.join(out, "*.tmp"))
    if leftovers:
        fail("%s: partial files left after the resumed run: %s" % (label, leftovers))
    expected = ["epoch_%d.pt" % e for e in range(1, EPOCHS + 1)] + ["latest.pt"]
    names = check_files(out, label)
    missing = [n for n in expected if n not in names]
    if missing:
        fail("%s: missing %s" % (label, missing))
    want, got = torch.load(os.path.join(reference, "latest.pt")), torch.load(os.path.join(out, "latest.pt"))
    for k, v in want.items():
        if k.startswith(("model.", "optimizer.", "loss.", "meta.epoch", "meta.step")) and not torch.equal(v, got[k]):
            fail("%s: '%s' differs from the uninterrupted run's" % (label, k))
    rows, ref_rows = train_rows(out), train_rows(reference)
    keys = [(e, s) for e, s, _ in rows]
    if len(keys) != len(set(keys)):
        fail("%s: metrics.jsonl repeats training steps" % label)
    if rows != ref_rows:
        fail("%s: metrics.jsonl's training rows differ from the uninterrupted run's" % label)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--distill", required=True)
    p.add_argument("--work", required=True)
    a = p.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    reference = os.path.join(a.work, "straight")
    start = time.monotonic()
    done = subprocess.run(command(a, reference, False), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(done.stdout)
        fail("the uninterrupted run failed")
    seconds = time.monotonic() - start
    print("uninterrupted run: %.1f s" % seconds, flush=True)

    if shutil.which("strace") is None:
        fail("strace is needed for the injected kills (tools/deps.sh installs it)")
    # Kills at chosen points of the file writes. The run first renames metrics.jsonl (started
    # anew), then per epoch writes best_model.pt and best_model_student.pt (when the top-1
    # improves), epoch_<k>.pt and latest.pt; each written file is fsynced before its rename.
    # epoch_<k>.pt and latest.pt are hard links to the epoch's one written checkpoint (made as
    # NAME.tmp, then renamed): kills at the links too.
    renames = "rename,renameat,renameat2"
    links = "link,linkat"
    points = [("rename", 1), ("rename", 3), ("rename", 4), ("rename", 6), ("fsync", 3), ("fsync", 4),
              ("link", 1), ("link", 2), ("link", 3)]
    kills = 0
    for call, when in points:
        label = "killed at %s #%d" % (call, when)
        out = os.path.join(a.work, "%s%d" % (call, when))
        traced = {"rename": renames, "link": links, "fsync": "fsync,fdatasync"}[call]
        c = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + traced,
             "-e", "inject=%s:signal=KILL:when=%d" % (traced, when)] + command(a, out, False)
        done = subprocess.run(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode == 0:
            fail("%s: the run was not killed (rc 0); strace injection did not happen" % label)
        kills += 1
        on_disk = check_files(out, label)
        print("%s: rc %d, on disk: %s, partial: %s" % (label, done.returncode, on_disk,
                                                       [os.path.basename(t) for t in glob.glob(out + "/*.tmp")]), flush=True)
        finish(a, out, label)
        compare(reference, out, label)

    # Kills at random moments: several per run, then resume to the end.
    rng = random.Random(20261130)
    for trial in range(2):
        out = os.path.join(a.work, "random%d" % trial)
        label = "random kills, trial %d" % trial
        moments = []
        for _ in range(3):
            proc = subprocess.Popen(command(a, out, True), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            moment = rng.uniform(0.3, seconds)
            time.sleep(moment)
            if proc.poll() is None:
                proc.kill()
                kills += 1
                moments.append("%.2f s" % moment)
            proc.wait()
            check_files(out, label)
        print("%s: killed at %s" % (label, ", ".join(moments) or "(finished first)"), flush=True)
        finish(a, out, label)
        compare(reference, out, label)
    print("PASS: %d kills; every file on disk loaded after each, and every resumed run equals the uninterrupted one" % kills)


if __name__ == "__main__":
    main()
