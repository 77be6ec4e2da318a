#include <malloc.h>

#include <exception>
#include <iostream>

#include "cli/commands.hpp"
#include "sqasam/error.hpp"

int main(int argc, char** argv) {
    // Keep freed memory in the process: predictions are large (the 3 masks of a 1920x1080 image are 6 MB), and
    // glibc would return each one to the kernel when it is freed, so that the next prediction faults its pages in
    // and zeroes them anew (measured ~1.5-2 ms per prompt of a batched call of 20). The PyTorch peer runs with
    // jemalloc and decay off for the same reason (bench/NOTES.md).
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest: requests below it come from the heap
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    CLI::App app{"sqasam: flag segmentation predictions not to trust, without ground truth (SQA-SAM)"};
    app.set_version_flag("--version", "sqasam " SQASAM_VERSION);
    app.require_subcommand(1);
    sqasam::cli::add_segment_command(app);
    sqasam::cli::add_score_command(app);
    sqasam::cli::add_calibrate_command(app);
    sqasam::cli::add_score_volumes_command(app);
    sqasam::cli::add_bench_command(app);
    sqasam::cli::add_test_model_command(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    } catch (const sqasam::Error& e) {
        std::cerr << "sqasam: error: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "sqasam: error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
