// The evaluation metrics against scipy / brute-force references (tests/reference/gen_eval.py), and the
// evaluation of a run: which images take part, intervals, the ablation.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "sqasam/eval.hpp"
#include "test_support.hpp"

namespace sqasam {
namespace {

constexpr double kTolerance = 1e-12;

nlohmann::json load_cases() {
    std::ifstream in(test::ref_dir() + "/eval/cases.json");
    if (!in) throw std::runtime_error("missing eval reference; run tests/reference/gen_eval.py");
    return nlohmann::json::parse(in);
}

Pairs pairs_of(const nlohmann::json& c) {
    return {c["names"].get<std::vector<std::string>>(), c["value"].get<std::vector<double>>(),
            c["true_dice"].get<std::vector<double>>()};
}

void expect_matches(const std::optional<double>& actual, const nlohmann::json& expected, const std::string& what) {
    if (expected.is_null()) {
        EXPECT_FALSE(actual.has_value()) << what << " should be undefined, got " << actual.value_or(0);
    } else {
        ASSERT_TRUE(actual.has_value()) << what << " should be " << expected.get<double>();
        EXPECT_NEAR(*actual, expected.get<double>(), kTolerance) << what;
    }
}

TEST(EvalMetrics, MatchReferenceOnEveryCase) {
    const auto cases = load_cases();
    ASSERT_GE(cases.size(), 5u);
    for (const auto& c : cases) {
        const std::string name = c["name"];
        SCOPED_TRACE(name);
        const Pairs pairs = pairs_of(c);
        const auto ranks = average_ranks(pairs.value);
        const auto expected_ranks = c["ranks"].get<std::vector<double>>();
        ASSERT_EQ(ranks.size(), expected_ranks.size());
        for (std::size_t i = 0; i < ranks.size(); ++i) EXPECT_DOUBLE_EQ(ranks[i], expected_ranks[i]) << "rank " << i;

        expect_matches(pearson(pairs.value, pairs.true_dice), c["pearson"], "pearson");
        expect_matches(spearman(pairs.value, pairs.true_dice), c["spearman"], "spearman");
        expect_matches(bottom_k_accuracy(pairs, 0.25), c["bottom25"], "bottom25");
        expect_matches(bottom_k_accuracy(pairs, 0.50), c["bottom50"], "bottom50");
        std::vector<bool> failed;
        for (double d : pairs.true_dice) failed.push_back(d < c["threshold"].get<double>());
        expect_matches(auroc_failure(pairs.value, failed), c["auroc"], "auroc");
        expect_matches(aurc(pairs), c["aurc"], "aurc");
        expect_matches(optimal_aurc(pairs.true_dice), c["optimal_aurc"], "optimal_aurc");

        const auto quantiles = c["quantiles"].get<std::vector<double>>();
        const auto percentiles = c["percentiles"].get<std::vector<double>>();
        for (std::size_t q = 0; q < percentiles.size(); ++q)
            EXPECT_NEAR(percentile(pairs.value, quantiles[q]), percentiles[q], kTolerance) << "q=" << quantiles[q];
    }
}

TEST(EvalMetrics, EvaluatePairsCombinesTheMetrics) {
    const auto cases = load_cases();
    for (const auto& c : cases) {
        SCOPED_TRACE(c["name"].get<std::string>());
        EvalOptions options;
        options.failure_threshold = c["threshold"];
        options.bootstrap_resamples = 0;
        const Metrics m = evaluate_pairs(pairs_of(c), options);
        EXPECT_EQ(m.n, static_cast<int>(c["value"].size()));
        expect_matches(m.pearson, c["pearson"], "pearson");
        expect_matches(m.spearman, c["spearman"], "spearman");
        expect_matches(m.auroc, c["auroc"], "auroc");
        expect_matches(m.aurc, c["aurc"], "aurc");
        if (m.aurc) EXPECT_NEAR(*m.e_aurc, c["aurc"].get<double>() - c["optimal_aurc"].get<double>(), kTolerance);
        EXPECT_FALSE(m.pearson_ci || m.spearman_ci || m.auroc_ci || m.aurc_ci) << "no resamples, no intervals";
    }
}

TEST(EvalMetrics, BootstrapIntervalsAreDeterministicAndBracketTheEstimate) {
    const auto random_case = load_cases().at(0);
    ASSERT_EQ(random_case["name"], "random");
    const Pairs pairs = pairs_of(random_case);
    EvalOptions options;
    options.bootstrap_resamples = 500;
    const Metrics first = evaluate_pairs(pairs, options), again = evaluate_pairs(pairs, options);
    for (auto [estimate, ci, ci_again] :
         {std::tuple{first.pearson, first.pearson_ci, again.pearson_ci},
          std::tuple{first.spearman, first.spearman_ci, again.spearman_ci},
          std::tuple{first.auroc, first.auroc_ci, again.auroc_ci}, std::tuple{first.aurc, first.aurc_ci, again.aurc_ci}}) {
        ASSERT_TRUE(estimate && ci && ci_again);
        EXPECT_LT(ci->low, *estimate);
        EXPECT_GT(ci->high, *estimate);
        EXPECT_LT(ci->high - ci->low, 0.5) << "83 images give a usefully narrow interval";
        EXPECT_EQ(ci->low, ci_again->low) << "same seed, same interval";
        EXPECT_EQ(ci->high, ci_again->high);
    }
    options.seed += 1;
    const Metrics other_seed = evaluate_pairs(pairs, options);
    EXPECT_NE(other_seed.pearson_ci->low, first.pearson_ci->low);
}

TEST(EvalMetrics, UndefinedEstimateHasNoInterval) {
    const Pairs constant{{"a", "b", "c", "d"}, {0.5, 0.5, 0.5, 0.5}, {0.1, 0.9, 0.8, 0.2}};
    const Metrics m = evaluate_pairs(constant);
    EXPECT_FALSE(m.pearson || m.pearson_ci || m.spearman || m.spearman_ci);
    ASSERT_TRUE(m.auroc_ci);  // all ties: every resample with both classes gives exactly 1/2
    EXPECT_DOUBLE_EQ(m.auroc_ci->low, 0.5);
    EXPECT_DOUBLE_EQ(m.auroc_ci->high, 0.5);
}

ObjectResult object(const std::string& image, long area, double point_dice, double box_dice) {
    ObjectResult o;
    o.image = image;
    o.area = area;
    for (std::size_t c = 0; c < kAllMaskChoices.size(); ++c) {
        // Different values per mask choice so that a mix-up between choices would show.
        o.point_prompt.dice[c] = point_dice - 0.1 * static_cast<double>(c);
        o.box_prompt.dice[c] = box_dice - 0.05 * static_cast<double>(c);
        o.point_prompt.predicted_iou[c] = 0.9;
        o.box_prompt.predicted_iou[c] = 0.8;
    }
    return o;
}

TEST(EvalImageScore, MeanAndAreaWeighted) {
    const ObjectResult small = object("x", 10, 0.9, 0.7), large = object("x", 30, 0.4, 0.6);
    const std::vector<const ObjectResult*> both{&small, &large};
    for (const auto reducer : kAllReducers)
        for (const auto choice : kAllMaskChoices) {
            const double s = small.score_with(reducer, choice), l = large.score_with(reducer, choice);
            EXPECT_NEAR(*image_score(both, reducer, choice, ImageAggregation::Mean), (s + l) / 2, 1e-15);
            EXPECT_NEAR(*image_score(both, reducer, choice, ImageAggregation::AreaWeighted), (10 * s + 30 * l) / 40,
                        1e-15);
        }
    EXPECT_FALSE(image_score({}, Reducer::Max, MaskChoice::BestDice, ImageAggregation::Mean));
}

std::vector<ImageResult> images_with_ground_truth(int n) {
    std::vector<ImageResult> images(n);
    for (int i = 0; i < n; ++i) {
        images[i].image = "im" + std::to_string(i);
        images[i].n_objects = 1;
        images[i].true_dice = 0.1 + 0.8 * i / (n - 1);
        images[i].score = *images[i].true_dice * 0.9 + 0.05 * (i % 3);
    }
    return images;
}

TEST(EvalRun, OnlyImagesWithBothValuesTakePart) {
    auto images = images_with_ground_truth(10);
    images[2].score.reset();       // no objects: no score
    images[5].true_dice.reset();   // no ground truth for this one
    images[7].model_confidence = 0.9;
    images[8].model_confidence = 0.7;
    images[9].model_confidence = 0.95;
    EvalOptions options;
    options.bootstrap_resamples = 50;
    const Evaluation e = evaluate(images, {}, options);
    EXPECT_EQ(e.n_images, 10);
    EXPECT_EQ(e.n_with_ground_truth, 9);
    EXPECT_EQ(e.sqa.n, 8);
    ASSERT_TRUE(e.model_confidence);
    EXPECT_EQ(e.model_confidence->n, 3);
    EXPECT_TRUE(e.sqa.pearson_ci.has_value());
}

TEST(EvalRun, WithoutGroundTruthEverythingIsUndefined) {
    auto images = images_with_ground_truth(6);
    for (auto& image : images) image.true_dice.reset();
    const Evaluation e = evaluate(images, {object("im0", 5, 0.5, 0.5)});
    EXPECT_EQ(e.n_with_ground_truth, 0);
    EXPECT_EQ(e.sqa.n, 0);
    EXPECT_FALSE(e.sqa.pearson || e.sqa.bottom25 || e.sqa.auroc || e.sqa.aurc);
    EXPECT_FALSE(e.model_confidence);
    EXPECT_TRUE(e.ablation.empty());
}

TEST(EvalRun, AblationCoversEveryConfigurationFromTheObjects) {
    auto images = images_with_ground_truth(8);
    std::vector<ObjectResult> objects;
    for (int i = 0; i < 8; ++i) {
        // The point prompt tracks the true Dice, the box prompt runs against it.
        const double dice = *images[i].true_dice;
        objects.push_back(object(images[i].image, 20 + i, dice, 1.0 - dice));
        objects.push_back(object(images[i].image, 5, dice * 0.8, 0.5));
    }
    images[3].score.reset();  // an image whose score is missing still has objects: the ablation recomputes it
    const Evaluation e = evaluate(images, objects, {.bootstrap_resamples = 0});
    ASSERT_EQ(e.ablation.size(), kAllReducers.size() * kAllMaskChoices.size() * 2);
    std::set<std::tuple<Reducer, MaskChoice, ImageAggregation>> seen;
    for (const auto& row : e.ablation) {
        seen.insert({row.reducer, row.mask_choice, row.aggregation});
        EXPECT_EQ(row.metrics.n, 8);
        EXPECT_FALSE(row.metrics.pearson_ci.has_value());
        if (row.reducer == Reducer::PointOnly) EXPECT_GT(*row.metrics.spearman, 0.99);
        if (row.reducer == Reducer::BoxOnly && row.aggregation == ImageAggregation::Mean)
            EXPECT_LT(*row.metrics.spearman, -0.99);
    }
    EXPECT_EQ(seen.size(), e.ablation.size());
}

}  // namespace
}  // namespace sqasam
