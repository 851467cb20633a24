#!/usr/bin/python3
"""PaddleClas's distillation configs, read unchanged (run by CTest as cli.paddleclas_yaml).

Writes one YAML recipe per PaddleClas distillation config (ppcls/configs/ImageNet/Distillation,
commit d178931f) in that format and with its constructs: anchors and aliases (&class_num,
*t_keys), True/False, empty keys (null), value strings (scale: 1.0/255.0, weight_decay: 1e-4),
`order: ''`, `- ToCHWImage:`, the keys distill does not act on (use_visualdl, to_static,
use_shared_memory, ...), and every model, loss, optimiser, schedule and transform those configs
use. Then trains each for one epoch on a tiny image folder with the reference's -o overrides
only (data paths, class counts, the teacher's weights), as a PaddleClas user would, and checks
the run and its report of ignored keys.

    paddleclas_yaml.py --distill BIN --data TINY_DATASET --models REFERENCE_MODELS --work DIR
"""
import argparse
import os
import re
import subprocess
import sys

GLOBAL = """# global configs
Global:
  checkpoints: null
  pretrained_model: null
  output_dir: ./output/{name}
  device: gpu
  save_interval: 1
  eval_during_train: True
  eval_interval: 1
  epochs: 100
  print_batch_step: 10
  use_visualdl: False
  # used for static mode and model export
  image_shape: [3, 32, 32]
  save_inference_dir: ./inference
{extra_global}
"""

AMP = """AMP:
  use_amp: {use_amp}
  use_fp16_test: False
  scale_loss: 128.0
  use_dynamic_loss_scaling: True
  use_promote: False
  level: O1
"""

NORMALIZE = """        - NormalizeImage:
            scale: {scale}
            mean: [0.485, 0.456, 0.406]
            std: [0.229, 0.224, 0.225]
            order: ''
"""

DATA = """DataLoader:
  Train:
    dataset:
      name: ImageNetDataset
      image_root: ./dataset/ILSVRC2012/
      cls_label_path: ./dataset/ILSVRC2012/train_list.txt
      transform_ops:
        - DecodeImage:
            to_rgb: True
            channel_first: False
        - RandCropImage:
            size: 32{pil}
        - RandFlipImage:
            flip_code: 1
{timm}{normalize}
    sampler:
      name: DistributedBatchSampler
      batch_size: 8
      drop_last: False
      shuffle: True
    loader:
      num_workers: 2
      use_shared_memory: True

  Eval:
    dataset: 
      name: ImageNetDataset
      image_root: ./dataset/ILSVRC2012/
      cls_label_path: ./dataset/ILSVRC2012/val_list.txt
      transform_ops:
        - DecodeImage:
            to_rgb: True
            channel_first: False
        - ResizeImage:
            resize_short: 36{pil}
        - CropImage:
            size: 32
{normalize}
    sampler:
      name: DistributedBatchSampler
      batch_size: 8
      drop_last: False
      shuffle: False
    loader:
      num_workers: 2
      use_shared_memory: True

Infer:
  infer_imgs: docs/images/inference_deployment/whl_demo.jpg
  batch_size: 10
  transforms:
    - DecodeImage:
        to_rgb: True
        channel_first: False
    - ResizeImage:
        resize_short: 36
    - CropImage:
        size: 32
    - NormalizeImage:
        scale: 1.0/255.0
        mean: [0.485, 0.456, 0.406]
        std: [0.229, 0.224, 0.225]
        order: ''
    - ToCHWImage:
  PostProcess:
    name: Topk
    topk: 5
    class_id_map_file: ppcls/utils/imagenet1k_label_list.txt

Metric:
    Train:
    - DistillationTopkAcc:
        model_key: "Student"
        topk: [1, 5]
    Eval:
    - DistillationTopkAcc:
        model_key: "Student"
        topk: [1, 5]
"""

COSINE = """Optimizer:
  name: Momentum
  momentum: 0.9
  lr:
    name: Cosine
    learning_rate: {lr}
    warmup_epoch: 5
  regularizer:
    name: 'L2'
    coeff: {coeff}
"""

MULTISTEP = """Optimizer:
  name: Momentum
  momentum: 0.9
  weight_decay: 1e-4
  lr:
    name: MultiStepDecay
    learning_rate: {lr}
    milestones: [30, 60, 90]
    step_each_epoch: 1
    gamma: 0.1
"""

PIECEWISE = """Optimizer:
  name: Momentum
  momentum: 0.9
  weight_decay: 1e-4
  lr:
    name: Piecewise
    learning_rate: 0.1
    decay_epochs: [30, 60, 90]
    values: [0.1, 0.01, 0.001, 0.0001]
"""


def pair_arch(teacher, student, frozen=True, teacher_keys="", student_keys="", class_num=True, ssld=False):
    """A DistillationModel of two backbones; with class_num: the &class_num anchor."""
    num = lambda: "        class_num: *class_num\n" if class_num else ""
    return ("Arch:\n  name: \"DistillationModel\"\n" +
            ("  class_num: &class_num 1000\n" if class_num else "") +
            "  # if not null, its lengths should be same as models\n  pretrained_list:\n"
            "  freeze_params_list:\n  - %s\n  - False\n  infer_model_name: \"Student\"\n  models:\n" % frozen +
            "    - Teacher:\n        name: %s\n%s        pretrained: %s\n%s%s" % (
                teacher, num(), "True" if frozen else "False", "        use_ssld: True\n" if ssld else "", teacher_keys) +
            "    - Student:\n        name: %s\n%s        pretrained: False\n%s" % (student, num(), student_keys))


def loss(*terms):
    return ("# loss function config for traing/eval process\nLoss:\n  Train:\n" + "".join(terms) +
            "  Eval:\n    - CELoss:\n        weight: 1.0\n")


GT_S = "    - DistillationGTCELoss:\n        weight: 1.0\n        model_names: [\"Student\"]\n"
PAIR = "        model_name_pairs:\n        - [\"Student\", \"Teacher\"]\n"

AFD_ARCH = """Arch:
  name: "DistillationModel"
  pretrained_list:
  freeze_params_list:
  models:
    - Teacher:
        name: AttentionModel
        pretrained_list:
        freeze_params_list:
          - True
          - False
        models:
          - ResNet34:
              name: ResNet34
              pretrained: True
              return_patterns: &t_keys ["blocks[0]", "blocks[1]", "blocks[2]", "blocks[3]",
                                        "blocks[4]", "blocks[5]", "blocks[6]", "blocks[7]",
                                        "blocks[8]", "blocks[9]", "blocks[10]", "blocks[11]",
                                        "blocks[12]", "blocks[13]", "blocks[14]", "blocks[15]"]
          - LinearTransformTeacher:
              name: LinearTransformTeacher
              qk_dim: 128
              keys: *t_keys
              t_shapes: &t_shapes [[64, 8, 8], [64, 8, 8], [64, 8, 8], [128, 4, 4],
                                   [128, 4, 4], [128, 4, 4], [128, 4, 4], [256, 2, 2],
                                   [256, 2, 2], [256, 2, 2], [256, 2, 2], [256, 2, 2],
                                   [256, 2, 2], [512, 1, 1], [512, 1, 1], [512, 1, 1]]
    - Student:
        name: AttentionModel
        pretrained_list:
        freeze_params_list:
          - False
          - False
        models:
          - ResNet18:
              name: ResNet18
              pretrained: False
              return_patterns: &s_keys ["blocks[0]", "blocks[1]", "blocks[2]", "blocks[3]",
                                        "blocks[4]", "blocks[5]", "blocks[6]", "blocks[7]"]
          - LinearTransformStudent:
              name: LinearTransformStudent
              qk_dim: 128
              keys: *s_keys
              s_shapes: &s_shapes [[64, 8, 8], [64, 8, 8], [128, 4, 4], [128, 4, 4],
                                   [256, 2, 2], [256, 2, 2], [512, 1, 1], [512, 1, 1]]
              t_shapes: *t_shapes
  infer_model_name: "Student"
"""

AFD_LOSS = loss(
    "    - DistillationGTCELoss:\n        weight: 1.0\n        model_names: [\"Student\"]\n        key: logits\n",
    "    - DistillationKLDivLoss:\n        weight: 0.9\n        model_name_pairs: [[\"Student\", \"Teacher\"]]\n"
    "        temperature: 4\n        key: logits\n",
    "    - AFDLoss:\n        weight: 50.0\n        model_name_pair: [\"Student\", \"Teacher\"]\n"
    "        student_keys: [\"bilinear_key\", \"value\"]\n        teacher_keys: [\"query\", \"value\"]\n"
    "        s_shapes: *s_shapes\n        t_shapes: *t_shapes\n")

TIMM = """        - TimmAutoAugment:
            config_str: rand-m7-mstd0.5-inc1
            interpolation: bicubic
            img_size: 32
"""

# name -> (arch, loss, optimizer, AMP section or "", extra Global lines, PIL bicubic, scale)
CONFIGS = {
    "PPLCNet_x2_5_ssld": (pair_arch("ResNet50_vd", "PPLCNet_x2_5", ssld=True),
                          loss("    - DistillationDMLLoss:\n        weight: 1.0\n" + PAIR),
                          COSINE.format(lr=0.2, coeff=0.00004), "AMP:\n  scale_loss: 128.0\n  use_dynamic_loss_scaling: True\n"
                          "  # O1: mixed fp16\n  level: O1\n", "  to_static: True", False, "1.0/255.0"),
    "PPLCNet_x1_0_ssld": (pair_arch("ResNet50_vd", "PPLCNet_x1_0", ssld=True).replace(
                              "        pretrained: False\n", "        pretrained: False\n        dropout_prob: 0.0\n"),
                          loss("    - DistillationDMLLoss:\n        weight: 1.0\n" + PAIR),
                          COSINE.format(lr=0.4, coeff=0.00001), AMP.format(use_amp="True"), "  to_static: False", False,
                          "1.0/255.0"),
    "PPLCNet_x2_5_dml": (pair_arch("PPLCNet_x2_5", "PPLCNet_x2_5", frozen=False),
                         loss("    - DistillationGTCELoss:\n        weight: 1.0\n        model_names: [\"Student\", \"Teacher\"]\n",
                              "    - DistillationDMLLoss:\n        weight: 1.0\n" + PAIR),
                         COSINE.format(lr=0.4, coeff=0.00004), AMP.format(use_amp="True"), "", False, "1.0/255.0"),
    "PPLCNet_x2_5_udml": (pair_arch("PPLCNet_x2_5", "PPLCNet_x2_5", frozen=False,
                                    teacher_keys="        return_patterns: [\"blocks3\", \"blocks4\", \"blocks5\", \"blocks6\"]\n",
                                    student_keys="        return_patterns: [\"blocks3\", \"blocks4\", \"blocks5\", \"blocks6\"]\n"),
                          loss("    - DistillationGTCELoss:\n       weight: 1.0\n       key: logits\n"
                               "       model_names: [\"Student\", \"Teacher\"]\n",
                               "    - DistillationDMLLoss:\n        weight: 1.0\n        key: logits\n" + PAIR,
                               "    - DistillationDistanceLoss:\n        weight: 1.0\n        key: \"blocks5\"\n" + PAIR),
                          COSINE.format(lr=0.4, coeff=0.00004), AMP.format(use_amp="True"), "", False, "1.0/255.0"),
    "mv3_large_x1_0_distill_mv3_small_x1_0": (
        pair_arch("MobileNetV3_large_x1_0", "MobileNetV3_small_x1_0", ssld=True).replace(
            "        pretrained: False\n", "        pretrained: False\n        dropout_prob: null\n"),
        loss("    - DistillationCELoss:\n        weight: 1.0\n" + PAIR),
        COSINE.format(lr=0.65, coeff=0.00001), AMP.format(use_amp="False"), "  use_dali: false", False, "0.00392157"),
    "res2net200_vd_distill_pphgnet_base": (
        pair_arch("Res2Net200_vd_26w_4s", "PPHGNet_base", ssld=True),
        loss("    - DistillationCELoss:\n        weight: 1.0\n" + PAIR),
        COSINE.format(lr=0.5, coeff=0.00004), AMP.format(use_amp="True"), "  use_dali: false", True, "0.00392157"),
    "resnet34_distill_resnet18_afd": (AFD_ARCH, AFD_LOSS, MULTISTEP.format(lr=0.1), AMP.format(use_amp="False"), "", True,
                                      "0.00392157"),
    "resnet34_distill_resnet18_dkd": (pair_arch("ResNet34", "ResNet18", class_num=False),
                                      loss(GT_S, "    - DistillationDKDLoss:\n        weight: 1.0\n" + PAIR +
                                           "        temperature: 1\n        alpha: 1.0\n        beta: 1.0\n"),
                                      MULTISTEP.format(lr=0.2), AMP.format(use_amp="False"), "", False, "0.00392157"),
    "resnet34_distill_resnet18_dist": (pair_arch("ResNet34", "ResNet18"),
                                       loss(GT_S, "    - DistillationDISTLoss:\n        weight: 2.0\n" + PAIR),
                                       PIECEWISE, AMP.format(use_amp="False"), "  to_static: False", False, "1.0/255.0"),
    "resnet34_distill_resnet18_mgd": (pair_arch("ResNet34", "ResNet18",
                                                teacher_keys="        return_patterns: &t_stages [\"blocks[2]\", \"blocks[6]\", "
                                                             "\"blocks[12]\", \"blocks[15]\"]\n",
                                                student_keys="        return_patterns: &s_stages [\"blocks[1]\", \"blocks[3]\", "
                                                             "\"blocks[5]\", \"blocks[7]\"]\n"),
                                      loss(GT_S, "    - DistillationPairLoss:\n        weight: 1.0\n        base_loss_name: MGDLoss\n"
                                           "        model_name_pairs: [[\"Student\", \"Teacher\"]]\n        s_key: \"blocks[7]\"\n"
                                           "        t_key: \"blocks[15]\"\n        name: \"loss_mgd\"\n"
                                           "        student_channels: 512\n        teacher_channels: 512\n"),
                                      PIECEWISE, AMP.format(use_amp="False"), "", False, "1.0/255.0"),
    "resnet34_distill_resnet18_pefd": (pair_arch("ResNet34", "ResNet18",
                                                 teacher_keys="        return_patterns: &t_stages [\"avg_pool\"]\n",
                                                 student_keys="        return_patterns: &s_stages [\"avg_pool\"]\n"),
                                       loss(GT_S, "    - DistillationPairLoss:\n        weight: 25.0\n        base_loss_name: PEFDLoss\n"
                                            "        model_name_pairs: [[\"Student\", \"Teacher\"]]\n        s_key: \"avg_pool\"\n"
                                            "        t_key: \"avg_pool\"\n        name: \"loss_pefd\"\n"
                                            "        student_channel: 512\n        teacher_channel: 512\n"),
                                       PIECEWISE, "", "  to_static: False", False, "1.0/255.0"),
    "resnet34_distill_resnet18_wsl": (pair_arch("ResNet34", "ResNet18", class_num=False),
                                      loss(GT_S, "    - DistillationWSLLoss:\n        weight: 2.5\n" + PAIR + "        temperature: 2\n"),
                                      MULTISTEP.format(lr=0.1), AMP.format(use_amp="False"), "", False, "0.00392157"),
    "resnet34_distill_resnet18_skd": (pair_arch("ResNet34", "ResNet18", class_num=False),
                                      loss("    - DistillationSKDLoss:\n        weight: 1.0\n" + PAIR +
                                           "        temperature: 1.0\n        multiplier: 2.0\n        alpha: 0.9\n"),
                                      MULTISTEP.format(lr=0.1), AMP.format(use_amp="False"), "", False, "0.00392157"),
}


def write(name, work):
    arch, loss_text, optimizer, amp, extra_global, pil, scale = CONFIGS[name]
    pil_lines = "\n            interpolation: bicubic\n            backend: pil" if pil else ""
    text = (GLOBAL.format(name=name, extra_global=extra_global) + amp + "\n# model architecture\n" + arch + "\n" +
            loss_text + "\n" + optimizer + "\n# data loader for train and eval\n" +
            DATA.format(pil=pil_lines, normalize=NORMALIZE.format(scale=scale), timm=TIMM if name.startswith("res2net") else ""))
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--distill", "--data", "--models", "--work"):
        parser.add_argument(flag, required=True)
    a = parser.parse_args()
    os.makedirs(a.work, exist_ok=True)
    data = [
        "-o", "DataLoader.Train.dataset.image_root=" + a.data,
        "-o", "DataLoader.Train.dataset.cls_label_path=" + os.path.join(a.data, "train_list.txt"),
        "-o", "DataLoader.Eval.dataset.image_root=" + a.data,
        "-o", "DataLoader.Eval.dataset.cls_label_path=" + os.path.join(a.data, "val_list.txt"),
        "-o", "Global.epochs=1", "-o", "Global.device=cpu",
        # The teachers here are untrained (random or fixture weights): the teacher check would stop them.
        "-o", "Global.teacher_check=False"]
    for name in CONFIGS:
        path = write(name, a.work)
        if name.endswith("afd"):
            models = ["Teacher.models.0.ResNet34", "Student.models.0.ResNet18"]
        else:
            models = ["Teacher", "Student"]
        index = {"Teacher": 0, "Student": 1}
        overrides = ["-o", "Global.output_dir=" + os.path.join(a.work, "out", name)]
        if CONFIGS[name][3]:
            overrides += ["-o", "AMP.use_amp=False"]  # float16 AMP needs CUDA
        classes = 4
        teacher = "False"
        if name.startswith("PPLCNet") and name.endswith("ssld"):
            # A PaddleClas teacher: ResNet50_vd weights written the paddle.save way (10 classes),
            # named without the extension as PaddleClas's pretrained paths are.
            classes, teacher = 10, os.path.join(a.models, "ResNet50_vd")
        for m in models:
            root = m.split(".")[0]
            overrides += ["-o", "Arch.models.%d.%s.class_num=%d" % (index[root], m, classes)]
        overrides += ["-o", "Arch.models.0.%s.pretrained=%s" % (models[0], teacher)]
        command = [a.distill, "train", "-c", path] + data + overrides
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print("$ " + " ".join(command) + "\n" + done.stdout, flush=True)
        if done.returncode != 0:
            fail("%s: exit status %d" % (name, done.returncode))
        if not re.search(r"eval epoch 1 \| top1 [0-9.]+.*done: 1 epochs", done.stdout, re.S):
            fail(name + ": no finished epoch in the output")
        if done.stdout.count("recipe keys accepted but not acted on") != 1:
            fail(name + ": the ignored keys are not reported exactly once")
        for key in ("Global.use_visualdl", "Global.save_inference_dir", "DataLoader.Train.loader.use_shared_memory"):
            if "  " + key + ": " not in done.stdout:
                fail("%s: %s is not reported as ignored" % (name, key))
    # A typo stays an error naming the YAML line, and a new key no recipe knows too.
    data += ["-o", "Arch.models.0.Teacher.pretrained=False", "-o", "AMP.use_amp=False"]
    path = os.path.join(a.work, "resnet34_distill_resnet18_dkd.yaml")
    with open(path) as f:
        text = f.read()
    with open(os.path.join(a.work, "typo.yaml"), "w") as f:
        f.write(text.replace("        temperature: 1\n", "        temprature: 1\n"))
    done = subprocess.run([a.distill, "train", "-c", os.path.join(a.work, "typo.yaml")] + data,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(done.stdout)
    line = text[:text.index("        temperature: 1\n")].count("\n") + 1
    if done.returncode != 1 or "temprature" not in done.stdout or "line %d" % line not in done.stdout:
        fail("a mistyped key is not an error naming it and its line %d" % line)
    done = subprocess.run([a.distill, "train", "-c", path, "-o", "Arch.models.1.Student.clas_num=4"] + data,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(done.stdout)
    if done.returncode != 1 or "Arch.models[1].Student.clas_num" not in done.stdout:
        fail("a mistyped new key from -o is not an error naming it")
    print("PASS: %d PaddleClas-format recipes trained" % len(CONFIGS))


if __name__ == "__main__":
    main()
