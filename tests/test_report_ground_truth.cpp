// The true Dice and the Model-Confidence baseline that images.csv and the evaluation rest on, checked on real
// data against an independent numpy computation (tests/reference/gen_eval.py): PraNet's soft maps on Kvasir.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "sqasam/io.hpp"
#include "sqasam/sqa.hpp"
#include "test_support.hpp"

namespace sqasam {
namespace {

TEST(ReportGroundTruth, TrueDiceAndModelConfidenceMatchNumpyOnKvasirPraNet) {
    const std::filesystem::path reference_path = test::ref_dir() + "/eval/true_dice_kvasir_pranet.json";
    if (!std::filesystem::exists(reference_path))
        GTEST_SKIP() << "no " << test::shared_data_dir() << "/polyp_kvasir_pranet_split/pred (real data beside the "
                     << "project), so gen_eval.py wrote no true-Dice reference";
    std::ifstream in(reference_path);
    const auto reference = nlohmann::json::parse(in);
    const std::filesystem::path folder = reference["folder"].get<std::string>();
    const double threshold = reference["threshold"];
    ASSERT_GE(reference["dice"].size(), 50u);
    for (const auto& [name, expected] : reference["dice"].items()) {
        const LabelMap pred = read_label_map((folder / "pred" / (name + ".png")).string(), {.soft_threshold = threshold});
        const LabelMap gt = read_label_map((folder / "gt" / (name + ".png")).string());
        EXPECT_NEAR(true_dice(pred.labels, gt.labels).dice, expected.get<double>(), 1e-12) << name;
        const cv::Mat probability = read_probability_map((folder / "pred" / (name + ".png")).string());
        EXPECT_NEAR(model_confidence(probability), reference["model_confidence"][name].get<double>(), 1e-6) << name;
    }
}

}  // namespace
}  // namespace sqasam
