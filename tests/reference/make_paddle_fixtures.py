#!/usr/bin/python3
"""Writes .pdparams files the way paddle.save(layer.state_dict(), path) does, without Paddle.

    /usr/bin/python3 tests/reference/make_paddle_fixtures.py <output folder>

paddle.save turns every parameter into a numpy array and pickles a dict (protocol 4 by
default, 2 on request) from the structured names to the arrays, plus the entry
"StructuredToParameterName@@" mapping each structured name to Paddle's internal parameter
name. BatchNorm's statistics are called `_mean` and `_variance` and a Linear's weight is
stored [in, out]. The networks come from paddleclas_models.py (PyTorch, with the reference's
module names); their BatchNorm statistics and affine parameters are randomised so that
eval-mode logits depend on every tensor.

Writes, for each network NAME: NAME.pdparams and NAME_io.pt ({"input", "logits"}, eval mode,
on a 2x3x64x64 input); distillation.pdparams (a DistillationModel: Teacher.* and Student.*);
and files with faults: hostile.pdparams (a pickle that calls os.system
when Python loads it), transposed.pdparams (MobileNetV3_small_x0_5 with its fc weight left [out, in]).
"""
import os
import pickle
import sys

import numpy
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import paddleclas_models as pm  # noqa: E402
from trained_looking import trained_looking_logits  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(20261130)

NETWORKS = {  # name -> (model, pickle protocol)
    "ResNet34": (lambda: pm.ResNet(34, class_num=10), 4),
    "ResNet50_vd": (lambda: pm.ResNet(50, vd=True, class_num=10), 4),
    "PPLCNet_x1_0": (lambda: pm.PPLCNet(1.0, class_num=10), 2),
    "MobileNetV3_large_x1_0": (lambda: pm.MobileNetV3(True, 1.0, class_num=10), 4),
    "MobileNetV3_small_x0_5": (lambda: pm.MobileNetV3(False, 0.5, class_num=10), 2),
    "Res2Net50_vd_26w_4s": (lambda: pm.Res2Net(50, class_num=10), 4),
    "PPHGNet_tiny": (lambda: pm.PPHGNet("tiny", class_num=10), 4),
}


def paddle_state_dict(model, transpose_linear=True):
    """model.state_dict() as Paddle names and stores it, as numpy arrays."""
    linear = {name + ".weight" for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    saved, names = {}, {}
    for i, (name, tensor) in enumerate(model.state_dict().items()):
        if name.endswith("num_batches_tracked"):
            continue  # Paddle's BatchNorm has no such counter
        name = name.replace("running_mean", "_mean").replace("running_var", "_variance")
        array = tensor.detach().cpu().numpy()
        if name in linear and transpose_linear:
            array = numpy.ascontiguousarray(array.T)
        saved[name] = array
        names[name] = f"param_{i}"
    saved["StructuredToParameterName@@"] = names
    return saved


def save(obj, path, protocol):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


for name, (build, protocol) in NETWORKS.items():
    model = build()
    x, logits = trained_looking_logits(model)
    save(paddle_state_dict(model), os.path.join(out, name + ".pdparams"), protocol)
    torch.save({"input": x, "logits": logits}, os.path.join(out, name + "_io.pt"))
    if name == "MobileNetV3_small_x0_5":
        save(paddle_state_dict(model, transpose_linear=False), os.path.join(out, "transposed.pdparams"), protocol)


# A PaddleClas DistillationModel's file (its members' names as prefixes), as
# Global.pretrained_model names it in the reference: two different MobileNetV3_small_x0_5.
whole = {}
for member in ("Teacher", "Student"):
    part = paddle_state_dict(pm.MobileNetV3(False, 0.5, class_num=10))
    for key, value in part.items():
        if key != "StructuredToParameterName@@":
            whole[member + "." + key] = value
save(whole, os.path.join(out, "distillation.pdparams"), 4)


class Hostile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, ("touch " + self.target,))


save({"fc.weight": numpy.zeros((2, 2), numpy.float32), "fc.bias": Hostile(os.path.join(out, "pwned_by_pdparams"))},
     os.path.join(out, "hostile.pdparams"), 4)
