#!/usr/bin/python3
"""Checks distill's RandAugment operations against PIL, operation by operation.

    check_augment.py CASES.pt

CASES.pt (written by the C++ test "RandAugment's operations equal PIL's") holds "image", a
uint8 [3, H, W] tensor, and for each case "<op>|<argument>|<interpolation>" the uint8 image
distill made. Each is recomputed here with the PIL calls timm's (and PaddleClas's)
timm_autoaugment makes: ImageOps.autocontrast / equalize / invert / posterize / solarize, the
SolarizeAdd table, ImageEnhance.Color / Contrast / Brightness / Sharpness, Image.rotate and
Image.transform(AFFINE) with the fill colour (124, 116, 104). Prints the number of differing
values per case; exits 1 unless every case is equal.
"""
import sys

import numpy
import torch
from PIL import Image, ImageEnhance, ImageOps

FILL = (124, 116, 104)


def pil_op(img, op, arg, resample):
    kwargs = dict(resample=resample, fillcolor=FILL)
    w, h = img.size
    if op == "AutoContrast":
        return ImageOps.autocontrast(img)
    if op == "Equalize":
        return ImageOps.equalize(img)
    if op == "Invert":
        return ImageOps.invert(img)
    if op == "Posterize":
        return img if int(arg) >= 8 else ImageOps.posterize(img, int(arg))
    if op == "Solarize":
        return ImageOps.solarize(img, int(arg))
    if op == "SolarizeAdd":
        lut = [min(255, i + int(arg)) if i < 128 else i for i in range(256)]
        return img.point(lut * 3)
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, op)(img).enhance(arg)
    if op == "Rotate":
        return img.rotate(arg, **kwargs)
    if op == "ShearX":
        return img.transform(img.size, Image.AFFINE, (1, arg, 0, 0, 1, 0), **kwargs)
    if op == "ShearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, arg, 1, 0), **kwargs)
    if op == "TranslateXRel":
        return img.transform(img.size, Image.AFFINE, (1, 0, arg * w, 0, 1, 0), **kwargs)
    if op == "TranslateYRel":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, arg * h), **kwargs)
    raise ValueError(op)


def main():
    cases = torch.load(sys.argv[1])
    image = cases.pop("image")
    img = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB")
    bad = 0
    for key, ours in cases.items():
        op, arg, interpolation = key.split("|")
        resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
        theirs = numpy.asarray(pil_op(img, op, float(arg), resample)).transpose(2, 0, 1)
        diff = numpy.abs(theirs.astype(int) - ours.numpy().astype(int))
        count = int((diff > 0).sum())
        print("%-40s %6d of %d values differ (largest %d)" % (key, count, diff.size, diff.max()))
        bad += count > 0
    print("FAIL" if bad else "PASS")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
