#!/usr/bin/python3
"""The ImageNet training input pipeline in PyTorch, timed (the counterpart of bench/loader.cpp):
JPEG decode, RandomResizedCrop(224), RandomHorizontalFlip, normalise, torch.utils.data.DataLoader
with worker processes. --mode pil decodes with PIL (torchvision's ImageFolder way); --mode
tensor with torchvision.io.decode_jpeg and the transforms on uint8 tensors.

  loader.py --make DIR [--count 512]       writes synthetic 500x375 JPEGs and DIR/list.txt
  loader.py --root DIR --list FILE [--mode pil|tensor] [--workers 2] [--batch 32] [--epochs 2]

Prints one line: images_s <images per second over all epochs after the first batch>.
"""
import argparse
import os
import time

import torch


def make(root, count):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    y, x = np.mgrid[0:375, 0:500]
    with open(os.path.join(root, "list.txt"), "w") as f:
        for i in range(count):
            # Smooth colour fields with noise: closer to photographs' JPEG cost than flat or pure noise.
            a, b, c = rng.uniform(0.005, 0.05, 3)
            img = np.stack([np.sin(a * x + i), np.cos(b * y), np.sin(c * (x + y))], -1) * 90 + 128
            img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            name = "img%04d.jpg" % i
            Image.fromarray(img).save(os.path.join(root, name), quality=90)
            f.write("%s %d\n" % (name, i % 10))


class Listed(torch.utils.data.Dataset):
    def __init__(self, root, listing, mode):
        import torchvision.transforms as T
        self.items = [(os.path.join(root, l.split()[0]), int(l.split()[1])) for l in open(listing) if l.strip()]
        self.mode = mode
        mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        if mode == "pil":
            self.t = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
        else:
            self.t = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ConvertImageDtype(torch.float),
                                T.Normalize(mean, std)])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        if self.mode == "pil":
            from PIL import Image
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")
        else:
            from torchvision.io import decode_jpeg, read_file
            img = decode_jpeg(read_file(path))
        return self.t(img), label


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make")
    p.add_argument("--count", type=int, default=512)
    p.add_argument("--root")
    p.add_argument("--list")
    p.add_argument("--mode", choices=["pil", "tensor"], default="pil")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    if a.make:
        make(a.make, a.count)
        return
    torch.set_num_threads(a.threads)
    loader = torch.utils.data.DataLoader(Listed(a.root, a.list, a.mode), batch_size=a.batch, shuffle=True,
                                         num_workers=a.workers, drop_last=True, persistent_workers=True)
    images, since = 0, None
    for _ in range(a.epochs):
        for x, _ in loader:
            if since is None:
                since = time.perf_counter()  # the clock starts after the first batch
                continue
            images += x.shape[0]
    print("images_s %.1f images %d" % (images / (time.perf_counter() - since), images))


if __name__ == "__main__":
    main()
