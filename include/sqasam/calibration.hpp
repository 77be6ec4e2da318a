#pragma once
// A calibrated Dice estimate: a model from an image's features (sqasam::image_features()) to its true Dice, fitted
// with XGBoost on finished `sqasam score` runs that had ground truth, with conformal intervals.
//
// - One booster per combination of feature groups seen in training (SAM and shape features always; probability
//   features where the runs had probability maps; model agreement where they had several models), so that an image
//   gets the estimate that uses every kind of evidence it has.
// - Monotone constraints where the direction is known (FeatureInfo::direction): more agreement never lowers the
//   estimate.
// - Each booster starts from the median of the image's Dice-scale features (SAM agreement, soft Dice, model
//   agreement: its base margin) and learns corrections to it, so that on unfamiliar data the estimate stays near
//   what those say rather than following thresholds learnt on other datasets.
// - Intervals: normalised split conformal. The residuals come from two cross-validations, pooled: one group
//   (dataset, i.e. run) held out at a time, and 5 random folds; a residual is divided by sqrt(e (1 - e)) + 0.05
//   for the estimate e, since Dice varies least near 0 and 1. The interval is e +- q times that scale, q the
//   residuals' finite-sample quantile at the coverage asked for, clipped to [0, 1].
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sqasam/results.hpp"

namespace sqasam {

// One training image: its features, its true Dice, and the group (dataset) it belongs to.
struct CalibrationRow {
    Features features;
    double true_dice = 0;
    std::string group;
};

struct CalibrationOptions {
    double coverage = 0.9;  // of the conformal intervals
    // Few, shallow, well-populated trees: with a handful of datasets, corrections that need more are the ones that
    // do not carry over to the next dataset (chosen by leave-one-dataset-out on the shared data, bench/quality).
    int rounds = 50;
    int max_depth = 2;
    double learning_rate = 0.05;
    double subsample = 0.8;
    double min_child_weight = 10;
    std::uint64_t seed = 20231215;
};

class Calibration {
public:
    // Fits every booster on rows. provenance is recorded as is (runs, datasets, models, SAM model, scoring
    // configuration). Throws sqasam::Error when the rows are too few or carry no true Dice spread.
    static Calibration fit(const std::vector<CalibrationRow>& rows, const nlohmann::json& provenance,
                           const CalibrationOptions& options = {});
    // Reads a file written by save(); another format or version, or a broken file, is an Error naming it.
    static Calibration load(const std::string& path);
    void save(const std::string& path) const;  // atomically

    // The estimate from the richest booster whose features the image has all of; none when no booster fits.
    std::optional<DiceEstimate> estimate(const Features& features) const;
    // The feature names each booster needs, richest first.
    std::vector<std::vector<std::string>> feature_sets() const;
    const nlohmann::json& provenance() const { return provenance_; }
    double coverage() const { return coverage_; }

    Calibration(Calibration&&) noexcept;
    Calibration& operator=(Calibration&&) noexcept;
    ~Calibration();

private:
    struct Booster;
    Calibration();
    std::vector<Booster> boosters_;
    nlohmann::json provenance_;
    double coverage_ = 0.9;
};

inline constexpr const char* kCalibrationFormat = "sqasam-calibration";
inline constexpr int kCalibrationVersion = 1;

}  // namespace sqasam
