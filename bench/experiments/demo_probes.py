"""Probes of the Fashion-MNIST main job's student settings (issue 20: can a distilled student
close half of the teacher-student gap in the demo's budget?). Each probe is one `distill train`
of a variant of examples/recipes/fashion_mnist/<recipe>.json, two at a time with one intra-op
thread each, as the demo runs them; the distilled ones learn from a teacher cache.
Prints one line per probe: top-1, points over the flips-only baseline, share of the gap.

  /usr/bin/python3 bench/experiments/demo_probes.py [--distill build/examples/distill]
      [--teacher output/fashion_mnist/teacher] [--work /tmp/demo_probes] [--only a,b,...]
      [--seed 0] [--validation] [--teacher-recipe R]

--validation trains on the first 50000 training images and scores on the other 10000, so that
settings are chosen without the test set. The default teacher trained on all 60000, and what it
learnt from the held-out images reaches the student through its soft labels; for a clean
held-out score give --teacher a teacher trained on the 50000 (docs/results-notes.md says how).
No gap is printed then. Use one --work folder per seed and per --validation: the caches differ.

The teacher folder must hold a finished `distill train -c examples/recipes/fashion_mnist/teacher.json`.
Results: docs/results-notes.md ("Probes towards half the gap", 2026-12-02, and "Settings chosen
on held-out training images", 2026-12-02, next session).
"""
import argparse
import copy
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPES = os.path.join(SOURCE, "examples", "recipes", "fashion_mnist")
TEACHER_INIT = "<the student's start, made from the teacher>"
CROP = {"RandCropImage": {"size": [28, 28], "scale": [0.5, 1.0]}}  # random-resized crop, then flips


def recipe(name):
    with open(os.path.join(RECIPES, name + ".json")) as f:
        return json.load(f)


def term(r, key):
    return next(t[key] for t in r["Loss"]["Train"] if key in t)


def with_crop(r, crop=CROP):
    r = copy.deepcopy(r)
    r["DataLoader"]["Train"]["dataset"]["transform_ops"].insert(1, crop)
    return r


# Nearly a translation: a crop of 85-100 % of the area, aspect within 10 %, resized back.
MILD = {"RandCropImage": {"size": [28, 28], "scale": [0.85, 1.0], "ratio": [0.9, 1.1]}}


def kd_dist(kd_weight=1.0, dist_weight=2.0, temperature=4.0):
    r = kd_variant(kl_weight=kd_weight, temperature=temperature)
    r["Loss"]["Train"].append({"DistillationDISTLoss": dict(term(recipe("dist"), "DistillationDISTLoss"), weight=dist_weight)})
    return r


def kd_variant(kl_weight=1.0, with_ce=True, temperature=4.0):
    r = recipe("kd")
    term(r, "DistillationKLDivLoss")["weight"] = kl_weight
    term(r, "DistillationKLDivLoss")["temperature"] = temperature
    if not with_ce:
        r["Loss"]["Train"] = [t for t in r["Loss"]["Train"] if "DistillationGTCELoss" not in t]
    return r


def with_term(loss, options, with_ce=True):
    """The KD recipe with its KL term replaced by `loss` (a logit loss the teacher cache serves)."""
    r = recipe("kd")
    kept = ["DistillationGTCELoss"] if with_ce else []
    r["Loss"]["Train"] = [t for t in r["Loss"]["Train"] if next(iter(t)) in kept]
    r["Loss"]["Train"].append({loss: dict(options, model_name_pairs=[["Student", "Teacher"]])})
    return r


def from_teacher(r):
    """The student starts from the teacher's weights where their names agree (DistilBERT's
    initialisation: the first unit of every stage and the head; the teacher's second units are
    left out)."""
    r = copy.deepcopy(r)
    for entry in r["Arch"]["models"]:
        if "Student" in entry:
            entry["Student"]["pretrained"] = TEACHER_INIT
    return r


# name: (recipe, cache (a key of `caches` in main, or None), epochs)
PROBES = {
    "baseline": (lambda: recipe("baseline"), None, 5),
    "kd": (lambda: recipe("kd"), "flip", 5),
    "dist": (lambda: recipe("dist"), "flip", 5),
    "kd_kl2": (lambda: kd_variant(kl_weight=2.0), "flip", 5),
    "kd_no_ce": (lambda: kd_variant(with_ce=False), "flip", 5),
    "kd+dist": (lambda: kd_dist(), "flip", 5),
    "kd_kl2+dist": (lambda: kd_dist(kd_weight=2.0), "flip", 5),
    "kd+dist4": (lambda: kd_dist(dist_weight=4.0), "flip", 5),
    "kd_t2": (lambda: kd_variant(temperature=2.0), "flip", 5),
    "kd_t2+dist": (lambda: kd_dist(temperature=2.0), "flip", 5),
    "kd2+dist4": (lambda: kd_dist(kd_weight=2.0, dist_weight=4.0), "flip", 5),
    # The reference's ImageNet settings (docs/reference.md): CE + 2.5 WSL at T = 2; SKD alone
    # (its own CE at alpha 0.9), T = 1, multiplier 2.
    "wsl": (lambda: with_term("DistillationWSLLoss", {"weight": 2.5, "temperature": 2.0}), "flip", 5),
    "skd": (lambda: with_term("DistillationSKDLoss", {"weight": 1.0, "temperature": 1.0, "multiplier": 2.0,
                                                      "alpha": 0.9}, with_ce=False), "flip", 5),
    # NKD and CTKD as their recipes set them, from the cache of every logit (possible since bf0b4a9).
    "nkd": (lambda: recipe("nkd"), "flip", 5),
    "ctkd": (lambda: recipe("ctkd"), "flip", 5),
    "init_ce": (lambda: from_teacher(recipe("baseline")), None, 5),
    "kd_init": (lambda: from_teacher(recipe("kd")), "flip", 5),
    "dist_init": (lambda: from_teacher(recipe("dist")), "flip", 5),
    "kd+dist_init": (lambda: from_teacher(kd_dist()), "flip", 5),
    "baseline_mild": (lambda: with_crop(recipe("baseline"), MILD), None, 5),
    "kd_mild": (lambda: with_crop(recipe("kd"), MILD), "mild", 5),
    "kd+dist4_mild": (lambda: with_crop(kd_dist(dist_weight=4.0), MILD), "mild", 5),
    "baseline_8ep": (lambda: recipe("baseline"), None, 8),
    "kd+dist_8ep": (lambda: kd_dist(), "flip", 8),
    "baseline_15ep": (lambda: recipe("baseline"), None, 15),
    "kd+dist4_15ep": (lambda: kd_dist(dist_weight=4.0), "flip", 15),
    "baseline_crop": (lambda: with_crop(recipe("baseline")), None, 5),
    "kd_crop": (lambda: with_crop(recipe("kd")), "crop", 5),
    "dist_crop": (lambda: with_crop(recipe("dist")), "crop", 5),
}


def split_for_validation(root, train=50000):
    """A Fashion-MNIST folder whose "train" files hold the first `train` training images and
    whose "t10k" (test) files hold the rest, so that probes choose settings without the test set."""
    import gzip
    import struct
    source = "/usr/share/datasets/fashion-mnist"
    os.makedirs(root, exist_ok=True)
    for kind, item in (("images", 28 * 28), ("labels", 1)):
        suffix = "-%s-idx%d-ubyte.gz" % (kind, 3 if kind == "images" else 1)
        with gzip.open(os.path.join(source, "train" + suffix)) as f:
            data = f.read()
        header = 16 if kind == "images" else 8
        for name, start, end in (("train", 0, train), ("t10k", train, 60000)):
            head = bytearray(data[:header])
            struct.pack_into(">I", head, 4, end - start)
            with gzip.open(os.path.join(root, name + suffix), "wb", compresslevel=1) as f:
                f.write(bytes(head) + data[header + start * item:header + end * item])
    return root


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--distill", default=os.path.join(SOURCE, "build", "examples", "distill"))
    p.add_argument("--teacher", default=os.path.join(SOURCE, "output", "fashion_mnist", "teacher"))
    p.add_argument("--work", default="/tmp/demo_probes")
    p.add_argument("--only", default=",".join(PROBES))
    p.add_argument("--teacher-recipe", default=None,
                   help="the recipe --teacher was trained by, when its Arch differs from teacher.json's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation", action="store_true",
                   help="train on the first 50000 training images and score on the other 10000 (not the test set)")
    a = p.parse_args()
    names = a.only.split(",")
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        sys.exit("unknown probe(s) %s; known: %s" % (unknown, ", ".join(PROBES)))
    os.makedirs(a.work, exist_ok=True)
    teacher = os.path.abspath(os.path.join(a.teacher, "best_model_student.pt"))
    with open(os.path.join(a.teacher, "metrics.jsonl")) as f:
        teacher_top1 = [json.loads(l) for l in f if '"summary"' in l][-1]["best_top1"] * 100

    recipes = {name: PROBES[name][0]() for name in names}
    init = os.path.join(os.path.abspath(a.work), "student_from_teacher.pt")
    if any(TEACHER_INIT in json.dumps(r) for r in recipes.values()):
        import torch  # only for these probes: the first unit of every stage and the head, same names
        weights = torch.load(teacher)
        torch.save({k: v for k, v in weights.items() if re.match(r"(stages\.\d+\.0\.|fc\.)", k)}, init)

    teacher_arch = None
    if a.teacher_recipe:
        with open(a.teacher_recipe) as f:
            teacher_arch = next(e["Teacher"] for e in json.load(f)["Arch"]["models"] if "Teacher" in e)
    data_root = split_for_validation(os.path.join(a.work, "validation_data")) if a.validation else None

    def write(name, r):
        if data_root:
            for split in ("Train", "Eval"):
                r["DataLoader"][split]["dataset"]["root"] = data_root
        for entry in r["Arch"]["models"]:
            for role in entry.values():
                if role.get("pretrained") == TEACHER_INIT:
                    role["pretrained"] = init
            if "Teacher" in entry:
                entry["Teacher"] = dict(teacher_arch or entry["Teacher"], pretrained=teacher)
        path = os.path.join(a.work, name + ".json")
        with open(path, "w") as f:
            json.dump(r, f, indent=1)
        return path

    def run(command, log):
        with open(log, "w") as out:
            return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=SOURCE).returncode

    caches = {"flip": (recipe("kd"), 2), "crop": (with_crop(recipe("kd")), 8), "mild": (with_crop(recipe("kd"), MILD), 8)}
    for kind in sorted({PROBES[n][1] for n in names} - {None}):
        r, views = caches[kind]
        out = os.path.join(a.work, "cache_" + kind)
        if run([a.distill, "cache", "-c", write("cache_" + kind, r), "--views", str(views), "--topk", "0", "--out", out],
               out + ".log"):
            sys.exit("distill cache failed: see %s.log" % out)

    def probe(name):
        _, cache, epochs = PROBES[name]
        command = [a.distill, "train", "-c", write(name, recipes[name]), "--threads", "1", "-o", "Global.seed=%d" % a.seed,
                   "-o", "Global.output_dir=" + os.path.join(a.work, "runs", name), "-o", "Global.print_batch_step=200"]
        for key in ("epochs", "eval_interval", "save_interval"):
            command += ["-o", "Global.%s=%d" % (key, epochs)]
        if cache:
            command += ["-o", "Global.teacher_cache=" + os.path.join(a.work, "cache_" + cache)]
        log = os.path.join(a.work, name + ".log")
        rc = run(command, log)
        done = re.search(r"done: \d+ epochs in (\S+) .*?top-1 best ([0-9.]+)", open(log).read())
        return name, rc, (float(done.group(2)) * 100, done.group(1)) if done and rc == 0 else None

    with ThreadPoolExecutor(2) as pool:
        results = {name: outcome for name, rc, outcome in pool.map(probe, names)}
    print("seed %d, scored on %s" % (a.seed, "10000 held-out training images" if a.validation else "the test set"))
    print("teacher %.2f %% (scored by its own training run)" % teacher_top1)
    for name in names:
        outcome = results[name]
        if outcome is None:
            print("%-14s FAILED (see %s.log)" % (name, os.path.join(a.work, name)))
            continue
        top1, took = outcome
        epochs_suffix = re.search(r"_\d+ep$", name)
        base_name = "baseline" + (epochs_suffix.group(0) if epochs_suffix else "")
        base = results.get(base_name)
        line = "%-14s %6.2f %%  %s" % (name, top1, took)
        if base and not name.startswith("baseline"):
            gain = top1 - base[0]
            line += "  %+.2f over %s" % (gain, base_name)
            if not a.validation:  # the script cannot tell whether the teacher saw the held-out images
                line += ", %.0f %% of the gap" % (100 * gain / (teacher_top1 - base[0]))
        print(line)


if __name__ == "__main__":
    main()
