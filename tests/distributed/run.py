"""Data-parallel tests: several local worker processes over Gloo (CTest runs each case).

  run.py CASE --distill BUILD/examples/distill --report BUILD/tests/rank_report --work DIR

equivalence  2 workers with batch B/2 end with the weights of 1 process with batch B (1e-5
             relative per tensor); every rank reports the same evaluation and the same weights;
             rank 0's student reaches differently seeded ranks, their frozen teachers stay theirs;
             only rank 0 writes files; 2 "machines" (--nnodes 2 on loopback) equal --nproc 2;
             the all-reduce sent from gradient hooks during backward (1 KB buckets, also with
             update_freq 2) gives the same bits as sent after backward (DISTILL_GRADIENT_OVERLAP=0).
resume       --nproc 2 for 1 epoch, resumed to 2 epochs, equals 2 epochs straight (bitwise);
             resuming with another worker count is refused.
cache        a teacher cache made by 2 workers is byte for byte the one 1 process makes; a cache
             run killed between shards and run again keeps the finished shards and ends equal;
             training from the cache with 2 workers x batch 8 equals 1 process x batch 16
             over 8 steps (1e-5); a cached run killed during epoch 2 and resumed equals a straight run.
failure      a killed, a stopped (hung) and a failing worker make the other exit within the
             bound with an error naming the rank and the reason; the launcher reports it too.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "recipe.json")
BOUND = 30.0  # seconds within which a surviving worker must stop (measured ~1-5 s)


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def run(command, **kwargs):
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    print(done.stdout, flush=True)
    return done


def must(command, **kwargs):
    done = run(command, **kwargs)
    if done.returncode != 0:
        fail("exit status %d" % done.returncode)
    return done.stdout


def student(path):
    return {k: v for k, v in torch.load(path).items() if k.startswith("model.Student.")}


def worst_relative(a, b):
    worst, where = 0.0, ""
    for k, v in a.items():
        scale = v.double().abs().max().item()
        d = (v.double() - b[k].double()).abs().max().item() / (scale if scale > 0 else 1.0)
        if d > worst:
            worst, where = d, k
    return worst, where


def reports(output):
    lines = {}
    for m in re.finditer(r"^report rank (\d+) (.*)$", output, re.M):
        lines[int(m.group(1))] = m.group(2)
    return lines


def equivalence(a):
    w = a.work
    one, two, nodes = (os.path.join(w, d) for d in ("one", "two", "nodes"))
    common = ["-c", RECIPE, "-o", "Global.epochs=1", "-o", "DataLoader.Train.dataset.limit=128"]
    must([a.distill, "train"] + common + ["-o", "Global.output_dir=" + one, "-o", "DataLoader.Train.sampler.batch_size=16"])
    out = must([a.distill, "train", "--nproc", "2"] + common +
               ["-o", "Global.output_dir=" + two, "-o", "DataLoader.Train.sampler.batch_size=8"])
    if out.count("done: 1 epochs") != 1:
        fail("the progress should be printed once (by rank 0), got %d final lines" % out.count("done: 1 epochs"))
    worst, where = worst_relative(student(one + "/latest.pt"), student(two + "/latest.pt"))
    print("1 process x batch 16 vs 2 processes x batch 8, 8 steps: worst relative difference %.3g (%s)" % (worst, where))
    if worst > 1e-5:
        fail("the weights differ by %.3g relative (%s); expected <= 1e-5" % (worst, where))
    lines = [json.loads(l) for l in open(two + "/metrics.jsonl")]
    single = [json.loads(l) for l in open(one + "/metrics.jsonl")]
    if len(lines) != len(single):
        fail("metrics.jsonl has %d records with 2 workers, %d with one: only rank 0 may write" % (len(lines), len(single)))
    ev1 = [r for r in single if r.get("type") == "eval"][-1]
    ev2 = [r for r in lines if r.get("type") == "eval"][-1]
    print("eval, 1 process:", ev1, "\neval, 2 processes:", ev2)
    if abs(ev1["top1"] - ev2["top1"]) > 1e-12 or abs(ev1["loss"] - ev2["loss"]) > 1e-4:
        fail("the evaluation with 2 workers differs from one process's")

    # The all-reduce overlaps backward (buckets leave from gradient-accumulator hooks): with
    # 1 KB buckets the student's gradients make several buckets, all sent during backward;
    # overlapping or not, with or without gradient accumulation, the weights are the same bits.
    small = dict(os.environ, DISTILL_BUCKET_MB="0.001")
    for label, extra in (("", []), (", update_freq 2", ["-o", "Global.update_freq=2"])):
        runs = {}
        for overlap in ("1", "0"):
            out_dir = os.path.join(w, "overlap%s%s" % (overlap, extra and "_freq2" or ""))
            out = must([a.distill, "train", "--nproc", "2"] + common + extra +
                       ["-o", "Global.output_dir=" + out_dir, "-o", "DataLoader.Train.sampler.batch_size=8"],
                       env=dict(small, DISTILL_GRADIENT_OVERLAP=overlap))
            m = re.search(r"gradient all-reduce: (\d+) bucket\(s\), (\d+) sent during backward", out)
            if not m:
                fail("no 'gradient all-reduce' line in the output")
            runs[overlap] = (student(out_dir + "/latest.pt"), int(m.group(1)), int(m.group(2)))
        print("overlap%s: %d buckets, %d sent during backward; without: %d" % (label, runs["1"][1], runs["1"][2], runs["0"][2]))
        if runs["1"][1] < 3 or runs["1"][2] != runs["1"][1] or runs["0"][2] != 0:
            fail("expected several buckets, all sent during backward with overlap, none without")
        worst, where = worst_relative(runs["1"][0], runs["0"][0])
        if worst != 0:
            fail("overlapped and not overlapped all-reduce should give the same weights%s; differ by %.3g (%s)" % (label, worst, where))
        if not extra:
            worst, where = worst_relative(student(one + "/latest.pt"), runs["1"][0])
            if worst > 1e-5:
                fail("1 KB buckets: 2 workers differ from 1 process by %.3g relative (%s)" % (worst, where))

    # Every rank: the same evaluation over all 200 test images and the same weights.
    report = [a.report, "--nproc", "2", "--train", RECIPE, "Global.epochs=1", "DataLoader.Train.dataset.limit=128",
              "DataLoader.Train.sampler.batch_size=8", "Global.output_dir=" + os.path.join(w, "report")]
    per_rank = reports(must(report))
    print("per rank:", per_rank)
    if sorted(per_rank) != [0, 1] or per_rank[0] != per_rank[1]:
        fail("ranks report different evaluations or weights")
    if "samples 200 " not in per_rank[0]:
        fail("the evaluation should count each of the 200 test images once")

    # Ranks built with different seeds: rank 0's student reaches every rank (broadcast, then
    # averaged gradients); the frozen teachers, never synchronised, stay as each rank made them.
    port = free_port()
    procs = [subprocess.Popen([a.report, RECIPE, "Global.seed=%d" % (7 + rank), "Global.output_dir=" + os.path.join(w, "seeds")],
                              env=dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outs = "".join(p.communicate(timeout=300)[0] for p in procs)
    print(outs)
    seeded = reports(outs)
    if any(p.returncode != 0 for p in procs) or sorted(seeded) != [0, 1]:
        fail("the differently seeded ranks did not both report")
    student_sums = [re.search(r" Student ([0-9.e+-]+)", seeded[r]).group(1) for r in (0, 1)]
    teacher_sums = [re.search(r" Teacher\(frozen\) ([0-9.e+-]+)", seeded[r]).group(1) for r in (0, 1)]
    if student_sums[0] != student_sums[1]:
        fail("the students differ across ranks: rank 0's weights were not broadcast")
    if teacher_sums[0] == teacher_sums[1]:
        fail("the frozen teachers are equal across differently seeded ranks: they were synchronised")

    # Two "machines" on loopback: --nnodes 2, one worker each, same result as --nproc 2.
    port = free_port()
    nodes_cmd = lambda rank: [a.distill, "train", "--nnodes", "2", "--node-rank", str(rank), "--master", "127.0.0.1:%d" % port,
                              "--nproc", "1"] + common + ["-o", "Global.output_dir=" + nodes,
                                                         "-o", "DataLoader.Train.sampler.batch_size=8"]
    procs = [subprocess.Popen(nodes_cmd(r), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    print(outs[0], outs[1])
    if any(p.returncode != 0 for p in procs):
        fail("--nnodes 2 run failed")
    worst, where = worst_relative(student(two + "/latest.pt"), student(nodes + "/latest.pt"))
    if worst != 0:
        fail("--nnodes 2 x --nproc 1 should equal --nproc 2 bitwise; differs by %.3g (%s)" % (worst, where))
    print("PASS")


def resume(a):
    w = a.work
    straight, resumed = os.path.join(w, "straight"), os.path.join(w, "resumed")
    common = [a.distill, "train", "--nproc", "2", "-c", RECIPE, "-o", "DataLoader.Train.sampler.batch_size=8"]
    must(common + ["-o", "Global.epochs=2", "-o", "Global.output_dir=" + straight])
    must(common + ["-o", "Global.epochs=1", "-o", "Global.output_dir=" + resumed])
    out = must(common + ["-o", "Global.epochs=2", "-o", "Global.output_dir=" + resumed,
                         "-o", "Global.checkpoints=" + resumed + "/latest.pt"])
    if "resumed from" not in out:
        fail("no 'resumed from' line")
    x, y = torch.load(straight + "/latest.pt"), torch.load(resumed + "/latest.pt")
    for k, v in x.items():
        if k.startswith(("model.", "loss.", "rng.")) and not torch.equal(v, y[k]):
            fail("resumed run differs from the straight one in " + k)
    if "rng.cpu.rank1" not in x or x["meta.world_size"].item() != 2:
        fail("the checkpoint should hold rank 1's RNG state and the worker count")
    other = run([a.distill, "train", "-c", RECIPE, "-o", "Global.epochs=2", "-o", "Global.output_dir=" + os.path.join(w, "other"),
                 "-o", "Global.checkpoints=" + resumed + "/latest.pt"])
    if other.returncode == 0 or "written by 2 worker(s)" not in other.stdout:
        fail("resuming a 2-worker checkpoint in one process should be refused")
    print("PASS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(a, extra_env=None, rank_args=None, epochs=200):
    port = free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), **(extra_env or {}))
        command = [a.distill, "train", "-c", RECIPE, "-o", "Global.epochs=%d" % epochs, "-o", "Global.print_batch_step=1",
                   "-o", "Global.output_dir=" + os.path.join(a.work, "failure"),
                   "-o", "DataLoader.Train.sampler.batch_size=8"] + ((rank_args or {}).get(rank, []))
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def wait_for_training(proc):
    # rank 0 prints a step line per batch once training runs
    while True:
        line = proc.stdout.readline()
        if not line:
            fail("rank 0 ended before training started")
        if line.startswith("epoch 1/"):
            return


def expect_exit(proc, since, patterns, label):
    try:
        _, err = proc.communicate(timeout=BOUND + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail(label + ": the surviving worker did not stop")
    took = time.monotonic() - since
    print("%s: exit status %d after %.1f s: %s" % (label, proc.returncode, took, err.strip()))
    if proc.returncode == 0:
        fail(label + ": the surviving worker should fail")
    if took > BOUND:
        fail("%s: took %.1f s, bound %.0f s" % (label, took, BOUND))
    for p in patterns:
        if not re.search(p, err):
            fail("%s: the error should match %r" % (label, p))


def same_files(x, y, label):
    names = sorted(os.listdir(x))
    if names != sorted(os.listdir(y)):
        fail("%s: %s holds %s, %s holds %s" % (label, x, names, y, sorted(os.listdir(y))))
    for name in names:
        if open(os.path.join(x, name), "rb").read() != open(os.path.join(y, name), "rb").read():
            fail("%s: %s differs" % (label, name))
    print("%s: %d files equal byte for byte" % (label, len(names)))


def cache(a):
    w = os.path.join(a.work, "cache")
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    data = ["-c", RECIPE, "-o", "DataLoader.Train.dataset.limit=1024"]
    make = [a.distill, "cache"] + data + ["--views", "3", "--topk", "4", "--shard-images", "32"]
    one, two, cut = (os.path.join(w, d) for d in ("one", "two", "interrupted"))
    must(make + ["--out", one])
    must(make[:2] + ["--nproc", "2"] + make[2:] + ["--out", two])
    same_files(one, two, "1 process vs --nproc 2")

    # Killed once three shards are there; the second run keeps them and finishes.
    proc = subprocess.Popen(make + ["--out", cut], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not os.path.exists(os.path.join(cut, "shard_00002.bin")):
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    if os.path.exists(os.path.join(cut, "manifest.json")):
        fail("the cache run ended before it was killed; nothing was tested")
    out = must(make + ["--out", cut])
    kept = re.search(r"\((\d+) kept from an earlier run\)", out)
    if not kept or int(kept.group(1)) < 3:
        fail("the resumed cache run should keep the shards already made")
    same_files(one, cut, "interrupted and resumed vs straight")

    # Training from the cache: 2 workers equal 1 process, over 8 steps (128 images, a cache of
    # their own) like the equivalence case. Summing a batch of 16 in one process and 8 + 8 over
    # two round differently, and training amplifies it: on an AVX-512 Xeon the student differed
    # by 2.4e-6 after 8 steps and 4.6e-3 after 64 (1024 images); a rank reading another rank's
    # cache rows differs at the first step.
    small = os.path.join(w, "small")
    few = ["-c", RECIPE, "-o", "DataLoader.Train.dataset.limit=128"]
    must([a.distill, "cache"] + few + ["--views", "3", "--topk", "4", "--shard-images", "32", "--out", small])
    train = [a.distill, "train"] + few + ["-o", "Global.teacher_cache=" + small, "-o", "Global.print_batch_step=1",
                                         "-o", "Global.epochs=1"]
    p1, p2 = os.path.join(w, "train1"), os.path.join(w, "train2")
    must(train + ["-o", "Global.output_dir=" + p1, "-o", "DataLoader.Train.sampler.batch_size=16"])
    must(train[:2] + ["--nproc", "2"] + train[2:] + ["-o", "Global.output_dir=" + p2,
                                                     "-o", "DataLoader.Train.sampler.batch_size=8"])
    worst, where = worst_relative(student(p1 + "/latest.pt"), student(p2 + "/latest.pt"))
    print("from the cache, 1 process x batch 16 vs 2 processes x batch 8, 8 steps: worst relative difference %.3g (%s)"
          % (worst, where))
    if worst > 1e-5:
        fail("data-parallel training from the cache should equal one process")
    if any("Teacher" in k for k in torch.load(p1 + "/latest.pt")):
        fail("a run from the cache should hold no teacher")

    # Killed during epoch 2, resumed from latest.pt: equal to 2 epochs straight.
    straight, resumed = os.path.join(w, "straight"), os.path.join(w, "resumed")
    two_epochs = [a.distill, "train"] + data + ["-o", "Global.teacher_cache=" + one, "-o", "Global.print_batch_step=1",
                                                "-o", "Global.epochs=2", "-o", "DataLoader.Train.sampler.batch_size=16"]
    must(two_epochs + ["-o", "Global.output_dir=" + straight])
    proc = subprocess.Popen(two_epochs + ["-o", "Global.output_dir=" + resumed], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 2/2 step 8/"):
            proc.kill()
            break
    proc.wait()
    if not os.path.exists(resumed + "/epoch_1.pt") or os.path.exists(resumed + "/epoch_2.pt"):
        fail("the run should have been killed during epoch 2")
    out = must(two_epochs + ["-o", "Global.output_dir=" + resumed, "-o", "Global.checkpoints=" + resumed + "/latest.pt"])
    if "resumed from" not in out:
        fail("the second run should resume")
    a_state, b_state = torch.load(straight + "/latest.pt"), torch.load(resumed + "/latest.pt")
    for k, v in a_state.items():
        if v.is_floating_point() and not torch.equal(v, b_state[k]):
            fail("resumed run differs from the straight one at " + k)
    print("killed in epoch 2 and resumed: equal to the straight run (bitwise)")
    print("PASS")


def parent_of(pid):
    try:
        stat = open("/proc/%s/stat" % pid).read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def failure(a):
    # A worker killed (SIGKILL): the other names it.
    p0, p1 = start_workers(a)
    wait_for_training(p0)
    p1.kill()
    expect_exit(p0, time.monotonic(), [r"rank 0 of 2: .*failed: rank 1 stopped without reporting an error"], "rank 1 killed")
    p1.wait()

    # Rank 0 (which hosts the store) killed.
    p0, p1 = start_workers(a)
    wait_for_training(p0)
    p0.kill()
    expect_exit(p1, time.monotonic(), [r"rank 1 of 2: .*rank 0 is unreachable"], "rank 0 killed")
    p0.wait()

    # A hung worker (SIGSTOP): the heartbeat timeout (3 s here) ends the other.
    p0, p1 = start_workers(a, extra_env={"DISTILL_TIMEOUT": "3"})
    wait_for_training(p0)
    p1.send_signal(signal.SIGSTOP)
    since = time.monotonic()
    expect_exit(p0, since, [r"rank 0 of 2: stopping: rank 1 sent no heartbeat for \d+ s"], "rank 1 stopped")
    p1.kill()
    p1.wait()

    # A worker that fails with an error of its own: the other quotes it.
    p0, p1 = start_workers(a, rank_args={1: ["-o", "Global.epochs=0"]})
    since = time.monotonic()
    _, err1 = p1.communicate(timeout=BOUND + 10)
    print("rank 1:", err1.strip())
    expect_exit(p0, since, [r"rank 0 of 2: .*failed: rank 1 failed: Global.epochs: must be >= 1"], "rank 1 failed")

    # The launcher: a killed worker is reported with its rank and signal; the run fails.
    launcher = subprocess.Popen([a.distill, "train", "--nproc", "2", "-c", RECIPE, "-o", "Global.epochs=200",
                                 "-o", "Global.print_batch_step=1", "-o", "DataLoader.Train.sampler.batch_size=8",
                                 "-o", "Global.output_dir=" + os.path.join(a.work, "launcher")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_training(launcher)
    children = sorted(int(d) for d in os.listdir("/proc") if d.isdigit() and parent_of(d) == launcher.pid)
    if len(children) != 2:
        fail("the launcher should have 2 workers, has %s" % children)
    os.kill(children[1], signal.SIGKILL)
    expect_exit(launcher, time.monotonic(), [r"rank 1 \(pid \d+\) was killed by signal 9", r"rank 0 of 2: .*rank 1"],
                "launcher")
    print("PASS")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["equivalence", "resume", "cache", "failure"])
    parser.add_argument("--distill", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--work", required=True)
    a = parser.parse_args()
    a.distill, a.report = os.path.abspath(a.distill), os.path.abspath(a.report)
    a.work = os.path.join(os.path.abspath(a.work), a.case)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    os.chdir(a.work)
    torch.set_num_threads(1)
    {"equivalence": equivalence, "resume": resume, "cache": cache, "failure": failure}[a.case](a)


if __name__ == "__main__":
    main()
