// The options the commands share: which checkpoint, read how, computed how; where a run's results go.
#include <cmath>
#include <filesystem>
#include <iostream>

#include <omp.h>
#include <opencv2/core.hpp>

#include "cli/commands.hpp"
#include "sqasam/io.hpp"

namespace sqasam::cli {

void add_model_options(CLI::App& cmd, ModelOptions& options) {
    cmd.add_option("--checkpoint", options.checkpoint, "SAM checkpoint: official .pth or .safetensors")->required();
    cmd.add_option("--model-type", options.model_type,
                   "vit_b, vit_l, vit_h, medsam (a vit_b checkpoint with MedSAM's processing), vit_t (MobileSAM), "
                   "lite_medsam (LiteMedSAM with its own processing) or auto (read from the checkpoint)")
        ->check(CLI::IsMember({"auto", "vit_b", "vit_l", "vit_h", "medsam", "vit_t", "lite_medsam"}))
        ->capture_default_str();
    cmd.add_option("--precision", options.precision,
                   "arithmetic of SAM's large matrix products: fp32 (exact); bf16 (masks within 1-1.5% IoU; "
                   "faster only where the CPU's bf16 products are: AMD Zen 4/5, Intel with AMX; falls back to fp32 "
                   "with a warning without bf16 instructions); or auto (bf16 where its products measure at least "
                   "1.25x as fast here, else fp32)")
        ->check(CLI::IsMember({"fp32", "bf16", "auto"}))
        ->capture_default_str();
    cmd.add_option("--threads", options.threads, "compute threads (default: OpenMP's default)")
        ->check(CLI::Range(1, 1024));
}

void add_output_options(CLI::App& cmd, std::string& out, bool& resume, bool& overwrite, const std::string& items) {
    cmd.add_option("--out", out, "output folder (created if needed)")->required();
    CLI::Option* resume_flag =
        cmd.add_flag("--resume", resume, "continue an interrupted run in --out, skipping the " + items + " already done");
    cmd.add_flag("--overwrite", overwrite,
                 "replace the results of another run in --out (without it, such a run is refused)")
        ->excludes(resume_flag);
}

std::string counted(std::size_t n, const std::string& noun) {
    return std::to_string(n) + ' ' + noun + (n == 1 ? "" : "s");
}

std::string absolute_path(const std::string& path) {
    namespace fs = std::filesystem;
    return path.empty() ? "" : escape_non_utf8(fs::weakly_canonical(fs::absolute(path)).string());
}

namespace {

// bf16 is only for speed: auto measures which precision is faster here, and an explicit bf16 that is slower here
// says so (the threads are set first: the measurement runs at the run's thread count).
Precision chosen_precision(const std::string& name) {
    const auto speedup = [] { return std::to_string(int(std::lround(bf16_speedup() * 100))) + " %"; };
    if (name == "auto") {
        const Precision fastest = fastest_precision();
        std::cerr << "sqasam: --precision auto: " << to_string(fastest) << " (bf16 products "
                  << (bf16_speedup() > 0 ? "run at " + speedup() + " of the fp32 rate here" : "unsupported here")
                  << ")\n";
        return fastest;
    }
    const Precision precision = precision_from_string(name);
    if (precision == Precision::bf16 && bf16_speedup() > 0 && bf16_speedup() < 1)
        std::cerr << "sqasam: warning: bf16 products run at " << speedup()
                  << " of the fp32 rate on this CPU: fp32 is faster here, and exact\n";
    return precision;
}

}  // namespace

Sam load_model(const ModelOptions& options) {
    const ModelType type = model_type_from_string(options.model_type);
    if (options.threads > 0) {
        omp_set_num_threads(options.threads);
        cv::setNumThreads(options.threads);
    }
    return Sam::load(options.checkpoint, type, chosen_precision(options.precision));
}

}  // namespace sqasam::cli
