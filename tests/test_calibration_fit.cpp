// The Dice calibration: fitting on rows whose true Dice follows from the features, the conformal intervals, the
// choice of booster by the features an image has, monotonicity, and the file format.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>

#include "sqasam/calibration.hpp"
#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

namespace {

// A row whose features are noisy views of its true Dice; probability features only when asked.
CalibrationRow synthetic_row(std::mt19937_64& rng, const std::string& group, bool with_probability) {
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    std::normal_distribution<double> noise(0.0, 0.05);
    CalibrationRow row;
    row.group = group;
    row.true_dice = uniform(rng);
    auto view = [&](double spread) { return std::clamp(row.true_dice + spread * noise(rng), 0.0, 1.0); };
    for (const FeatureInfo& info : image_features()) {
        if (info.group == FeatureGroup::Agreement) continue;
        if (info.group == FeatureGroup::Probability && !with_probability) continue;
        row.features[info.name] = info.direction > 0 ? view(info.group == FeatureGroup::Probability ? 0.5 : 2.0)
                                                     : uniform(rng);  // undirected features carry no signal
    }
    return row;
}

std::vector<CalibrationRow> synthetic_rows(std::uint64_t seed, int per_group) {
    std::mt19937_64 rng(seed);
    std::vector<CalibrationRow> rows;
    for (const char* group : {"a", "b", "c"})
        for (int i = 0; i < per_group; ++i) rows.push_back(synthetic_row(rng, group, i % 2 == 0));
    return rows;
}

Features without_probability(Features features) {
    for (const FeatureInfo& info : image_features())
        if (info.group == FeatureGroup::Probability) features.erase(info.name);
    return features;
}

// One fit for the suite, freed before the program ends: XGBoost's own globals go at exit, and a booster freed
// after them would touch freed memory.
class CalibrationFit : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        calibration = std::make_unique<Calibration>(Calibration::fit(synthetic_rows(1, 120), {{"note", "synthetic"}}));
    }
    static void TearDownTestSuite() { calibration.reset(); }
    static const Calibration& fitted() { return *calibration; }
    static std::unique_ptr<Calibration> calibration;
};
std::unique_ptr<Calibration> CalibrationFit::calibration;

}  // namespace

TEST_F(CalibrationFit, EstimatesTheDiceOfNewImagesWithIntervalsThatCoverThem) {
    const Calibration& calibration = fitted();
    // Probability and SAM-only boosters; no agreement feature in the rows, so no booster needs it.
    ASSERT_EQ(calibration.feature_sets().size(), 2u);
    EXPECT_GT(calibration.feature_sets()[0].size(), calibration.feature_sets()[1].size()) << "richest first";

    std::mt19937_64 rng(99);
    double error_rich = 0, error_poor = 0, covered = 0, width = 0;
    const int n = 400;
    for (int i = 0; i < n; ++i) {
        const CalibrationRow row = synthetic_row(rng, "new", true);
        const auto rich = calibration.estimate(row.features);
        const auto poor = calibration.estimate(without_probability(row.features));
        ASSERT_TRUE(rich && poor);
        EXPECT_LE(rich->low, rich->dice);
        EXPECT_LE(rich->dice, rich->high);
        EXPECT_GE(rich->low, 0.0);
        EXPECT_LE(rich->high, 1.0);
        error_rich += std::abs(rich->dice - row.true_dice);
        error_poor += std::abs(poor->dice - row.true_dice);
        covered += rich->low <= row.true_dice && row.true_dice <= rich->high;
        width += rich->high - rich->low;
    }
    EXPECT_LT(error_rich / n, 0.05);
    EXPECT_LT(error_rich, error_poor) << "the probability features are the sharper view here";
    EXPECT_GT(covered / n, 0.84);
    EXPECT_LT(covered / n, 0.99);
    EXPECT_LT(width / n, 0.4);
}

TEST_F(CalibrationFit, MoreSamAgreementNeverLowersTheEstimate) {
    std::mt19937_64 rng(5);
    const CalibrationRow row = synthetic_row(rng, "new", false);
    double previous = -1;
    for (double value = 0; value <= 1.0001; value += 0.05) {
        Features features = row.features;
        features["sam_dice_area_weighted"] = value;
        const double estimate = fitted().estimate(features)->dice;
        EXPECT_GE(estimate, previous - 1e-7) << "at " << value;
        previous = estimate;
    }
}

TEST_F(CalibrationFit, NamesFeaturesOutsideTheTrainingRangeAndNeedsTheBaseFeatures) {
    std::mt19937_64 rng(6);
    Features features = synthetic_row(rng, "new", false).features;
    features["foreground_fraction"] = 7.0;  // no training row came near
    const auto estimate = fitted().estimate(features);
    ASSERT_TRUE(estimate.has_value());
    EXPECT_EQ(estimate->outside, "foreground_fraction");
    features.erase("sam_dice_mean");
    EXPECT_FALSE(fitted().estimate(features).has_value());
}

TEST_F(CalibrationFit, SavedAndLoadedGivesTheSameEstimates) {
    const fs::path dir = test::temp_dir("calibration_file");
    const std::string path = (dir / "calibration.json").string();
    fitted().save(path);
    const Calibration loaded = Calibration::load(path);
    EXPECT_EQ(loaded.feature_sets(), fitted().feature_sets());
    EXPECT_EQ(loaded.provenance().at("note"), "synthetic");
    EXPECT_DOUBLE_EQ(loaded.coverage(), 0.9);
    std::mt19937_64 rng(7);
    for (int i = 0; i < 20; ++i) {
        const CalibrationRow row = synthetic_row(rng, "new", i % 2 == 0);
        const auto a = fitted().estimate(row.features), b = loaded.estimate(row.features);
        ASSERT_TRUE(a && b);
        EXPECT_NEAR(a->dice, b->dice, 1e-6);
        EXPECT_NEAR(a->high, b->high, 1e-6);
    }
}

TEST_F(CalibrationFit, RefusesBrokenOrForeignFilesNamingThem) {
    const fs::path dir = test::temp_dir("calibration_bad");
    const std::string good = (dir / "good.json").string();
    fitted().save(good);
    nlohmann::json file = nlohmann::json::parse(test::read_text(good));

    auto refused = [&](const nlohmann::json& content, const std::string& expected) {
        const std::string path = (dir / "bad.json").string();
        std::ofstream(path, std::ios::trunc) << content.dump();
        try {
            Calibration::load(path);
            ADD_FAILURE() << "accepted: " << expected;
        } catch (const Error& e) {
            EXPECT_EQ(e.file(), path);
            EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
        }
    };
    nlohmann::json other_version = file;
    other_version["version"] = kCalibrationVersion + 1;
    refused(other_version, "version");
    nlohmann::json other_format = file;
    other_format["format"] = "something else";
    refused(other_format, "not an sqasam calibration");
    nlohmann::json unknown_feature = file;
    unknown_feature["boosters"][0]["features"][0] = "feature_from_the_future";
    refused(unknown_feature, "feature_from_the_future");
    nlohmann::json no_boosters = file;
    no_boosters["boosters"] = nlohmann::json::array();
    refused(no_boosters, "no model");
    refused(nlohmann::json{{"format", kCalibrationFormat}, {"version", kCalibrationVersion}}, "broken");

    std::ofstream(dir / "text.json") << "not json at all";
    EXPECT_THROW(Calibration::load((dir / "text.json").string()), Error);
    EXPECT_THROW(Calibration::load((dir / "absent.json").string()), Error);
}

TEST_F(CalibrationFit, TooFewRowsAreRefused) {
    EXPECT_THROW(Calibration::fit(synthetic_rows(2, 5), {}), Error);
    CalibrationOptions impossible;
    impossible.coverage = 1.0;
    EXPECT_THROW(Calibration::fit(synthetic_rows(2, 50), {}, impossible), Error);
}

// The calibration shipped in calibration/ must stay loadable and fit the defaults it is meant for.
TEST(ShippedCalibration, LoadsAndFitsLiteMedSamsDefaultScoring) {
    const fs::path path = fs::path(test::source_dir()) / "calibration" / "lite_medsam.json";
    const Calibration shipped = Calibration::load(path.string());
    const nlohmann::json& seen = shipped.provenance();
    EXPECT_EQ(seen.at("sam_model_type"), to_string(ModelType::LiteMedSam));
    const PromptingDefaults defaults = default_prompting(ModelType::LiteMedSam);
    EXPECT_EQ(seen.at("scoring").at("reducer"), to_string(defaults.reducer));
    EXPECT_EQ(seen.at("scoring").at("mask_choice"), to_string(defaults.mask_choice));
    EXPECT_EQ(seen.at("scoring").at("aggregation"), to_string(defaults.aggregation));
    EXPECT_GE(seen.at("runs").size(), 3u);
    // A good-looking single-model prediction without probabilities gets an estimate from the SAM and shape model.
    Features features{{"sam_dice_mean", 0.95},        {"sam_dice_area_weighted", 0.95}, {"sam_dice_worst", 0.95},
                      {"sam_box_boundary_iou", 0.8}, {"sam_box_predicted_iou", 0.9},   {"sam_box_stability", 0.95},
                      {"sam_point_box_dice", 0.1},   {"n_objects", 1},                  {"foreground_fraction", 0.2},
                      {"largest_object_share", 1},   {"compactness", 0.8}};
    const auto estimate = shipped.estimate(features);
    ASSERT_TRUE(estimate.has_value());
    EXPECT_GT(estimate->dice, 0.7);
    EXPECT_LE(estimate->low, estimate->dice);
    EXPECT_LE(estimate->dice, estimate->high);
}
