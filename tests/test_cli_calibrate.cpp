// Several models' predictions in one `sqasam score` run, `sqasam calibrate` on finished runs and
// `score --calibration`, end to end with a random-weight test model (the numbers mean nothing; the plumbing is
// what is checked).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/io.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

using test::read_text;
using test::run_cli;

// The 8 demo images with 4 models' predictions, made from the ground truth by eroding, dilating and shifting it
// (so the rows' true Dice spread), enough rows (32) for a calibration.
class CliCalibrate : public ::testing::Test {
protected:
    static fs::path root, model, data;
    static constexpr int kModels = 4;

    static void SetUpTestSuite() {
        root = test::temp_dir("cli_calibrate");
        model = root / "test_model.safetensors";
        ASSERT_EQ(run_cli("make-test-model --out " + model.string()).exit_code, 0);
        data = root / "data";
        fs::create_directories(data);
        const fs::path examples = fs::path(test::source_dir()) / "examples";
        fs::copy(examples / "images", data / "images", fs::copy_options::recursive);
        fs::copy(examples / "gt", data / "gt", fs::copy_options::recursive);
        for (int m = 0; m < kModels; ++m) fs::create_directories(data / ("model" + std::to_string(m)));
        for (const auto& entry : fs::directory_iterator(examples / "gt")) {
            const cv::Mat gt = cv::imread(entry.path().string(), cv::IMREAD_GRAYSCALE);
            const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_ELLIPSE, {9, 9});
            cv::Mat eroded, dilated, shifted;
            cv::erode(gt, eroded, kernel);
            cv::dilate(gt, dilated, kernel, {-1, -1}, 3);
            const cv::Mat shift = (cv::Mat_<double>(2, 3) << 1, 0, gt.cols / 6, 0, 1, 0);
            cv::warpAffine(gt, shifted, shift, gt.size(), cv::INTER_NEAREST);
            const cv::Mat predictions[kModels] = {gt, eroded, dilated, shifted};
            for (int m = 0; m < kModels; ++m)
                cv::imwrite((data / ("model" + std::to_string(m)) / entry.path().filename()).string(), predictions[m]);
        }
    }

    static std::string score_args(const fs::path& out, const std::string& more = "") {
        std::string args = "score --checkpoint " + model.string() + " --images " + (data / "images").string() +
                           " --out " + out.string() + " --threads 2 " + more;
        for (int m = 0; m < kModels; ++m) args += " --pred " + (data / ("model" + std::to_string(m))).string();
        return args;
    }
    static std::vector<CsvRow> table(const fs::path& file) { return read_csv(file.string()); }
    static std::size_t column(const std::vector<CsvRow>& rows, const std::string& name) {
        const auto& header = rows.at(0).fields;
        const auto found = std::find(header.begin(), header.end(), name);
        EXPECT_NE(found, header.end()) << "no column " << name;
        return static_cast<std::size_t>(found - header.begin());
    }
};
fs::path CliCalibrate::root, CliCalibrate::model, CliCalibrate::data;

}  // namespace

TEST_F(CliCalibrate, ScoresSeveralModelsCalibratesAndEstimates) {
    const fs::path scored = root / "scored";
    const test::CliResult run = run_cli(score_args(scored, "--gt " + (data / "gt").string()));
    ASSERT_EQ(run.exit_code, 0) << run.output;
    EXPECT_NE(run.output.find("8 images x 4 models"), std::string::npos) << run.output;
    const auto rows = table(scored / "images.csv");
    ASSERT_EQ(rows.size(), 1u + 8 * kModels);
    const std::size_t model_column = column(rows, "model"), agreement = column(rows, "model_agreement");
    EXPECT_EQ(rows[1].fields[model_column], "model0");
    EXPECT_EQ(rows[4].fields[model_column], "model3");
    EXPECT_EQ(rows[1].fields[0], rows[4].fields[0]) << "each image's models are listed together";
    EXPECT_FALSE(rows[1].fields[agreement].empty());

    const fs::path calibration = root / "calibration.json";
    const test::CliResult fit =
        run_cli("calibrate --runs " + scored.string() + " --out " + calibration.string() + " --coverage 0.8");
    ASSERT_EQ(fit.exit_code, 0) << fit.output;
    const nlohmann::json file = nlohmann::json::parse(read_text(calibration.string()));
    EXPECT_EQ(file["format"], "sqasam-calibration");
    EXPECT_EQ(file["coverage"], 0.8);
    EXPECT_EQ(file["provenance"]["runs"][0]["models"].size(), 4u);
    EXPECT_EQ(file["provenance"]["sam_model_type"], "custom");

    // Applying it to the finished run recomputes nothing and adds the estimate and its interval.
    const test::CliResult applied =
        run_cli(score_args(scored, "--gt " + (data / "gt").string() + " --resume --calibration " + calibration.string()));
    ASSERT_EQ(applied.exit_code, 0) << applied.output;
    EXPECT_NE(applied.output.find("8 images taken from the journal"), std::string::npos) << applied.output;
    const auto estimated = table(scored / "images.csv");
    const std::size_t estimate = column(estimated, "estimated_dice"), low = column(estimated, "dice_low"),
                      high = column(estimated, "dice_high"), score = column(estimated, "score");
    int with_estimate = 0;
    for (std::size_t r = 1; r < estimated.size(); ++r) {
        const auto& f = estimated[r].fields;
        if (f[score].empty()) continue;
        ASSERT_FALSE(f[estimate].empty()) << "every scored image gets an estimate";
        EXPECT_LE(std::stod(f[low]), std::stod(f[estimate]));
        EXPECT_LE(std::stod(f[estimate]), std::stod(f[high]));
        ++with_estimate;
    }
    EXPECT_GT(with_estimate, 0);
    const nlohmann::json summary = nlohmann::json::parse(read_text((scored / "summary.json").string()));
    EXPECT_EQ(summary["estimated_dice"]["n"], with_estimate);
    EXPECT_TRUE(summary["estimated_dice"]["mae"].is_number());
    EXPECT_EQ(summary["calibration"]["coverage"], 0.8);
    EXPECT_NE(read_text((scored / "report.html").string()).find("Calibrated Dice estimate"), std::string::npos);

    // A calibration whose models all need several models' predictions is refused on a one-model run, naming what
    // the run lacks.
    nlohmann::json agreement_only = file;
    agreement_only["boosters"] = nlohmann::json::array();
    for (const auto& booster : file["boosters"])
        for (const auto& feature : booster["features"])
            if (feature == "model_agreement") agreement_only["boosters"].push_back(booster);
    ASSERT_FALSE(agreement_only["boosters"].empty());
    const fs::path needs_agreement = root / "needs_agreement.json";
    std::ofstream(needs_agreement) << agreement_only.dump();
    const fs::path one_model = root / "one_model";
    const test::CliResult lacking =
        run_cli("score --checkpoint " + model.string() + " --images " + (data / "images").string() + " --pred " +
                (data / "model1").string() + " --out " + one_model.string() + " --calibration " +
                needs_agreement.string());
    EXPECT_EQ(lacking.exit_code, 1) << lacking.output;
    EXPECT_NE(lacking.output.find("model_agreement"), std::string::npos) << lacking.output;
    EXPECT_NE(lacking.output.find(needs_agreement.string()), std::string::npos) << lacking.output;

    // Another scoring configuration is refused before anything runs.
    const fs::path other = root / "other_reducer";
    const test::CliResult refused =
        run_cli(score_args(other, "--reducer min --calibration " + calibration.string()));
    EXPECT_EQ(refused.exit_code, 1);
    EXPECT_NE(refused.output.find("reducer"), std::string::npos) << refused.output;
    EXPECT_FALSE(fs::exists(other / "images.csv"));
}

TEST_F(CliCalibrate, RefusesRunsWithoutGroundTruth) {
    const fs::path unlabelled = root / "unlabelled";
    ASSERT_EQ(run_cli(score_args(unlabelled)).exit_code, 0);
    const test::CliResult refused =
        run_cli("calibrate --runs " + unlabelled.string() + " --out " + (root / "never.json").string());
    EXPECT_EQ(refused.exit_code, 1);
    EXPECT_NE(refused.output.find("no ground truth"), std::string::npos) << refused.output;
    EXPECT_NE(refused.output.find(unlabelled.string()), std::string::npos) << refused.output;
    EXPECT_FALSE(fs::exists(root / "never.json"));

    const test::CliResult not_a_run =
        run_cli("calibrate --runs " + (data / "images").string() + " --out " + (root / "never.json").string());
    EXPECT_EQ(not_a_run.exit_code, 1);
    EXPECT_NE(not_a_run.output.find("summary.json"), std::string::npos) << not_a_run.output;
}
