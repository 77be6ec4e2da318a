#pragma once
// Each sqasam subcommand registers itself on the app; main() only dispatches.
#include <string>

#include <CLI/CLI.hpp>

#include "sqasam/sam.hpp"

namespace sqasam::cli {

void add_segment_command(CLI::App& app);     // one image, explicit prompts -> masks.npy, logits.npy, scores.json
void add_score_command(CLI::App& app);       // a dataset -> images.csv, objects.csv, summary.json, report.html
void add_calibrate_command(CLI::App& app);   // finished runs with ground truth -> a Dice calibration (JSON)
void add_score_volumes_command(CLI::App& app);  // 3D volumes -> volumes.csv, classes.csv, objects.csv, summary.json, report.html
void add_bench_command(CLI::App& app);       // encoder / decoder timing, peak RSS
void add_test_model_command(CLI::App& app);  // writes a small random-weight model (pipeline checks only)

// --checkpoint, --model-type, --precision, --threads: shared by every command that runs SAM.
struct ModelOptions {
    std::string checkpoint, model_type = "auto", precision = "fp32";
    int threads = 0;  // 0: OpenMP's default
};
void add_model_options(CLI::App& cmd, ModelOptions& options);
// --out, --resume, --overwrite: shared by the commands that write a run's results; `items` names what a run is made
// of ("images", "cases").
void add_output_options(CLI::App& cmd, std::string& out, bool& resume, bool& overwrite, const std::string& items);
// A path for a run's configuration and report: absolute, as valid UTF-8 (escape_non_utf8); empty stays empty.
std::string absolute_path(const std::string& path);
// A count with its noun in the number that agrees with it: "1 image", "3 images".
std::string counted(std::size_t n, const std::string& noun);
// Sets the thread count and loads the checkpoint; throws sqasam::Error naming the file and the problem.
Sam load_model(const ModelOptions& options);

}  // namespace sqasam::cli
