#pragma once
// Small helpers shared by the test programs: where the reference data lives, reading .npy files.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <sys/types.h>
#include <vector>

#include "sqasam/error.hpp"

namespace sqasam::test {

std::string ref_dir();          // reference outputs written by tests/reference/gen_*.py
std::string shared_data_dir();  // ../shared/data beside the project
std::string source_dir();
std::string cli_path();         // the built sqasam executable
std::string temp_dir(const std::string& name);  // a fresh, empty folder under the build tree, per process

struct NpyArray {
    std::vector<int64_t> shape;
    std::string dtype;           // "<f4", "|u1", "<i4", "<i8", "<f8"
    std::vector<float> values;   // converted to float
};
NpyArray read_npy(const std::string& path);
std::string read_text(const std::string& path);  // a whole file, bytes as they are; empty if unreadable
// The rows of a CSV file, header first, with RFC 4180 quoting undone (enough to check what the writers quote).
std::vector<std::vector<std::string>> read_csv(const std::string& path);

// The message of the sqasam::Error that `run` throws; fails the test if it throws nothing or something else.
template <class Run>
std::string error_of(Run run) {
    try {
        run();
    } catch (const sqasam::Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        ADD_FAILURE() << "threw a non-sqasam exception: " << e.what();
        return {};
    }
    ADD_FAILURE() << "did not throw";
    return {};
}

// Runs the built CLI through the shell with `arguments` (and `environment`, VAR=value ..., before it).
struct CliResult {
    int exit_code = -1;
    std::string output;  // stdout and stderr
};
CliResult run_cli(const std::string& arguments, const std::string& environment = "");
// Starts the built CLI with `args` (no shell), its stdout and stderr into the file `log`, and returns its pid (for
// tests that kill a run); wait_cli waits for it and returns its exit status, -1 when it was killed.
pid_t start_cli(const std::vector<std::string>& args, const std::string& log);
int wait_cli(pid_t pid);
// Kills the run `pid`, just started, at a random moment after its journal file has its first line (so that a resumed
// run has work both done and left, unless the machine is fast enough to finish first, which a resume handles too),
// within 80 % of what is left of a run that takes `full_run` seconds, and waits for it. Returns the seed and the
// moment, for SCOPED_TRACE.
std::string kill_after_first_journal_line(pid_t pid, const std::string& journal, double full_run);

// n values uniform in [low, high), the same for the same seed.
std::vector<float> random_values(size_t n, uint32_t seed, float low = -1.0f, float high = 1.0f);

// Largest |a-b| and max |b|, for relative tolerances.
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);
double max_abs(const std::vector<float>& a);
double relative_l2(const std::vector<float>& a, const std::vector<float>& reference);

// |A and B| / |A or B| (1 when both are empty): of the masks logits > 0 of two logit maps, and of a binary mask
// against a 0/1 float mask (the official code's masks saved as .npy).
double logit_mask_iou(const std::vector<float>& a, const std::vector<float>& b);
double mask_iou(const uint8_t* ours, const float* theirs, size_t count);

}  // namespace sqasam::test
