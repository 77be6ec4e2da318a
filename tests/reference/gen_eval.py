"""Reference values for the evaluation metrics (tests/test_eval_metrics.cpp).

Correlations and ranks come from scipy.stats; AUROC from a brute-force count over every (failed, passed) pair;
AURC, bottom-K accuracy and percentiles from direct loops / numpy, written independently of the C++ code.
Writes <out>/eval/cases.json: a list of cases, each with its inputs and the expected values (null = undefined).
With the shared data present, also <out>/eval/true_dice_kvasir_pranet.json: {"threshold": t, "dice": {name: d},
"model_confidence": {name: c}}: the Dice of each PraNet soft map (foreground where value > t * 255) against its
ground truth, and the Model-Confidence baseline (mean over pixels of max(p, 1 - p), p = value / 255), by numpy.
"""
import argparse
import json
import math
import pathlib

import numpy as np
import skimage.io
from scipy import stats

SOFT_THRESHOLD = 0.5  # sqasam's default for soft prediction maps, as a fraction of full scale


def order(names, key, descending=False):
    """Positions sorted by key (ascending or descending), ties by name then position."""
    sign = -1.0 if descending else 1.0
    return sorted(range(len(key)), key=lambda i: (sign * key[i], names[i], i))


def correlation(fn, x, y):
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(fn(x, y)[0])


def bottom_k(names, value, dice, fraction):
    n = len(value)
    if n == 0:
        return None
    n_k = math.ceil(fraction * n)
    by_value = set(order(names, value)[:n_k])
    by_dice = set(order(names, dice)[:n_k])
    return len(by_value & by_dice) / n_k


def auroc_pairwise(value, failed):
    fails = [v for v, f in zip(value, failed) if f]
    passes = [v for v, f in zip(value, failed) if not f]
    if not fails or not passes:
        return None
    right = 0.0
    for vf in fails:
        for vp in passes:
            right += 1.0 if vp > vf else 0.5 if vp == vf else 0.0
    return right / (len(fails) * len(passes))


def risk_coverage_area(dice, positions):
    if not positions:
        return None
    total = 0.0
    for k in range(1, len(positions) + 1):
        total += sum(1.0 - dice[i] for i in positions[:k]) / k
    return total / len(positions)


def case(name, names, value, dice, threshold=0.75):
    failed = [d < threshold for d in dice]
    lowest_risk_first = sorted(range(len(dice)), key=lambda i: -dice[i])
    quantiles = [0.0, 2.5, 25.0, 50.0, 97.5, 100.0]
    return {
        "name": name,
        "names": names,
        "value": value,
        "true_dice": dice,
        "threshold": threshold,
        "ranks": [float(r) for r in stats.rankdata(value, method="average")],
        "pearson": correlation(stats.pearsonr, value, dice),
        "spearman": correlation(stats.spearmanr, value, dice),
        "bottom25": bottom_k(names, value, dice, 0.25),
        "bottom50": bottom_k(names, value, dice, 0.50),
        "auroc": auroc_pairwise(value, failed),
        "aurc": risk_coverage_area(dice, order(names, value, descending=True)),
        "optimal_aurc": risk_coverage_area(dice, lowest_risk_first),
        "quantiles": quantiles,
        "percentiles": [float(np.percentile(value, q)) for q in quantiles] if value else [],
    }


def true_dice_reference(shared):
    """Per-image Dice and model confidence of polyp_kvasir_pranet_split's PraNet maps, or None without the data."""
    folder = pathlib.Path(shared) / "polyp_kvasir_pranet_split"
    if not (folder / "pred").is_dir():
        return None
    dice, confidence = {}, {}
    for pred_path in sorted((folder / "pred").glob("*.png")):
        probability = skimage.io.imread(pred_path).astype(np.float64) / 255
        confidence[pred_path.stem] = float(np.maximum(probability, 1 - probability).mean())
        pred = probability > SOFT_THRESHOLD
        gt = skimage.io.imread(folder / "gt" / pred_path.name) > 0
        total = int(pred.sum()) + int(gt.sum())
        dice[pred_path.stem] = 1.0 if total == 0 else 2.0 * int((pred & gt).sum()) / total
    return {"threshold": SOFT_THRESHOLD, "folder": str(folder), "dice": dice, "model_confidence": confidence}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--shared", default="")
    args = parser.parse_args()
    rng = np.random.default_rng(2312)

    def names(n):
        return [f"img_{i:03d}" for i in rng.permutation(n)]

    dice = rng.beta(4, 1.5, size=83)
    score = np.clip(dice + rng.normal(0, 0.15, size=83), 0, 1)
    cases = [case("random", names(83), score.tolist(), dice.tolist())]
    # Rounded to one decimal: many ties in both vectors, including ties across the failure threshold.
    tied_dice = np.round(rng.beta(3, 1.5, size=40), 1)
    tied_score = np.round(np.clip(tied_dice + rng.normal(0, 0.2, size=40), 0, 1), 1)
    cases.append(case("tied", names(40), tied_score.tolist(), tied_dice.tolist()))
    # All scores equal: correlations undefined, every order decided by the tie rule.
    cases.append(case("constant_score", names(12), [0.5] * 12, np.round(rng.uniform(size=12), 2).tolist()))
    # Every image a success: AUROC undefined.
    cases.append(case("no_failures", names(9), rng.uniform(size=9).tolist(), rng.uniform(0.8, 1.0, size=9).tolist()))
    cases.append(case("single", ["only"], [0.3], [0.9]))
    cases.append(case("inverse", names(6), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], 0.65))

    out = pathlib.Path(args.out) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    reference = true_dice_reference(args.shared) if args.shared else None
    kvasir = out / "true_dice_kvasir_pranet.json"
    if reference:
        kvasir.write_text(json.dumps(reference, indent=1))
    else:
        kvasir.unlink(missing_ok=True)  # an earlier run's, made from data no longer there


if __name__ == "__main__":
    main()
