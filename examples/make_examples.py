#!/usr/bin/env python3
"""Builds the demo data in examples/ from PolypGen (CC BY 4.0, see README.md): 8 colonoscopy images downscaled
to 384 px wide, their ground truth, and SYNTHETIC predictions made from the ground truth by fixed edits (exact,
eroded, dilated, shifted, a spurious blob, a missed polyp, empty). Deterministic: the same inputs give the same
files. Usage: python examples/make_examples.py [--shared ../shared/data] [--out examples]
"""
import argparse
import pathlib

import numpy as np
from PIL import Image
from scipy import ndimage

WIDTH = 384

# base name -> (edit, what it imitates)
CASES = {
    "C3_EndoCV2021_00103": ("exact", "a perfect prediction"),
    "176OLCV1_100H0846": ("erode:2", "a good prediction, slightly tight"),
    "EndoCV2021_001332": ("erode:12", "under-segmentation"),
    "C3_EndoCV2021_00245": ("dilate:14", "over-segmentation"),
    "EndoCV2021_C6_0100046": ("shift:0.18", "a misplaced mask"),
    "24_endocv2021_positive_801": ("blob", "the polyp plus a spurious blob"),
    "C3_EndoCV2021_00483": ("drop_largest", "the largest of six polyps missed"),
    "9_endocv2021_positive_1362": ("empty", "a missed polyp (empty prediction)"),
}


def disk(radius):
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def shifted(mask, fraction):
    """Moves the mask right and down by a fraction of its bounding box, filling with background."""
    rows, cols = np.nonzero(mask)
    dy = int(round(fraction * (rows.max() - rows.min() + 1)))
    dx = int(round(fraction * (cols.max() - cols.min() + 1)))
    out = np.zeros_like(mask)
    out[dy:, dx:] = mask[:mask.shape[0] - dy, :mask.shape[1] - dx]
    return out


def with_blob(mask):
    """Adds a disk in the image quadrant farthest from the polyp."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    cy = h // 4 if rows.mean() > h / 2 else 3 * h // 4
    cx = w // 4 if cols.mean() > w / 2 else 3 * w // 4
    radius = max(6, min(h, w) // 12)
    y, x = np.mgrid[:h, :w]
    return mask | ((x - cx) ** 2 + (y - cy) ** 2 <= radius * radius)


def without_largest(mask):
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n < 2:
        raise SystemExit("drop_largest needs a mask with several objects")
    areas = ndimage.sum(mask, labels, index=range(1, n + 1))
    return mask & (labels != 1 + int(np.argmax(areas)))


def predict(gt, edit):
    name, _, arg = edit.partition(":")
    if name == "exact":
        return gt.copy()
    if name == "erode":
        return ndimage.binary_erosion(gt, structure=disk(int(arg)))
    if name == "dilate":
        return ndimage.binary_dilation(gt, structure=disk(int(arg)))
    if name == "shift":
        return shifted(gt, float(arg))
    if name == "blob":
        return with_blob(gt)
    if name == "drop_largest":
        return without_largest(gt)
    if name == "empty":
        return np.zeros_like(gt)
    raise SystemExit(f"unknown edit {edit}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    here = pathlib.Path(__file__).resolve().parent
    parser.add_argument("--shared", default=str(here.parent.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(here))
    args = parser.parse_args()
    source = pathlib.Path(args.shared) / "polyp_polypgen_test"
    out = pathlib.Path(args.out)
    for folder in ("images", "gt", "pred"):
        (out / folder).mkdir(parents=True, exist_ok=True)

    for base, (edit, _) in CASES.items():
        image = Image.open(source / "images" / f"{base}.jpg").convert("RGB")
        height = round(image.height * WIDTH / image.width)
        small = image.resize((WIDTH, height), Image.BILINEAR, reducing_gap=3.0)
        small.save(out / "images" / f"{base}.jpg", quality=88)
        gt_full = Image.open(source / "gt" / f"{base}.png").convert("L")
        gt = np.array(gt_full.resize((WIDTH, height), Image.BILINEAR)) > 127
        Image.fromarray((gt * 255).astype(np.uint8)).save(out / "gt" / f"{base}.png")
        pred = predict(gt, edit)
        Image.fromarray((pred * 255).astype(np.uint8)).save(out / "pred" / f"{base}.png")
        dice = 2 * (gt & pred).sum() / max(1, gt.sum() + pred.sum())
        print(f"{base}: {WIDTH}x{height}, {edit}, true Dice {dice:.3f}")


if __name__ == "__main__":
    main()
