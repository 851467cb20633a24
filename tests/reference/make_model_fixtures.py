#!/usr/bin/python3
"""Writes the files the model and state-dict tests read, with torchvision as the reference.

    /usr/bin/python3 tests/reference/make_model_fixtures.py <output folder>

- resnet18.pth, resnet50.pth: torch.save(model.state_dict()) of seeded torchvision models
  whose BatchNorm statistics and affine parameters are randomised (so that eval-mode logits
  depend on every tensor); resnet18_io.pt, resnet50_io.pt: {"input", "logits"} of those
  models in eval mode on a 2x3x64x64 input.
- views.pt: tensors that share one storage (a matrix, a row, a column, a transpose) and a
  float64 and an int64 tensor.
- not_a_dict.pt, checkpoint.pt, legacy.pt: files that are not state dicts, or not in the zip
  format.
- hostile_optimizer.bin: a TorchScript archive whose __setstate__ writes the file pwned.pt
  next to it when the archive is loaded, as a checkpoint's serialized optimiser state once
  was (torch::serialize::InputArchive runs it); the checkpoint tests embed it.
"""
from typing import Tuple
import os
import sys

import torch
import torchvision

from trained_looking import trained_looking_logits

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(20261127)

for arch in ("resnet18", "resnet50"):
    model = getattr(torchvision.models, arch)()
    x, logits = trained_looking_logits(model)
    torch.save(model.state_dict(), os.path.join(out, f"{arch}.pth"))
    torch.save({"input": x, "logits": logits}, os.path.join(out, f"{arch}_io.pt"))

base = torch.arange(12.0).reshape(3, 4)
torch.save({"whole": base, "row": base[1], "col": base[:, 2], "t": base.t(),
            "double": torch.linspace(0, 1, 5, dtype=torch.float64), "long": torch.arange(4)},
           os.path.join(out, "views.pt"))
torch.save([torch.zeros(2)], os.path.join(out, "not_a_dict.pt"))
torch.save({"epoch": 3, "model": torch.nn.Linear(2, 2).state_dict()}, os.path.join(out, "checkpoint.pt"))
torch.save(torch.nn.Linear(2, 2).state_dict(), os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)


class Hostile(torch.nn.Module):
    def __init__(self, target: str):
        super().__init__()
        self.x = torch.zeros(1)
        self.target = target

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
        return (self.x, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
        self.x = state[0]
        self.target = state[1]
        self.training = state[2]
        torch.save(self.x, self.target)


torch.jit.save(torch.jit.script(Hostile(os.path.join(os.path.abspath(out), "pwned.pt"))),
               os.path.join(out, "hostile_optimizer.bin"))
print("wrote model fixtures to", out)
