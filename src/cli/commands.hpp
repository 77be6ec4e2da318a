#pragma once
// Each sqasam subcommand registers itself on the app; main() only dispatches.
#include <CLI/CLI.hpp>

namespace sqasam::cli {

void add_segment_command(CLI::App& app);     // one image, explicit prompts -> masks.npy, logits.npy, scores.json
void add_score_command(CLI::App& app);       // a dataset -> images.csv, objects.csv, summary.json, report.html
void add_bench_command(CLI::App& app);       // encoder / decoder timing, peak RSS
void add_test_model_command(CLI::App& app);  // writes a small random-weight model (pipeline checks only)

}  // namespace sqasam::cli
