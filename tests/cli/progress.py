#!/usr/bin/env python3
"""The live progress bar and `distill check` from the command line (run by CTest as cli.progress).

- Under a pseudo-terminal (Python's pty), `distill train` draws one bar per epoch, rewritten in
  place ('\\r'), with the epoch's last bar left on screen, and `distill eval`, `distill cache` and
  `distill check` draw theirs; through a pipe the same commands print plain log lines and no '\\r'.
- `distill check` exits 0 on a sound recipe, 1 with every problem listed on a broken one, and
  --json prints one JSON object that says the same.
"""
import argparse
import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import sys
import termios

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.join(HERE, "..", "..", "examples", "recipes", "fashion_mnist")
SMALL = ["-o", "DataLoader.Train.dataset.limit=512", "-o", "DataLoader.Eval.dataset.limit=256",
         "-o", "Global.epochs=2", "-o", "Global.print_batch_step=2"]


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def on_pipe(command):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print("$ " + " ".join(command) + "\n" + done.stdout, flush=True)
    return done.returncode, done.stdout


def on_terminal(command):
    """Runs `command` with its stdout and stderr on a pseudo-terminal; returns (status, output)."""
    leader, follower = pty.openpty()
    # 160 columns (a new pty has none, and the bar then assumes 100 and cuts its line there).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(command, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower side closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    status = process.wait()
    os.close(leader)
    text = b"".join(chunks).decode("utf-8", "replace")
    print("$ (terminal) " + " ".join(command) + "\n" + text.replace("\r", "<CR>"), flush=True)
    return status, text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--distill", required=True)
    parser.add_argument("--work", required=True)
    a = parser.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)  # a cache left by an earlier run would not be remade
    os.makedirs(a.work)
    teacher = os.path.join(RECIPES, "teacher.json")
    kd = os.path.join(RECIPES, "kd.json")

    # Training through a pipe: log lines, no carriage return, no bar.
    status, out = on_pipe([a.distill, "train", "-c", teacher] + SMALL + ["-o", "Global.output_dir=" + a.work + "/pipe"])
    if status != 0 or "\r" in out or "[####" in out:
        fail("train through a pipe: expected plain lines")
    if out.count("epoch 1/2 step ") != 2 or "eval epoch 2 | top1" not in out or "done: 2 epochs" not in out:
        fail("train through a pipe: the log lines are missing")

    # The same on a terminal: one bar per epoch, rewritten in place; the last bar of each epoch stays.
    status, out = on_terminal([a.distill, "train", "-c", teacher] + SMALL + ["-o", "Global.output_dir=" + a.work + "/tty"])
    if status != 0:
        fail("train on a terminal: exit status %d" % status)
    for epoch in (1, 2):
        final = "epoch %d/2 [####################] 4/4 loss " % epoch
        if final not in out:
            fail("train on a terminal: no finished bar for epoch %d" % epoch)
        line = out[out.index(final):].split("\n")[0]
        if "ETA" not in line or "img/s" not in line or "lr " not in line or "CELoss_Teacher" not in line:
            fail("train on a terminal: the bar lacks ETA, speed, lr or the terms: " + line)
    if "\repoch 1/2 [##########..........] 2/4" not in out:
        fail("train on a terminal: the bar is not rewritten in place")
    if "epoch 1/2 step 2/4 |" in out:
        fail("train on a terminal: log lines printed besides the bar")
    if "eval [" not in out or "eval epoch 2 | top1" not in out:
        fail("train on a terminal: no evaluation bar or result")
    metrics = [json.loads(line) for line in open(a.work + "/tty/metrics.jsonl")]
    if sum(1 for r in metrics if r["type"] == "train") != 4 or metrics[-1]["type"] != "summary":
        fail("train on a terminal: metrics.jsonl does not have every report and the summary")

    # eval and cache have a bar too; through a pipe they do not.
    weights = ["-o", "Global.pretrained_model=" + a.work + "/tty/latest.pt"]
    status, out = on_terminal([a.distill, "eval", "-c", teacher] + SMALL + weights)
    if status != 0 or "eval [" not in out or "evaluated Teacher on 256 images" not in out:
        fail("eval on a terminal: no bar or no result")
    status, out = on_pipe([a.distill, "eval", "-c", teacher] + SMALL + weights)
    if status != 0 or "\r" in out:
        fail("eval through a pipe: expected plain lines")
    no_teacher = ["-o", "Arch.models.0.Teacher.pretrained=False"]
    status, out = on_terminal([a.distill, "cache", "-c", kd, "--out", a.work + "/cache", "--views", "2"] + SMALL + no_teacher)
    if status != 0 or "cache [" not in out or "complete" not in out:
        fail("cache on a terminal: no bar")

    # check: sound, broken, and as JSON.
    sound = ["-o", "Arch.models.0.Teacher.pretrained=" + a.work + "/tty/best_model_student.pt", "-o", "Global.teacher_check=false"]
    status, out = on_terminal([a.distill, "check", "-c", kd] + SMALL + sound)
    if status != 0 or "check passed" not in out or "loss_kldiv_Student_Teacher" not in out or "(reaches " not in out:
        fail("check of a sound recipe: expected 'check passed' and the terms")
    broken = ["-o", "Global.epochs=0", "-o", "Optimizer.name=Adamax", "-o", "Loss.Train.1.DistillationKLDivLoss.temperature=-1"]
    status, out = on_pipe([a.distill, "check", "-c", kd] + SMALL + broken)
    if status != 1 or "check failed: 4 problems" not in out:
        fail("check of a broken recipe: expected exit status 1 and all four problems (the teacher's missing file too)")
    for part in ("Global.epochs", "Optimizer.name", "best_model_student.pt", "Loss.Train[1].DistillationKLDivLoss"):
        if part not in out:
            fail("check of a broken recipe: '%s' is not listed" % part)
    status, out = on_pipe([a.distill, "check", "--json", "-c", kd] + SMALL + broken)
    report = json.loads(out)
    if status != 1 or report["ok"] is not False or len(report["problems"]) != 4:
        fail("check --json of a broken recipe: expected ok false and four problems")
    status, out = on_pipe([a.distill, "check", "--json", "-c", kd] + SMALL + sound)
    report = json.loads(out)
    if status != 0 or not report["ok"] or [m["name"] for m in report["models"]] != ["Teacher", "Student"]:
        fail("check --json of a sound recipe")
    if report["models"][0]["tensors_loaded"] <= 0 or not report["models"][0]["frozen"]:
        fail("check --json: the teacher's weights file is not reported")
    status, out = on_pipe([a.distill, "train", "--json", "-c", kd])
    if status != 1 or "--json: only for distill check" not in out:
        fail("--json outside check is not refused")
    print("PASS: progress bars on a terminal and a pipe, distill check")


if __name__ == "__main__":
    main()
