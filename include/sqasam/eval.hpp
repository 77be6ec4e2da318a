#pragma once
// How well a per-image quality score tracks the true Dice: the metrics of the SQA-SAM paper, with bootstrap
// intervals, for SQA, for the Model-Confidence baseline and for every scoring configuration (ablation).
//
// Conventions (also in the README):
// - Only images with both a value (score or model confidence) and a true Dice take part; n says how many.
// - Ordering ties are broken by image name, then by input position, so every result is deterministic.
// - bottom-K accuracy: n_K = ceil(K * n); the n_K lowest images by score and the n_K lowest by true Dice
//   (ascending, ties by name) are compared; accuracy = |both| / n_K.
// - AUROC: a failure is true Dice < failure_threshold; a low score predicts failure; tied scores count 1/2.
//   Undefined (empty) when failures or successes are absent.
// - AURC: images sorted by score descending (most trusted first, ties by name), risk = 1 - true Dice,
//   AURC = mean over k = 1..n of the mean risk of the first k images. optimal_aurc is the same with the images
//   sorted by risk ascending (the best any score could do); e_aurc = aurc - optimal_aurc.
// - Intervals: percentile bootstrap over images (resampled with replacement, std::mt19937_64 with a fixed seed),
//   quantiles interpolated linearly between order statistics (numpy's default); resamples on which a metric is
//   undefined are left out of its interval.
// Any metric that is undefined (fewer than 2 images, a constant vector, an empty class) is std::nullopt.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sqasam/results.hpp"

namespace sqasam {

struct EvalOptions {
    double failure_threshold = 0.75;  // true Dice below this is a failure (AUROC)
    int bootstrap_resamples = 1000;   // 0 disables the intervals
    double confidence = 0.95;
    std::uint64_t seed = 20231215;
};

struct Interval {
    double low = 0, high = 0;
};

// Paired values for one quality measure: names[i], value[i] (score), true_dice[i].
struct Pairs {
    std::vector<std::string> names;
    std::vector<double> value;
    std::vector<double> true_dice;
};

struct Metrics {
    int n = 0;           // images with both values
    int n_failures = 0;  // of those, true Dice < failure_threshold
    std::optional<double> pearson, spearman, bottom25, bottom50, auroc, aurc, optimal_aurc, e_aurc;
    std::optional<Interval> pearson_ci, spearman_ci, auroc_ci, aurc_ci;  // empty without bootstrap
};

struct AblationRow {
    Reducer reducer;
    MaskChoice mask_choice;
    ImageAggregation aggregation;
    Metrics metrics;  // without intervals
};

struct Evaluation {
    int n_images = 0;
    int n_with_ground_truth = 0;
    Metrics sqa;
    std::optional<Metrics> model_confidence;  // when any image has a model confidence
    // The calibrated Dice estimate (score --calibration): its metrics as a quality measure, its mean absolute error
    // and the share of images whose true Dice lies in its interval (over images with both).
    std::optional<Metrics> estimate;
    std::optional<double> estimate_mae, estimate_coverage;
    std::vector<AblationRow> ablation;          // every reducer x mask choice x aggregation; empty without GT
};

// The whole evaluation of a run. objects are used for the ablation only.
Evaluation evaluate(const std::vector<ImageResult>& images, const std::vector<ObjectResult>& objects,
                    const EvalOptions& options = {});

// The metrics of one paired set (with intervals when options.bootstrap_resamples > 0).
Metrics evaluate_pairs(const Pairs& pairs, const EvalOptions& options = {});

// The single metrics, exposed for tests and reuse.
std::optional<double> pearson(const std::vector<double>& x, const std::vector<double>& y);
std::optional<double> spearman(const std::vector<double>& x, const std::vector<double>& y);
std::vector<double> average_ranks(const std::vector<double>& values);  // 1-based, ties get their mean rank
std::optional<double> bottom_k_accuracy(const Pairs& pairs, double fraction);
std::optional<double> auroc_failure(const std::vector<double>& score, const std::vector<bool>& failed);
std::optional<double> aurc(const Pairs& pairs);
std::optional<double> optimal_aurc(const std::vector<double>& true_dice);
// q in [0, 100], linear interpolation between order statistics; NaN when values is empty.
double percentile(std::vector<double> values, double q);

}  // namespace sqasam
