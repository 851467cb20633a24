"""A model with BatchNorm statistics and affine parameters as after training, in eval mode,
and its logits on a random 2x3x64x64 input (so that the logits depend on every tensor)."""
import torch


def trained_looking_logits(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        model.eval()
        x = torch.randn(2, 3, 64, 64)
        return x, model(x)
