#!/usr/bin/python3
"""Checks, in Python and without distill, the TorchScript files distill exported:
each <name>.ts.pt loads with torch.jit.load, gives the logits distill computed at batch 1 and
7 (<name>.io.pt: input1, logits1, input7, logits7), and its state_dict() has the keys and
tensors of the state dict distill wrote (<name>.state.pt). With --onnx NAME ..., those exports
also convert with torch.onnx.export and pass onnx.checker.check_model.

    /usr/bin/python3 tests/reference/check_torchscript.py FOLDER [--onnx NAME ...]

Exit 0 on success.
"""
import argparse
import glob
import os
import sys

import torch

p = argparse.ArgumentParser()
p.add_argument("folder")
p.add_argument("--onnx", nargs="*", default=[])
a = p.parse_args()

failures = []
exports = sorted(glob.glob(os.path.join(a.folder, "*.ts.pt")))
if not exports:
    failures.append("no *.ts.pt in " + a.folder)
for path in exports:
    name = os.path.basename(path)[:-len(".ts.pt")]
    extra = {"distill/model.json": ""}
    module = torch.jit.load(path, _extra_files=extra)
    module.eval()
    io = torch.load(os.path.join(a.folder, name + ".io.pt"))
    weights = torch.load(os.path.join(a.folder, name + ".state.pt"))
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 7):
            logits = module(io["input%d" % batch])
            expected = io["logits%d" % batch]
            worst = max(worst, ((logits - expected).abs() / (1 + expected.abs())).max().item())
    state = module.state_dict()
    same_names = sorted(state) == sorted(weights)
    same_tensors = same_names and all(torch.equal(state[k], v) for k, v in weights.items())
    print("%s: %d tensors, names %s, tensors %s, largest logit difference %.3g, extra file %r" % (
        name, len(state), "equal" if same_names else "DIFFER", "equal" if same_tensors else "DIFFER", worst,
        extra["distill/model.json"].decode()), flush=True)
    if worst > 1e-5 or not same_tensors or name.encode() not in extra["distill/model.json"]:
        failures.append(name)
    if name in a.onnx:
        import onnx  # Debian's python3-onnx

        target = os.path.join(a.folder, name + ".onnx")
        torch.onnx.export(module, io["input1"], target, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
        onnx.checker.check_model(onnx.load(target))
        print("%s: ONNX export passes onnx.checker.check_model" % name, flush=True)
for name in a.onnx:
    if not os.path.exists(os.path.join(a.folder, name + ".ts.pt")):
        failures.append(name + " (asked for ONNX, not exported)")
if failures:
    print("FAILED: " + ", ".join(failures))
sys.exit(1 if failures else 0)
