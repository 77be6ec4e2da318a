#!/usr/bin/env python3
"""bench/compare.py's encoder ratio is taken round by round: on a machine whose speed drifts between rounds, the
median of per-round ratios differs from the ratio of the medians, and the table must show the former. Its summary
line gives the bf16 speed-up sqasam measured in its runs."""
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def result(implementation, precision, encoder_ms):
    return {"implementation": implementation, "model_type": "vit_b", "precision": precision, "threads": 2,
            "encoder_ms": encoder_ms, "decoder_ms_per_prompt": 10.0, "peak_rss_mb": 500.0, "isa": "test"}


def main():
    # sqasam-bf16 slow in round 2, the peer fast in round 3: per-round ratios 1.10, 1.05, 0.90 (median 1.05);
    # the ratio of the medians (110 / 100) would say 1.10.
    rounds = {"sqasam-bf16": [dict(result("sqasam", "bf16", ms), bf16_speedup=speedup)
                              for ms, speedup in ((100.0, 0.5), (200.0, 0.6), (100.0, 0.55))],
              "openvino": [result("openvino", "bf16", ms) for ms in (110.0, 210.0, 90.0)],
              "pytorch": [result("pytorch", "fp32", ms) for ms in (300.0, 400.0, 200.0)]}
    with tempfile.TemporaryDirectory() as work:
        arguments = []
        for name, results in rounds.items():
            for k, item in enumerate(results):
                path = os.path.join(work, f"{name}.{k}.json")
                with open(path, "w") as handle:
                    handle.write("some progress line\n" + json.dumps(item) + "\n")
                arguments += ["--result", f"{name}={path}"]
        conditions = os.path.join(work, "conditions.json")
        with open(conditions, "w") as handle:
            json.dump({"cpu": "test CPU", "load_average": [0.5, 1.0]}, handle)
        out = os.path.join(work, "results.json")
        printed = subprocess.run([sys.executable, os.path.join(REPO, "bench", "compare.py"), *arguments,
                                  "--conditions", conditions, "--out", out],
                                 check=True, capture_output=True, text=True).stdout
        with open(out) as handle:
            table = json.load(handle)["table"]
    header = [cell.strip() for cell in table[0].split("|")[1:-1]]
    if "encoder: this / sqasam, per round" not in header:
        print(f"no per-round encoder ratio column in {header}")
        return 1
    ratio_column = header.index("encoder: this / sqasam, per round")
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[1:-1]] for line in table[2:]}
    expected = {"sqasam-bf16": "1.00 (1.00..1.00)", "openvino": "1.05 (0.90..1.10)",
                "pytorch": "2.00 (2.00..3.00)"}  # fp32 without a sqasam fp32 run: against sqasam-bf16
    failures = [f"{name}: ratio {rows[name][ratio_column]!r}, expected {want!r}"
                for name, want in expected.items() if rows[name][ratio_column] != want]
    if "encoder ms" not in printed or rows["openvino"][2] != "110 (90..210)":
        failures.append(f"encoder column: {rows['openvino'][2]!r}, expected the median and range '110 (90..210)'")
    if "bf16 products at 0.55 (0.50..0.60) x the fp32 rate here" not in printed:
        failures.append(f"no median bf16 speed-up 0.55 (0.50..0.60) in the summary line: {printed.splitlines()[-2]!r}")
    if failures:
        print("\n".join(failures))
        return 1
    print("compare.py: per-round encoder ratios as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
