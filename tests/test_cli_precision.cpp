// --precision on the CLI: bf16 runs where the CPU has it and says so in `sqasam bench`'s JSON; where oneDNN may
// not use AVX512-BF16 (DNNL_MAX_CPU_ISA caps it, as on an older CPU) bf16 falls back to fp32 with one warning;
// auto runs whichever is faster here.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <tuple>
#include <utility>

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
    EXPECT_EQ(bench_json(result)["bf16_speedup"].get<double>() > 0, native) << result.output;
}

TEST(CliPrecision, Bf16FallsBackToFp32WithOneWarningWithoutTheInstructions) {
    const CliResult result = run_cli(bench_arguments("bf16"), "DNNL_MAX_CPU_ISA=AVX512_CORE");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_EQ(bench_json(result)["precision"], "fp32") << result.output;
    EXPECT_EQ(bench_json(result)["bf16_speedup"].get<double>(), 0.0) << result.output;
    const size_t first = result.output.find(kWarning);
    ASSERT_NE(first, std::string::npos) << result.output;
    EXPECT_EQ(result.output.find(kWarning, first + 1), std::string::npos) << "warned more than once:\n" << result.output;
}

// What `--precision auto` printed: the precision it chose and, where the CPU has bf16 instructions, the measured
// bf16 rate in percent of fp32's (-1 where it has none).
std::pair<std::string, int> auto_choice(const CliResult& result) {
    std::smatch match;
    const std::regex line(R"(--precision auto: (fp32|bf16) \(bf16 products (run at (\d+) %|unsupported))");
    if (!std::regex_search(result.output, match, line)) throw std::runtime_error("no auto line in: " + result.output);
    return {match[1], match[3].matched ? std::stoi(match[3]) : -1};
}

// auto runs bf16 only where its products measure at least 1.25x as fast as fp32's; the choice, the rate it printed
// and the precision that ran agree.
TEST(CliPrecision, AutoRunsBf16OnlyWhereItsProductsAreFaster) {
    const CliResult result = run_cli(bench_arguments("auto"));
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto [chosen, percent] = auto_choice(result);
    if (!sqasam::ops::bf16_supported()) {
        EXPECT_EQ(percent, -1) << result.output;
        EXPECT_EQ(chosen, "fp32") << result.output;
    } else if (percent != 125) {  // 125 % rounds speed-ups on both sides of the 1.25 bound
        EXPECT_GT(percent, 0) << result.output;
        EXPECT_EQ(chosen, percent > 125 ? "bf16" : "fp32") << result.output;
    }
    EXPECT_EQ(bench_json(result)["precision"], chosen) << result.output;
    EXPECT_EQ(result.output.find(kWarning), std::string::npos) << result.output;
}

TEST(CliPrecision, AutoIsFp32WithoutTheInstructions) {
    const CliResult result = run_cli(bench_arguments("auto"), "DNNL_MAX_CPU_ISA=AVX512_CORE");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_EQ(auto_choice(result), std::make_pair(std::string("fp32"), -1)) << result.output;
    EXPECT_EQ(bench_json(result)["precision"], "fp32") << result.output;
    EXPECT_EQ(result.output.find(kWarning), std::string::npos) << result.output;
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
