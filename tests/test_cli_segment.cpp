// `sqasam segment` and `sqasam make-test-model` end to end: the files the CLI writes hold what the library computes;
// bad input fails with a message naming the culprit and leaves nothing in --out.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sqasam/io.hpp"
#include "sqasam/sam.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using namespace sqasam;

using test::CliResult;
using test::run_cli;

// A path as one shell word (the test paths hold no quote characters).
std::string shell_arg(const fs::path& path) { return "'" + path.string() + "'"; }

fs::path small_model() { return fs::path(test::ref_dir()) / "predictor" / "models" / "small.pth"; }

// The image and prompt of one reference case (a polyp image from examples/, see tests/reference/examples.py).
struct SegmentCase {
    std::string image;
    std::vector<int> point, box;
};

SegmentCase reference_case() {
    std::ifstream in(fs::path(test::ref_dir()) / "predictor" / "cases" / "index.json");
    for (const nlohmann::json& spec : nlohmann::json::parse(in))
        if (spec["name"] == "small_upscaled")
            for (const nlohmann::json& prompt : spec["prompts"])
                if (prompt["name"] == "point_box")
                    return {spec["image_file"], prompt["points"][0].get<std::vector<int>>(),
                            prompt["box"].get<std::vector<int>>()};
    throw std::runtime_error("reference case small_upscaled/point_box missing");
}

std::string join(const std::vector<int>& values) {
    std::string out;
    for (int v : values) out += (out.empty() ? "" : ",") + std::to_string(v);
    return out;
}

bool empty_or_missing(const fs::path& dir) { return !fs::exists(dir) || fs::is_empty(dir); }

TEST(CliSegment, WritesWhatTheLibraryComputes) {
    const SegmentCase c = reference_case();
    const fs::path out = test::temp_dir("cli_segment_outputs");
    const CliResult run = run_cli("segment --checkpoint " + shell_arg(small_model()) +
                                  " --image " + shell_arg(c.image) +
                                  " --point " + join(c.point) + " --box " + join(c.box) + " --out " + shell_arg(out));
    ASSERT_EQ(run.exit_code, 0) << run.output;

    const Sam sam = Sam::load(small_model().string());
    SamPredictor predictor(sam);
    predictor.set_image(read_rgb_image(c.image));
    Prompt prompt{{{float(c.point[0]), float(c.point[1]), 1}},
                  BoxPrompt{float(c.box[0]), float(c.box[1]), float(c.box[2]), float(c.box[3])}};
    const MaskPrediction expected = predictor.predict(prompt, {.return_logits = true, .return_low_res_logits = true});
    const int64_t k = expected.num_masks, h = expected.height, w = expected.width;

    const test::NpyArray masks = test::read_npy((out / "masks.npy").string());
    EXPECT_EQ(masks.dtype, "|u1");
    EXPECT_EQ(masks.shape, (std::vector<int64_t>{3, h, w}));
    EXPECT_EQ(masks.values, std::vector<float>(expected.masks.begin(), expected.masks.end()));
    const test::NpyArray logits = test::read_npy((out / "logits.npy").string());
    EXPECT_EQ(logits.dtype, "<f4");
    EXPECT_EQ(logits.shape, (std::vector<int64_t>{k, h, w}));
    EXPECT_EQ(logits.values, expected.logits);
    const test::NpyArray low_res = test::read_npy((out / "low_res_logits.npy").string());
    EXPECT_EQ(low_res.dtype, "<f4");
    EXPECT_EQ(low_res.shape, (std::vector<int64_t>{k, 256, 256}));
    EXPECT_EQ(low_res.values, expected.low_res_logits);

    std::ifstream scores_file(out / "scores.json");
    const nlohmann::json scores = nlohmann::json::parse(scores_file);
    EXPECT_EQ(scores["iou_predictions"].get<std::vector<float>>(), expected.iou_predictions);
    EXPECT_EQ(scores["stability_scores"].get<std::vector<float>>(), expected.stability_scores);
    EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 4) << "temporary files left";
}

TEST(CliSegment, SingleMaskGivesOne) {
    const SegmentCase c = reference_case();
    const fs::path out = test::temp_dir("cli_segment_single");
    const CliResult run = run_cli("segment --checkpoint " + shell_arg(small_model()) +
                                  " --image " + shell_arg(c.image) +
                                  " --box " + join(c.box) + " --single-mask --out " + shell_arg(out));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    EXPECT_EQ(test::read_npy((out / "masks.npy").string()).shape[0], 1);
    EXPECT_EQ(test::read_npy((out / "low_res_logits.npy").string()).shape[0], 1);
}

// Each bad input: exit code 1, "sqasam: error: <culprit>: ..." and an empty --out.
void expect_refused(const std::string& arguments, const fs::path& out, const std::string& culprit) {
    const CliResult run = run_cli(arguments + " --out " + shell_arg(out));
    EXPECT_EQ(run.exit_code, 1) << run.output;
    EXPECT_NE(run.output.find("sqasam: error: " + culprit), std::string::npos) << run.output;
    EXPECT_TRUE(empty_or_missing(out)) << "files left in " << out;
}

TEST(CliSegment, RefusesBadInput) {
    const SegmentCase c = reference_case();
    const fs::path dir = test::temp_dir("cli_segment_bad");
    const fs::path out = dir / "out";
    const std::string model = " --checkpoint " + shell_arg(small_model());
    const std::string point = " --point " + join(c.point);

    const fs::path missing = dir / "no_such_image.png";
    expect_refused("segment" + model + " --image " + shell_arg(missing) + point, out, missing.string());

    const fs::path corrupt = dir / "corrupt.png";
    {
        std::mt19937 random(7);
        std::ofstream file(corrupt, std::ios::binary);
        for (int i = 0; i < 37; ++i) file.put(static_cast<char>(random()));
    }
    expect_refused("segment" + model + " --image " + shell_arg(corrupt) + point, out, corrupt.string());

    // The first half of a real checkpoint: a zip without its central directory.
    const fs::path truncated = dir / "truncated.pth";
    {
        std::ifstream in(small_model(), std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::ofstream(truncated, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    }
    expect_refused("segment --checkpoint " + shell_arg(truncated) + " --image " + shell_arg(c.image) + point, out,
                   truncated.string());

    for (const char* box : {"10,20,30", "10,20,30,abc", "10,20,30,40,50", "30,20,10,40"})
        expect_refused("segment" + model + " --image " + shell_arg(c.image) + " --box " + box, out, "--box");
    expect_refused("segment" + model + " --image " + shell_arg(c.image) + " --point 12", out, "--point");
}

// make-test-model writes a loadable model that runs through the whole pipeline.
TEST(CliMakeTestModel, RunsThroughSegment) {
    const SegmentCase c = reference_case();
    const fs::path dir = test::temp_dir("cli_test_model");
    const fs::path model = dir / "test_model.safetensors";
    const CliResult made = run_cli("make-test-model --out " + shell_arg(model) + " --seed 3");
    ASSERT_EQ(made.exit_code, 0) << made.output;
    EXPECT_NE(made.output.find("mean nothing"), std::string::npos) << made.output;

    const Sam sam = Sam::load(model.string());
    EXPECT_EQ(sam.info().type, ModelType::Custom);
    EXPECT_EQ(sam.info().encoder_embed_dim, 64);

    const CliResult run = run_cli("segment --checkpoint " + shell_arg(model) + " --image " + shell_arg(c.image) +
                                  " --point " + join(c.point) + " --out " + shell_arg(dir / "out"));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    const test::NpyArray masks = test::read_npy((dir / "out" / "masks.npy").string());
    EXPECT_EQ(masks.shape[0], 3);
}

}  // namespace
