#!/usr/bin/python3
"""Writes the first three Fashion-MNIST test images as RGB JPEG files named <i>_label<y>.jpg."""
import gzip
import os
import sys

from PIL import Image

root = "/usr/share/datasets/fashion-mnist"
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
pixels = gzip.open(f"{root}/t10k-images-idx3-ubyte.gz").read()[16:]
labels = gzip.open(f"{root}/t10k-labels-idx1-ubyte.gz").read()[8:]
for i in range(3):
    image = Image.frombytes("L", (28, 28), pixels[i * 784:(i + 1) * 784]).convert("RGB")
    image.save(f"{out}/{i}_label{labels[i]}.jpg", quality=95)
