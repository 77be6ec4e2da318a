#!/usr/bin/env python3
"""Puts the JSON results of `sqasam bench` and its peers side by side (bench/run.sh runs them), with ratios and the
peers' mask IoU against the official code, and saves them with the run's conditions.

  compare.py --result NAME=FILE [--result NAME=FILE ...] [--masks NAME=MASKS.npz ...] [--reference NAME]
             --conditions COND.json --out RESULTS.json
NAME is one program in one configuration (sqasam-bf16, pytorch, onnxruntime-fp32, ...); each --result is the
output of one round (its last line is the JSON object the program printed), so a NAME given K times has K rounds
and each metric is its median over them, followed by the range (min..max): on a shared machine the load changes
from minute to minute. The encoder ratio is this / sqasam in the same precision class (fp32: fp32 and f32;
reduced: bf16, int8, ...), above 1 meaning ours is faster; where sqasam did not run in that class, against the
sqasam run listed first. It is taken per round (the k-th result of each NAME: programs a few minutes apart) and
given as the median over rounds with its range, so that a machine whose speed drifts between rounds moves both
sides of each ratio. --masks saves of the peers are compared with the reference's (the official PyTorch code):
the worst IoU over prompts and masks, so that a broken export is not a fast peer.
"""
import argparse
import json
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import load_masks  # noqa: E402

METRICS = [  # (column, key, decimals)
    ("encoder ms", "encoder_ms", 0),
    ("decoder ms/prompt", "decoder_ms_per_prompt", 1),
    ("batched ms/prompt", "decoder_ms_per_prompt_batched", 1),
    ("network alone ms/prompt", "decoder_network_ms_per_prompt", 1),
    ("peak RSS MB", "peak_rss_mb", 0),
    ("load ms", "load_ms", 0),
]
FULL_PRECISION = {"fp32", "f32"}


def last_json_line(path):
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{path}: empty; the benchmark printed nothing")
    return json.loads(lines[-1])


def named(pairs, option):
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"compare.py: {option} wants NAME=FILE, got '{pair}'")
        out.append(tuple(pair.split("=", 1)))
    return out


def median_and_range(values, decimals):
    """'median (min..max)' of the values, the median alone for one, '-' for none."""
    if not values:
        return "-"
    text = f"{statistics.median(values):.{decimals}f}"
    if len(values) > 1:
        text += f" ({min(values):.{decimals}f}..{max(values):.{decimals}f})"
    return text


def cell(rounds, key, decimals):
    return median_and_range([r.get(key) for r in rounds if r.get(key) is not None], decimals)


def precision_class(result):
    return "fp32" if result["precision"] in FULL_PRECISION else "reduced"


def isa_text(result):
    isa = result.get("isa") or result.get("blas", "")
    if isinstance(isa, dict):  # OpenVINO: implementation -> node count
        isa = ", ".join(f"{kind} x{count}" for kind, count in sorted(isa.items(), key=lambda kv: -kv[1]))
    return str(isa).replace("|", "/")


def worst_iou(reference, masks):
    if reference.shape != masks.shape:
        return None
    axes = tuple(range(2, reference.ndim))
    union = np.logical_or(reference, masks).sum(axis=axes)
    inter = np.logical_and(reference, masks).sum(axis=axes)
    return float(np.min(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, action="append")
    parser.add_argument("--masks", action="append")
    parser.add_argument("--reference", default="pytorch")
    parser.add_argument("--conditions", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    runs = {}  # name -> rounds, in first-seen order
    for name, path in named(args.result, "--result"):
        runs.setdefault(name, []).append(last_json_line(path))
    model_types = {r["model_type"] for rounds in runs.values() for r in rounds}
    if len(model_types) != 1:
        raise SystemExit(f"compare.py: the results are of different model types: {sorted(model_types)}")
    masks = dict(named(args.masks, "--masks"))
    ious = {}
    if args.reference in masks:
        reference = load_masks(masks[args.reference])
        ious = {name: worst_iou(reference, load_masks(path)) for name, path in masks.items() if name != args.reference}

    ours = {}  # precision class -> the first sqasam run of that class, its rounds
    for rounds in runs.values():
        if rounds[0]["implementation"] == "sqasam":
            ours.setdefault(precision_class(rounds[0]), rounds)
    first_ours = next(iter(ours.values()), None)
    header = ["program", "precision"] + [column for column, _, _ in METRICS] + \
             ["encoder: this / sqasam, per round", "worst mask IoU vs official", "products ran on"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(METRICS) + 2) + "---|"]
    for name, rounds in runs.items():
        base = ours.get(precision_class(rounds[0]), first_ours) or []
        ratio = median_and_range([r["encoder_ms"] / b["encoder_ms"] for r, b in zip(rounds, base)], 2)
        iou = ious.get(name)
        iou_text = "reference" if name == args.reference else (f"{iou:.4f}" if iou is not None else "-")
        row = [name, rounds[0]["precision"]] + [cell(rounds, key, d) for _, key, d in METRICS] + \
              [ratio, iou_text, isa_text(rounds[0])]
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines)
    with open(args.conditions) as handle:
        conditions = json.load(handle)
    # Whether bf16 pays on this CPU at all (sqasam measures it in every run; 0 without bf16 instructions).
    speedups = [r["bf16_speedup"] for rounds in ours.values() for r in rounds if "bf16_speedup" in r]
    speedup_text = f"; bf16 products at {median_and_range(speedups, 2)} x the fp32 rate here" if speedups else ""
    print(text)
    print(f"{next(iter(model_types))} on {conditions.get('cpu', '?')}; {max(len(r) for r in runs.values())} round(s), "
          f"medians over rounds (min..max); threads: " +
          ", ".join(f"{name} {rounds[0]['threads']}" for name, rounds in runs.items()) +
          f"; 1-minute load {min(conditions['load_average']):.1f}..{max(conditions['load_average']):.1f}" +
          speedup_text)
    with open(args.out, "w") as handle:
        json.dump({"conditions": conditions, "table": lines, "mask_iou_vs_reference": ious, "runs": runs}, handle,
                  indent=2)
        handle.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
