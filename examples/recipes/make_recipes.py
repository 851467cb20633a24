#!/usr/bin/env python3
"""Writes examples/recipes/{ssld,dml,udml,afd,dkd,dist,mgd}.json: the reference's seven
published ImageNet recipes (docs/reference.md §5) in its vocabulary; and the recipes of the
methods in docs/methods.md (nkd, ctkd, kd_standardize, multi_teacher, fitnet, ofd, reviewkd, crd, at).
Run from the repository root: python3 examples/recipes/make_recipes.py"""
import json
t34 = [f"blocks[{i}]" for i in range(16)]
s18 = [f"blocks[{i}]" for i in range(8)]
t_shapes = [[64,56,56]]*3 + [[128,28,28]]*4 + [[256,14,14]]*6 + [[512,7,7]]*3
s_shapes = [[64,56,56]]*2 + [[128,28,28]]*2 + [[256,14,14]]*2 + [[512,7,7]]*2
def r34(extra=None):
    d = {"name": "ResNet34", "layout": "torchvision", "class_num": 1000, "pretrained": "weights/resnet34.pth"}
    d.update(extra or {}); return d
def r18(extra=None):
    d = {"name": "ResNet18", "class_num": 1000, "pretrained": False}
    d.update(extra or {}); return d
gt = {"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"]}}
ev = [{"CELoss": {"weight": 1.0}}]
def arch(models, freeze):
    return {"name": "DistillationModel", "class_num": 1000, "pretrained_list": None,
            "freeze_params_list": freeze, "infer_model_name": "Student", "models": models}
norm = {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "order": ""}}
def data(train_batch, eval_batch, bicubic=False, workers=8):
    interp = {"interpolation": "bicubic", "backend": "pil"} if bicubic else {}
    train = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"RandCropImage": dict({"size": 224}, **interp)},
             {"RandFlipImage": {"flip_code": 1}}, norm]
    evalt = [{"DecodeImage": {"to_rgb": True, "channel_first": False}}, {"ResizeImage": dict({"resize_short": 256}, **interp)},
             {"CropImage": {"size": 224}}, norm]
    def section(lst, ops, batch, shuffle):
        return {"dataset": {"name": "ImageNetDataset", "image_root": "./dataset/ILSVRC2012/",
                            "cls_label_path": f"./dataset/ILSVRC2012/{lst}", "transform_ops": ops},
                "sampler": {"name": "DistributedBatchSampler", "batch_size": batch, "drop_last": False, "shuffle": shuffle},
                "loader": {"num_workers": workers, "use_shared_memory": True}}
    return {"Train": section("train_list.txt", train, train_batch, True), "Eval": section("val_list.txt", evalt, eval_batch, False)}, evalt
def full(name, a, losses, epochs, batch, eval_batch, opt, amp=False, bicubic=False):
    loaders, evalt = data(batch, eval_batch, bicubic)
    r = {"Global": {"checkpoints": None, "pretrained_model": None, "output_dir": f"./output/{name}", "device": "gpu",
                    "seed": 0, "save_interval": 1, "eval_during_train": True, "eval_interval": 1, "epochs": epochs,
                    "print_batch_step": 10, "use_visualdl": False, "image_shape": [3, 224, 224],
                    "save_inference_dir": "./inference"}}
    if amp:
        r["AMP"] = {"use_amp": True, "scale_loss": 128.0, "use_dynamic_loss_scaling": True, "level": "O1", "dtype": "float16"}
    r["Arch"] = a
    r["Loss"] = {"Train": losses, "Eval": ev}
    r["Optimizer"] = opt
    r["DataLoader"] = loaders
    r["Infer"] = {"infer_imgs": "", "batch_size": 10, "transforms": evalt, "PostProcess": {"name": "Topk", "topk": 5}}
    r["Metric"] = {"Train": [{"DistillationTopkAcc": {"model_key": "Student", "topk": [1, 5]}}],
                   "Eval": [{"DistillationTopkAcc": {"model_key": "Student", "topk": [1, 5]}}]}
    return r
def momentum(lr, wd=None, reg=None):
    o = {"name": "Momentum", "momentum": 0.9}
    if wd is not None: o["weight_decay"] = wd
    if reg is not None: o["regularizer"] = {"name": "L2", "coeff": reg}
    o["lr"] = lr
    return o
cosine = lambda lr: {"name": "Cosine", "learning_rate": lr, "warmup_epoch": 5}
multistep = lambda lr: {"name": "MultiStepDecay", "learning_rate": lr, "milestones": [30, 60, 90], "step_each_epoch": 1, "gamma": 0.1}
piecewise = {"name": "Piecewise", "learning_rate": 0.1, "decay_epochs": [30, 60, 90], "values": [0.1, 0.01, 0.001, 0.0001]}
lcnet = lambda extra=None: dict({"name": "PPLCNet_x2_5", "class_num": 1000, "pretrained": False}, **(extra or {}))
blocks = {"return_patterns": ["blocks3", "blocks4", "blocks5", "blocks6"]}
recipes = {
 "ssld": full("ssld", arch([{"Teacher": {"name": "ResNet50_vd", "class_num": 1000, "pretrained": "weights/resnet50_vd_ssld.pth"}},
                            {"Student": lcnet()}], [True, False]),
              [{"DistillationDMLLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}],
              100, 128, 256, momentum(cosine(0.2), reg=4e-5), amp=True),
 "dml": full("dml", arch([{"Teacher": lcnet()}, {"Student": lcnet()}], [False, False]),
             [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student", "Teacher"]}},
              {"DistillationDMLLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]]}}],
             100, 128, 256, momentum(cosine(0.4), reg=4e-5), amp=True),
 "udml": full("udml", arch([{"Teacher": lcnet(blocks)}, {"Student": lcnet(blocks)}], [False, False]),
              [{"DistillationGTCELoss": {"weight": 1.0, "key": "logits", "model_names": ["Student", "Teacher"]}},
               {"DistillationDMLLoss": {"weight": 1.0, "key": "logits", "model_name_pairs": [["Student", "Teacher"]]}},
               {"DistillationDistanceLoss": {"weight": 1.0, "key": "blocks5", "model_name_pairs": [["Student", "Teacher"]]}}],
              100, 128, 256, momentum(cosine(0.4), reg=4e-5), amp=True),
 "afd": full("afd", arch([
            {"Teacher": {"name": "AttentionModel", "pretrained_list": None, "freeze_params_list": [True, False],
                         "models": [{"ResNet34": r34({"return_patterns": t34})},
                                    {"LinearTransformTeacher": {"name": "LinearTransformTeacher", "qk_dim": 128, "keys": t34, "t_shapes": t_shapes}}]}},
            {"Student": {"name": "AttentionModel", "pretrained_list": None, "freeze_params_list": [False, False],
                         "models": [{"ResNet18": r18({"return_patterns": s18})},
                                    {"LinearTransformStudent": {"name": "LinearTransformStudent", "qk_dim": 128, "keys": s18,
                                                                "s_shapes": s_shapes, "t_shapes": t_shapes}}]}}], None),
             [{"DistillationGTCELoss": {"weight": 1.0, "model_names": ["Student"], "key": "logits"}},
              {"DistillationKLDivLoss": {"weight": 0.9, "model_name_pairs": [["Student", "Teacher"]], "temperature": 4, "key": "logits"}},
              {"AFDLoss": {"weight": 50.0, "model_name_pair": ["Student", "Teacher"], "student_keys": ["bilinear_key", "value"],
                           "teacher_keys": ["query", "value"], "s_shapes": s_shapes, "t_shapes": t_shapes}}],
             100, 64, 64, momentum(multistep(0.1), wd=1e-4), bicubic=True),
 "dkd": full("dkd", arch([{"Teacher": r34()}, {"Student": r18()}], [True, False]),
             [gt, {"DistillationDKDLoss": {"weight": 1.0, "model_name_pairs": [["Student", "Teacher"]], "temperature": 1, "alpha": 1.0, "beta": 1.0}}],
             100, 128, 64, momentum(multistep(0.2), wd=1e-4)),
 "dist": full("dist", arch([{"Teacher": r34()}, {"Student": r18()}], [True, False]),
              [gt, {"DistillationDISTLoss": {"weight": 2.0, "model_name_pairs": [["Student", "Teacher"]]}}],
              100, 64, 256, momentum(piecewise, wd=1e-4)),
 "mgd": full("mgd", arch([{"Teacher": r34({"return_patterns": ["blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"]})},
                          {"Student": r18({"return_patterns": ["blocks[1]", "blocks[3]", "blocks[5]", "blocks[7]"]})}], [True, False]),
             [gt, {"DistillationPairLoss": {"weight": 1.0, "base_loss_name": "MGDLoss", "model_name_pairs": [["Student", "Teacher"]],
                                            "s_keys": ["blocks[7]"], "t_keys": ["blocks[15]"], "name": "loss_mgd",
                                            "student_channels": 512, "teacher_channels": 512}}],
             100, 64, 256, momentum(piecewise, wd=1e-4)),
}
# The methods of docs/methods.md (not published as PaddleClas recipes): each with its official
# ImageNet ResNet34 -> ResNet18 setting where the paper reports one (docs/methods.md says which).
pair = [["Student", "Teacher"]]
r34_stages = ["blocks[2]", "blocks[6]", "blocks[12]", "blocks[15]"]
r18_stages = ["blocks[1]", "blocks[3]", "blocks[5]", "blocks[7]"]
kd_pair = lambda: arch([{"Teacher": r34()}, {"Student": r18()}], [True, False])
recipes.update({
 "nkd": full("nkd", kd_pair(),
             [gt, {"DistillationNKDLoss": {"weight": 1.0, "model_name_pairs": pair, "temperature": 1.0, "gamma": 1.5}}],
             100, 32, 64, momentum(multistep(0.1), wd=1e-4)),
 "ctkd": full("ctkd", kd_pair(),
              [gt, {"DistillationCTKDLoss": {"weight": 1.0, "model_name_pairs": pair, "t_start": 1.0, "t_end": 20.0,
                                             "lambda_max": 0.0, "lambda_min": -1.0, "lambda_epochs": 5, "schedule": "cosine"}}],
              120, 32, 64, momentum(multistep(0.1), wd=1e-4)),
 "kd_standardize": full("kd_standardize", kd_pair(),
                        [gt, {"DistillationKLDivLoss": {"weight": 6.0, "model_name_pairs": pair, "temperature": 2.0,
                                                        "standardize": True}}],
                        100, 64, 64, momentum(multistep(0.2), wd=1e-4)),
 "multi_teacher": full("multi_teacher",
                       arch([{"Teacher0": {"name": "ResNet50", "layout": "torchvision", "class_num": 1000, "pretrained": "weights/resnet50.pth"}},
                             {"Teacher1": r34()}, {"Student": r18()}], [True, True, False]),
                       [gt, {"DistillationMultiTeacherLoss": {"weight": 1.0, "base_loss_name": "KLDivLoss", "student": "Student",
                                                              "teachers": ["Teacher0", "Teacher1"], "teacher_weights": [1.0, 1.0],
                                                              "temperature": 4.0}}],
                       100, 64, 64, momentum(multistep(0.2), wd=1e-4)),
 "fitnet": full("fitnet", arch([{"Teacher": r34({"return_patterns": ["blocks[6]"]})}, {"Student": r18({"return_patterns": ["blocks[3]"]})}],
                               [True, False]),
                [gt, {"DistillationFitNetLoss": {"weight": 100.0, "model_name_pairs": pair, "s_keys": ["blocks[3]"],
                                                 "t_keys": ["blocks[6]"], "student_shape": [128, 28, 28], "teacher_shape": [128, 28, 28]}}],
                100, 64, 64, momentum(multistep(0.2), wd=1e-4)),
 "ofd": full("ofd", arch([{"Teacher": r34({"return_patterns": [k + ":pre_relu" for k in r34_stages]})},
                          {"Student": r18({"return_patterns": [k + ":pre_relu" for k in r18_stages]})}], [True, False]),
             [gt, {"DistillationOFDLoss": {"weight": 1e-4, "model_name_pair": ["Student", "Teacher"],
                                           "s_keys": [k + ":pre_relu" for k in r18_stages], "t_keys": [k + ":pre_relu" for k in r34_stages],
                                           "student_channels": [64, 128, 256, 512], "teacher_channels": [64, 128, 256, 512]}}],
             100, 256, 64, momentum(multistep(0.1), wd=1e-4)),
 "reviewkd": full("reviewkd", arch([{"Teacher": r34({"return_patterns": [k + ":pre_relu" for k in r34_stages] + ["avg_pool"]})},
                                    {"Student": r18({"return_patterns": [k + ":pre_relu" for k in r18_stages] + ["avg_pool"]})}],
                                   [True, False]),
                  [gt, {"DistillationReviewKDLoss": {"weight": 1.0, "model_name_pair": ["Student", "Teacher"],
                                                     "s_keys": [k + ":pre_relu" for k in r18_stages] + ["avg_pool"],
                                                     "t_keys": [k + ":pre_relu" for k in r34_stages] + ["avg_pool"],
                                                     "student_channels": [64, 128, 256, 512, 512],
                                                     "teacher_channels": [64, 128, 256, 512, 512], "warmup_epochs": 1}}],
                  100, 32, 64, momentum(multistep(0.1), wd=1e-4)),
 "crd": full("crd", arch([{"Teacher": r34({"return_patterns": ["avg_pool"]})}, {"Student": r18({"return_patterns": ["avg_pool"]})}],
                          [True, False]),
             [gt, {"DistillationCRDLoss": {"weight": 0.8, "model_name_pair": ["Student", "Teacher"], "s_key": "avg_pool",
                                           "t_key": "avg_pool", "student_dim": 512, "teacher_dim": 512, "n_data": 1281167,
                                           "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5}}],
             100, 32, 64, momentum(multistep(0.1), wd=1e-4)),
 "at": full("at", arch([{"Teacher": r34({"return_patterns": r34_stages})}, {"Student": r18({"return_patterns": r18_stages})}],
                       [True, False]),
            [gt, {"DistillationATLoss": {"weight": 1000.0, "model_name_pairs": pair, "s_keys": r18_stages, "t_keys": r34_stages,
                                         "p": 2.0}}],
            100, 64, 64, momentum(multistep(0.2), wd=1e-4)),
})
for name, recipe in recipes.items():
    with open(f"examples/recipes/{name}.json", "w") as f:
        json.dump(recipe, f, indent=1)
        f.write("\n")
print("ok")
