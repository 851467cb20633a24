#!/usr/bin/python3
"""Writes a tiny ImageNet-layout dataset for the recipe programs' smoke tests:
<dir>/images/<i>.jpg (32x32 noise with a bright square whose quadrant is the class, 4
classes), <dir>/train_list.txt (24 images) and <dir>/val_list.txt (8 images)."""
import os
import random
import sys

from PIL import Image

out = sys.argv[1]
os.makedirs(f"{out}/images", exist_ok=True)
rng = random.Random(5)
with open(f"{out}/train_list.txt", "w") as train, open(f"{out}/val_list.txt", "w") as val:
    for i in range(32):
        label = i % 4
        image = Image.new("RGB", (32, 32))
        image.putdata([tuple(rng.randrange(90) for _ in range(3)) for _ in range(32 * 32)])
        x, y = (label % 2) * 16 + 4, (label // 2) * 16 + 4
        image.paste((230, 230, 230), (x, y, x + 8, y + 8))
        image.save(f"{out}/images/{i}.jpg", quality=95)
        (val if i >= 24 else train).write(f"images/{i}.jpg {label}\n")
