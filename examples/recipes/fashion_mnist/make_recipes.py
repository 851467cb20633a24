#!/usr/bin/env python3
"""Writes examples/recipes/fashion_mnist/*.json (the teacher, the baseline and the
methods of the Fashion-MNIST demo) and labels.txt.
Run from the repository root: python3 examples/recipes/fashion_mnist/make_recipes.py"""
import json
norm = {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.286, 0.286, 0.286], "std": [0.353, 0.353, 0.353], "order": ""}}
def loaders(train_tf):
    return {"Train": {"dataset": {"name": "FashionMNIST", "split": "train", "limit": 0, "transform_ops": train_tf},
                      "sampler": {"name": "DistributedBatchSampler", "batch_size": 128, "drop_last": False, "shuffle": True},
                      "loader": {"num_workers": 2}},
            "Eval": {"dataset": {"name": "FashionMNIST", "split": "test", "limit": 0, "transform_ops": [{"DecodeImage": {"to_rgb": True}}, norm]},
                     "sampler": {"name": "DistributedBatchSampler", "batch_size": 500, "drop_last": False, "shuffle": False},
                     "loader": {"num_workers": 2}}}
train_tf = [{"DecodeImage": {"to_rgb": True}}, {"RandFlipImage": {"flip_code": 1}}, norm]
TW, SW = [16, 32, 64], [16, 32, 64]  # teacher and student widths (per stage)
teacher = {"name": "ConvNet", "widths": TW, "depth": 2, "class_num": 10}
student = {"name": "ConvNet", "widths": SW, "depth": 1, "class_num": 10}
TEACHER_EPOCHS, STUDENT_EPOCHS = 10, 5  # the demo's student epochs (its --epochs default)
# DKD's warm-up (mdistiller: 20 of 240 epochs): here the factor is 1/2 in epoch 1 and 1 after
# (it moves a whole epoch at a time).
WARMUP = 2
def recipe(name, models, freeze, infer, losses, epochs=STUDENT_EPOCHS):
    return {
      "Global": {"output_dir": f"output/fashion_mnist/{name}", "device": "cpu", "seed": 0, "epochs": epochs,
                 "print_batch_step": 50, "save_interval": epochs, "eval_during_train": True, "eval_interval": 1,
                 "checkpoints": None, "pretrained_model": None, "image_shape": [3, 28, 28],
                 "channels_last": True},
      "Arch": {"name": "DistillationModel", "class_num": 10, "freeze_params_list": freeze, "infer_model_name": infer,
               "models": models},
      "Loss": {"Train": losses, "Eval": [{"CELoss": {"weight": 1.0, "model_names": [infer]}}]},
      "Optimizer": {"name": "Momentum", "momentum": 0.9, "weight_decay": 5e-4,
                    "lr": {"name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 0}},
      "DataLoader": loaders(train_tf),
      "Metric": {"Eval": [{"DistillationTopkAcc": {"model_key": infer, "topk": [1, 5]}}]},
      "Infer": {"infer_imgs": "", "batch_size": 1, "transforms": [{"DecodeImage": {"to_rgb": True}}, norm],
                "PostProcess": {"name": "Topk", "topk": 3, "class_id_map_file": "examples/recipes/fashion_mnist/labels.txt"}},
    }
T = {"Teacher": dict(teacher, pretrained="output/fashion_mnist/teacher/best_model_student.pt")}
S = {"Student": student}
gt = {"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}}
recipes = {
  # The demo trains it with one evaluation, at the end (its weights are the last epoch's, not
  # picked on the test set); `distill train` evaluates every epoch.
  "teacher": recipe("teacher", [{"Teacher": teacher}], [False], "Teacher",
                    [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Teacher"]}}], epochs=TEACHER_EPOCHS),
  "baseline": recipe("baseline", [{"Student": student}], [False], "Student", [gt]),
  "kd": recipe("kd", [T, S], [True, False], "Student",
               [gt, {"DistillationKLDivLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]], "temperature": 4}}]),
  "dkd": recipe("dkd", [T, S], [True, False], "Student",
                [gt, {"DistillationDKDLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]], "temperature": 4, "alpha": 1.0, "beta": 8.0,
                                                     "warmup_epochs": WARMUP}}]),
  "dist": recipe("dist", [T, S], [True, False], "Student",
                 [gt, {"DistillationDISTLoss": {"weight": 2.0, "model_name_pairs": [["Student", "Teacher"]]}}]),
  "dml": recipe("dml", [{"Teacher": dict(student)}, S], [False, False], "Student",
                [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student", "Teacher"]}},
                 {"DistillationDMLLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}]),
  "mgd": recipe("mgd", [{"Teacher": dict(T["Teacher"], return_patterns=["stages[2]"])},
                        {"Student": dict(student, return_patterns=["stages[2]"])}], [True, False], "Student",
                [gt, {"DistillationPairLoss": {"weight": 1.0, "base_loss_name": "MGDLoss", "model_name_pairs": [["Student", "Teacher"]],
                                               "s_keys": ["stages[2]"], "t_keys": ["stages[2]"], "name": "loss_mgd",
                                               "student_channels": SW[2], "teacher_channels": TW[2]}}]),
}
# The methods of docs/methods.md (the demo's --methods all). Settings are the papers' unless a
# comment says otherwise; docs/results-notes.md discusses what they gave in 3 epochs.
pair = [["Student", "Teacher"]]
Tp = lambda patterns: {"Teacher": dict(T["Teacher"], return_patterns=patterns)}
Sp = lambda patterns: {"Student": dict(student, return_patterns=patterns)}
teacher2 = {"name": "ConvNet", "widths": [48, 96, 192], "depth": 1, "class_num": 10}
stages = ["stages[0]", "stages[1]", "stages[2]"]
pre = [k + ":pre_relu" for k in stages]
recipes.update({
  "teacher2": recipe("teacher2", [{"Teacher2": teacher2}], [False], "Teacher2",
                     [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Teacher2"]}}]),
  "nkd": recipe("nkd", [T, S], [True, False], "Student",
                [gt, {"DistillationNKDLoss": {"weight": 1.0, "model_name_pairs": pair, "temperature": 1.0, "gamma": 1.5}}]),
  "ctkd": recipe("ctkd", [T, S], [True, False], "Student",
                 [gt, {"DistillationCTKDLoss": {"weight": 1.0, "model_name_pairs": pair}}]),
  "kd_std": recipe("kd_std", [T, S], [True, False], "Student",
                   [gt, {"DistillationKLDivLoss": {"weight": 9.0, "model_name_pairs": pair, "temperature": 2.0, "standardize": True}}]),
  "multi_teacher": recipe("multi_teacher", [T, {"Teacher2": dict(teacher2, pretrained="output/fashion_mnist/teacher2/best_model_student.pt")}, S],
                          [True, True, False], "Student",
                          [gt, {"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "KLDivLoss",
                                                                 "teachers": ["Teacher", "Teacher2"], "temperature": 4.0}}]),
  "fitnet": recipe("fitnet", [Tp(["stages[1]"]), Sp(["stages[1]"])], [True, False], "Student",
                   [gt, {"DistillationFitNetLoss": {"weight": 100.0, "model_name_pairs": pair, "key": "stages[1]",
                                                    "student_shape": [SW[1], 7, 7], "teacher_shape": [TW[1], 7, 7]}}]),
  "at": recipe("at", [Tp(stages), Sp(stages)], [True, False], "Student",
               [gt, {"DistillationATLoss": {"weight": 1000.0, "model_name_pairs": pair, "s_keys": stages, "t_keys": stages, "p": 2.0}}]),
  # The last stage only: the earlier stages end in a max-pool, so their pre-ReLU maps are twice as large.
  "ofd": recipe("ofd", [Tp(["stages[2]:pre_relu"]), Sp(["stages[2]:pre_relu"])], [True, False], "Student",
                [gt, {"DistillationOFDLoss": {"weight": 1e-4, "s_keys": ["stages[2]:pre_relu"], "t_keys": ["stages[2]:pre_relu"],
                                              "student_channels": [SW[2]], "teacher_channels": [TW[2]]}}]),
  "reviewkd": recipe("reviewkd", [Tp(pre + ["avg_pool"]), Sp(pre + ["avg_pool"])], [True, False], "Student",
                     [gt, {"DistillationReviewKDLoss": {"weight": 1.0, "s_keys": pre + ["avg_pool"], "t_keys": pre + ["avg_pool"],
                                                        "student_channels": SW + SW[2:], "teacher_channels": TW + TW[2:]}}]),
  # 4096 negatives instead of the official 16384: gathering 16384 memory rows per sample costs
  # more than the rest of a CPU step.
  "crd": recipe("crd", [Tp(["avg_pool"]), Sp(["avg_pool"])], [True, False], "Student",
                [gt, {"DistillationCRDLoss": {"weight": 0.8, "student_dim": SW[2], "teacher_dim": TW[2], "n_data": 60000,
                                              "nce_k": 4096}}]),
})
for name, r in recipes.items():
    with open(f"examples/recipes/fashion_mnist/{name}.json", "w") as f:
        json.dump(r, f, indent=2); f.write("\n")
labels = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
with open("examples/recipes/fashion_mnist/labels.txt", "w") as f:
    for i, l in enumerate(labels): f.write(f"{i} {l}\n")
print("ok")
