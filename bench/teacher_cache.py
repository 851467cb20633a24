#!/usr/bin/python3
"""Training throughput with a teacher cache against the student alone and against online KD.

    /usr/bin/python3 bench/teacher_cache.py --distill build/examples/distill --work /tmp/cache_bench \
        [--threads 2] [--setting fashion_mnist,imagenet] > bench/results/teacher_cache_cpu.txt

fashion_mnist: the demo's recipes (examples/recipes/fashion_mnist), 30000 training images,
  3 epochs, batch 128: baseline.json (student alone), kd.json (online teacher) and kd.json with
  -o Global.teacher_cache (a cache of 2 views, all 10 logits: the recipe's only augmentation is
  a flip, so two views are all there are).
imagenet: ResNet34 teacher -> ResNet18 student (examples/recipes/dkd.json's models, KD term),
  1000 classes, 224x224 random crops of 256x256 synthetic JPEGs, batch 16, 1 epoch of 160
  images; cache of 2 views, top-10 logits in float16.

Teachers have random weights: throughput does not depend on them. Reported: the median of the
training loop's images/s windows (print_batch_step) after the first window, the wall time of
each command, and the cache's size on disk. The baseline and the cached run alternate --rounds
times (default 3) and the best of each is kept; the online run is measured once.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.join(HERE, "..", "examples", "recipes")


def run(command):
    start = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(command), done.stdout))
    return done.stdout, seconds


def images_per_second(log):
    rates = [float(m) for m in re.findall(r"\| ([0-9.]+) img/s", log)]
    return statistics.median(rates[1:] if len(rates) > 2 else rates)


def dir_size(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def measure(a, name, recipe, common, cache_args):
    w = os.path.join(a.work, name)
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    threads = ["--threads", str(a.threads)]

    def train(r, extra, out):
        log, seconds = run([a.distill, "train", "-c", r] + threads + common + extra + ["-o", "Global.output_dir=" + w + "/" + out])
        return images_per_second(log), seconds

    log, cache_seconds = run([a.distill, "cache", "-c", recipe["kd"]] + threads + common + cache_args + ["--out", w + "/cache"])
    size = dir_size(w + "/cache")
    print("%s: distill cache %s: %.1f s, %d bytes on disk" % (name, " ".join(cache_args), cache_seconds, size))
    online = train(recipe["kd"], [], "online")
    # The baseline and the cached run, interleaved a.rounds times (this machine is noisy): the best of each.
    base, cached = (0, 0), (0, 0)
    for _ in range(a.rounds):
        base = max(base, train(recipe["baseline"], [], "baseline"))
        cached = max(cached, train(recipe["kd"], ["-o", "Global.teacher_cache=" + w + "/cache"], "cached"))
    print("%-34s %12s %10s %12s" % ("", "images/s", "x baseline", "wall s"))
    for label, (rate, seconds) in (("student alone (baseline)", base), ("online KD (teacher in the loop)", online),
                                   ("KD from the teacher cache", cached)):
        print("%-34s %12.1f %10.2f %12.1f" % (label, rate, base[0] / rate, seconds))
    print("%-34s %12s %10s %12.1f" % ("making the cache (once)", "", "", cache_seconds))
    print()


def synthetic_images(root, count):
    from PIL import Image
    import numpy as np
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    with open(os.path.join(root, "train_list.txt"), "w") as lines:
        for i in range(count):
            name = "images/%d.jpg" % i
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(os.path.join(root, name), quality=90)
            lines.write("%s %d\n" % (name, i % 1000))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--distill", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--setting", default="fashion_mnist,imagenet")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print("threads: %d intra-op (--threads), data loader workers: 1" % a.threads)
    print()
    settings = a.setting.split(",")
    if "fashion_mnist" in settings:
        fm = os.path.join(RECIPES, "fashion_mnist")
        common = ["-o", "DataLoader.Train.dataset.limit=30000", "-o", "Global.epochs=3", "-o", "Global.eval_during_train=false",
                  "-o", "Global.print_batch_step=20", "-o", "DataLoader.Train.loader.num_workers=1", "-o", "Global.save_interval=3"]
        recipe = {}
        for key in ("baseline", "kd"):  # the demo's recipes with the teacher's weight file left out
            r = json.load(open(os.path.join(fm, key + ".json")))
            for m in r["Arch"]["models"]:
                for v in m.values():
                    v.pop("pretrained", None)
            recipe[key] = os.path.join(a.work, "fashion_mnist_" + key + ".json")
            json.dump(r, open(recipe[key], "w"))
        measure(a, "fashion_mnist", recipe, common, ["--views", "2", "--topk", "0"])
    if "imagenet" in settings:
        root = os.path.join(a.work, "imagenet_images")
        if not os.path.exists(os.path.join(root, "train_list.txt")):
            synthetic_images(root, 160)
        r = json.load(open(os.path.join(RECIPES, "dkd.json")))
        r["Arch"]["models"][0]["Teacher"].pop("pretrained", None)
        r["Global"].update({"epochs": 1, "device": "cpu", "print_batch_step": 1, "eval_during_train": False})
        r.pop("AMP", None)
        r["DataLoader"]["Train"]["dataset"].update({"image_root": root, "cls_label_path": os.path.join(root, "train_list.txt")})
        r["DataLoader"]["Train"]["sampler"]["batch_size"] = 16
        r["DataLoader"]["Train"]["loader"] = {"num_workers": 1}
        r["DataLoader"].pop("Eval", None)
        r["Loss"]["Train"][1] = {"DistillationKLDivLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]], "temperature": 4}}
        r["Loss"].pop("Eval", None)
        kd = os.path.join(a.work, "imagenet_kd.json")
        json.dump(r, open(kd, "w"))
        base = json.loads(json.dumps(r))
        base["Arch"]["models"] = base["Arch"]["models"][1:]
        base["Arch"]["freeze_params_list"] = [False]
        base["Loss"]["Train"] = base["Loss"]["Train"][:1]
        baseline = os.path.join(a.work, "imagenet_baseline.json")
        json.dump(base, open(baseline, "w"))
        measure(a, "imagenet", {"baseline": baseline, "kd": kd}, [], ["--views", "2", "--topk", "10", "--dtype", "float16"])


if __name__ == "__main__":
    main()
