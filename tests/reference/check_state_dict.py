#!/usr/bin/python3
"""Checks, in Python, a state dict that distill wrote: it must load strictly into
torchvision's resnet18 and reproduce the logits distill computed.

    /usr/bin/python3 tests/reference/check_state_dict.py <weights.pt> <io.pt>

io.pt holds {"input", "logits"} (written by distill::io::write_state_dict). Exit 0 on success.
"""
import sys

import torch
import torchvision

weights = torch.load(sys.argv[1])
io = torch.load(sys.argv[2])
model = torchvision.models.resnet18(num_classes=weights["fc.weight"].shape[0])
model.load_state_dict(weights, strict=True)
model.eval()
with torch.no_grad():
    logits = model(io["input"])
error = ((logits - io["logits"]).abs().max() / io["logits"].abs().max()).item()
print(f"{len(weights)} tensors loaded; max relative logit difference {error:.3g}")
sys.exit(0 if error < 1e-5 else 1)
