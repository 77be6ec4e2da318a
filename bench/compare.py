#!/usr/bin/env python3
"""Puts `sqasam bench`'s and bench/peer_pytorch.py's JSON results side by side, with ratios, and saves them with
the run's conditions. Used by bench/run.sh.

  compare.py --ours OURS1.json [--ours OURS2.json ...] --peer PEER1.json [...] --conditions COND.json --out RESULTS.json
Each input file's last line is the JSON object the program printed. With several rounds (run.sh alternates the two
programs), each metric is the median over rounds, followed by its range over rounds (min..max): on a shared machine
the load changes from minute to minute.
"""
import argparse
import json
import statistics

ROWS = [  # (label, key, decimals)
    ("image encoder (set_image), ms", "encoder_ms", 0),
    ("decoder, ms per prompt (one at a time)", "decoder_ms_per_prompt", 1),
    ("decoder, ms per prompt (batched)", "decoder_ms_per_prompt_batched", 1),
    ("decoder network alone (no postprocessing), ms per prompt", "decoder_network_ms_per_prompt", 1),
    ("peak RSS, MB", "peak_rss_mb", 0),
    ("checkpoint load, ms", "load_ms", 0),
]


def last_json_line(path):
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{path}: empty; the benchmark printed nothing")
    return json.loads(lines[-1])


def over_rounds(rounds):
    """One result whose metrics are the medians over rounds; the rest (threads, precision, ...) from round 1."""
    merged = dict(rounds[0])
    for _, key, _ in ROWS:
        merged[key] = statistics.median(r[key] for r in rounds)
    return merged


def cell(rounds, merged, key, decimals):
    """The median, and with several rounds their range."""
    text = f"{merged[key]:.{decimals}f}"
    if len(rounds) > 1:
        values = [r[key] for r in rounds]
        text += f" ({min(values):.{decimals}f}..{max(values):.{decimals}f})"
    return text


def table(ours_rounds, peer_rounds):
    """Markdown table; the ratio (of the medians) is pytorch / sqasam, so above 1 means ours is faster or smaller."""
    ours, peer = over_rounds(ours_rounds), over_rounds(peer_rounds)
    lines = ["| metric | sqasam | pytorch | pytorch / sqasam |", "|---|---:|---:|---:|"]
    for label, key, decimals in ROWS:
        ratio = f"{peer[key] / ours[key]:.2f}" if ours[key] else "n/a"
        lines.append(f"| {label} | {cell(ours_rounds, ours, key, decimals)} | "
                     f"{cell(peer_rounds, peer, key, decimals)} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", required=True, action="append")
    parser.add_argument("--peer", required=True, action="append")
    parser.add_argument("--conditions", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    ours_rounds = [last_json_line(path) for path in args.ours]
    peer_rounds = [last_json_line(path) for path in args.peer]
    ours, peer = ours_rounds[0], peer_rounds[0]
    model_types = {r["model_type"] for r in ours_rounds + peer_rounds}
    if len(model_types) != 1:
        raise SystemExit(f"compare.py: the results are of different model types: {sorted(model_types)}")
    with open(args.conditions) as handle:
        conditions = json.load(handle)
    text = table(ours_rounds, peer_rounds)
    print(text)
    print(f"{ours['model_type']}, pytorch peer {peer['package']}; {len(ours_rounds)} round(s), medians over rounds "
          f"(min..max); threads: sqasam {ours['threads']}, pytorch {peer['threads']}; precision {ours['precision']}; "
          f"pytorch jemalloc {'on' if peer['jemalloc'] else 'off'}, BLAS {peer['blas']}")
    with open(args.out, "w") as handle:
        json.dump({"conditions": conditions, "table": text.splitlines(), "sqasam_rounds": ours_rounds,
                   "pytorch_rounds": peer_rounds}, handle, indent=2)
        handle.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
