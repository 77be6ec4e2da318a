// --precision on the CLI: bf16 runs where the CPU has it and says so in `sqasam bench`'s JSON; where oneDNN may
// not use AVX512-BF16 (DNNL_MAX_CPU_ISA caps it, as on an older CPU) bf16 falls back to fp32 with one warning.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ops/ops.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;

using sqasam::test::CliResult;
using sqasam::test::run_cli;

std::string bench_arguments(const std::string& precision, int repeat = 1) {
    const fs::path model = fs::path(sqasam::test::ref_dir()) / "predictor" / "models" / "small.pth";
    return "bench --checkpoint '" + model.string() + "' --prompts 1 --repeat " + std::to_string(repeat) +
           " --threads 2 --precision " + precision;
}

// The JSON line `sqasam bench` prints last.
nlohmann::json bench_json(const CliResult& result) {
    const size_t start = result.output.rfind("\n{");
    if (start == std::string::npos) throw std::runtime_error("no JSON line in: " + result.output);
    return nlohmann::json::parse(result.output.substr(start + 1));
}

const char* const kWarning = "computing in fp32 instead of bf16";

TEST(CliPrecision, BenchRunsBf16AndReportsIt) {
    const CliResult result = run_cli(bench_arguments("bf16"));
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const bool native = sqasam::ops::bf16_supported();
    EXPECT_EQ(bench_json(result)["precision"], native ? "bf16" : "fp32") << result.output;
    EXPECT_EQ(result.output.find(kWarning) != std::string::npos, !native) << result.output;
}

TEST(CliPrecision, Bf16FallsBackToFp32WithOneWarningWithoutTheInstructions) {
    const CliResult result = run_cli(bench_arguments("bf16"), "DNNL_MAX_CPU_ISA=AVX512_CORE");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_EQ(bench_json(result)["precision"], "fp32") << result.output;
    const size_t first = result.output.find(kWarning);
    ASSERT_NE(first, std::string::npos) << result.output;
    EXPECT_EQ(result.output.find(kWarning, first + 1), std::string::npos) << "warned more than once:\n" << result.output;
}

// --profile reports the encoder and the decoder (predict of one prompt, postprocessing included) by op class: their
// products with a rate, the postprocessing under its own class, one call per encoder pass or prompt and pass.
TEST(CliBench, ProfileCoversTheEncoderAndTheDecoder) {
    const CliResult result = run_cli(bench_arguments("fp32", 2) + " --profile");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const nlohmann::json json = bench_json(result);
    for (const auto& [key, calls, resampled] : {std::tuple{"profile", 2, false}, {"decoder_profile", 2, true}}) {
        SCOPED_TRACE(key);
        ASSERT_TRUE(json.contains(key)) << result.output;
        const nlohmann::json& profile = json[key];
        EXPECT_EQ(profile["calls"], calls);
        EXPECT_GT(profile["ms_per_call"].get<double>(), 0.0);
        EXPECT_GT(profile["product_gflop_per_call"].get<double>(), 0.0);
        bool products = false, resampling = false;
        for (const nlohmann::json& row : profile["classes"]) {
            products |= row["class"] == "matrix products" && row["gflops"].get<double>() > 0;
            resampling |= row["class"] == "mask resampling, thresholds (postprocessing)";
        }
        EXPECT_TRUE(products) << profile.dump();
        EXPECT_EQ(resampling, resampled) << profile.dump();
    }
}

TEST(CliPrecision, UnknownPrecisionIsRefused) {
    for (const char* command : {"bench", "segment", "score"}) {
        const CliResult result = run_cli(std::string(command) + " --precision fp16");
        EXPECT_NE(result.exit_code, 0) << command;
        EXPECT_NE(result.output.find("--precision"), std::string::npos) << command << ": " << result.output;
    }
}

}  // namespace
