// Fitting, saving and applying a Dice calibration (see sqasam/calibration.hpp).
#include "sqasam/calibration.hpp"

#include <xgboost/c_api.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

using nlohmann::json;

// Boosters with fewer training rows than this are not fitted: their intervals would rest on too few residuals.
constexpr std::size_t kMinRows = 30;
// The features that are themselves estimates of a Dice. Their median is where each booster starts (its base
// margin), so that the trees only learn corrections: on a dataset unlike the training ones the estimate stays near
// what these say instead of following thresholds learnt elsewhere.
const std::vector<std::string> kDiceScaleFeatures{"sam_dice_area_weighted", "soft_dice", "model_agreement"};
// Cross-validation folds when the rows come from one group only.
constexpr int kFolds = 5;
// Added to the Dice spread sqrt(e (1 - e)) so that estimates at 0 or 1 still get an interval.
constexpr double kScaleFloor = 0.05;

void check(int status, const std::string& what) {
    if (status != 0) throw Error("", what + ": XGBoost: " + XGBGetLastError());
}

struct BoosterDeleter {
    void operator()(void* handle) const { XGBoosterFree(handle); }
};
struct MatrixDeleter {
    void operator()(void* handle) const { XGDMatrixFree(handle); }
};
using BoosterPtr = std::unique_ptr<void, BoosterDeleter>;
using MatrixPtr = std::unique_ptr<void, MatrixDeleter>;

double logit(double p) {
    p = std::clamp(p, 1e-3, 1 - 1e-3);
    return std::log(p / (1 - p));
}

// Rows as a matrix (row-major, one column per feature; every row has every feature) with each row's base margin:
// the logit of the median of its Dice-scale features.
struct Rows {
    std::vector<float> values, margins;
};

Rows matrix_rows(const std::vector<const Features*>& rows, const std::vector<std::string>& features) {
    std::vector<std::size_t> scale;  // columns holding Dice-scale features
    for (std::size_t f = 0; f < features.size(); ++f)
        if (std::find(kDiceScaleFeatures.begin(), kDiceScaleFeatures.end(), features[f]) != kDiceScaleFeatures.end())
            scale.push_back(f);
    Rows result;
    result.values.reserve(rows.size() * features.size());
    for (const Features* row : rows) {
        for (const std::string& name : features) result.values.push_back(static_cast<float>(row->at(name)));
        std::vector<double> dice;
        for (std::size_t f : scale) dice.push_back(row->at(features[f]));
        std::sort(dice.begin(), dice.end());
        const std::size_t half = dice.size() / 2;
        const double prior = dice.empty() ? 0.5 : dice.size() % 2 ? dice[half] : (dice[half - 1] + dice[half]) / 2;
        result.margins.push_back(static_cast<float>(logit(prior)));
    }
    return result;
}

MatrixPtr matrix(const Rows& rows, std::size_t columns, const std::vector<float>* labels = nullptr) {
    DMatrixHandle handle = nullptr;
    const std::size_t count = rows.margins.size();
    check(XGDMatrixCreateFromMat(rows.values.data(), count, columns, std::nanf(""), &handle), "creating a matrix");
    MatrixPtr owned(handle);
    check(XGDMatrixSetFloatInfo(handle, "base_margin", rows.margins.data(), count), "setting base margins");
    if (labels) check(XGDMatrixSetFloatInfo(handle, "label", labels->data(), labels->size()), "setting labels");
    return owned;
}

std::vector<const Features*> features_of(const std::vector<const CalibrationRow*>& rows) {
    std::vector<const Features*> features;
    for (const CalibrationRow* row : rows) features.push_back(&row->features);
    return features;
}

std::string monotone_constraints(const std::vector<std::string>& features) {
    std::map<std::string, int> direction;
    for (const FeatureInfo& info : image_features()) direction[info.name] = info.direction;
    std::string text = "(";
    for (std::size_t i = 0; i < features.size(); ++i) {
        if (i) text += ',';  // (appending "," + std::to_string(...) draws GCC 12's false -Wrestrict warning)
        text += std::to_string(direction[features[i]]);
    }
    return text + ")";
}

BoosterPtr train(const std::vector<const CalibrationRow*>& rows, const std::vector<std::string>& features,
                 const CalibrationOptions& options) {
    std::vector<float> labels;
    for (const CalibrationRow* row : rows) labels.push_back(static_cast<float>(row->true_dice));
    MatrixPtr data = matrix(matrix_rows(features_of(rows), features), features.size(), &labels);
    DMatrixHandle handles[] = {data.get()};
    BoosterHandle handle = nullptr;
    check(XGBoosterCreate(handles, 1, &handle), "creating a booster");
    BoosterPtr booster(handle);
    const std::map<std::string, std::string> parameters{
        {"objective", "reg:logistic"},  // the Dice lies in [0, 1]
        {"tree_method", "exact"},
        {"max_depth", std::to_string(options.max_depth)},
        {"eta", std::to_string(options.learning_rate)},
        {"subsample", std::to_string(options.subsample)},
        {"min_child_weight", std::to_string(options.min_child_weight)},
        {"seed", std::to_string(options.seed % 2147483647)},
        {"nthread", "1"},  // small data; one thread keeps the fit reproducible
        {"verbosity", "0"},
        {"monotone_constraints", monotone_constraints(features)}};
    for (const auto& [key, value] : parameters)
        check(XGBoosterSetParam(handle, key.c_str(), value.c_str()), "setting " + key);
    for (int round = 0; round < options.rounds; ++round)
        check(XGBoosterUpdateOneIter(handle, round, data.get()), "boosting");
    return booster;
}

std::vector<double> predict(void* booster, const Rows& rows, std::size_t columns) {
    MatrixPtr data = matrix(rows, columns);
    const char* config = R"({"type": 0, "training": false, "iteration_begin": 0, "iteration_end": 0, "strict_shape": false})";
    const bst_ulong* shape = nullptr;
    bst_ulong dimension = 0;
    const float* result = nullptr;
    check(XGBoosterPredictFromDMatrix(booster, data.get(), config, &shape, &dimension, &result), "predicting");
    return std::vector<double>(result, result + rows.margins.size());
}

double interval_scale(double estimate) { return std::sqrt(std::max(0.0, estimate * (1 - estimate))) + kScaleFloor; }

// The conformal quantile: the ceil((n + 1) coverage)-th smallest residual; infinite when there are too few.
double conformal_quantile(std::vector<double> residuals, double coverage) {
    std::sort(residuals.begin(), residuals.end());
    const auto rank = static_cast<std::size_t>(std::ceil((residuals.size() + 1) * coverage));
    if (rank == 0) return 0;
    return rank > residuals.size() ? std::numeric_limits<double>::infinity() : residuals[rank - 1];
}

DiceEstimate interval(double estimate, double quantile) {
    const double half = quantile * interval_scale(estimate);
    return {estimate, std::max(0.0, estimate - half), std::min(1.0, estimate + half), ""};
}

// Held-out folds: each row's fold and the number of folds.
struct Folds {
    std::vector<int> of_row;
    int count = 0;
};

// One fold per group (dataset); none when there is a single group.
Folds group_folds(const std::vector<const CalibrationRow*>& rows) {
    std::set<std::string> groups;
    for (const CalibrationRow* row : rows) groups.insert(row->group);
    if (groups.size() < 2) return {};
    Folds folds{std::vector<int>(rows.size()), static_cast<int>(groups.size())};
    for (std::size_t i = 0; i < rows.size(); ++i)
        folds.of_row[i] = static_cast<int>(std::distance(groups.begin(), groups.find(rows[i]->group)));
    return folds;
}

// kFolds folds over a seeded shuffle of the rows.
Folds random_folds(std::size_t rows, std::uint64_t seed) {
    std::vector<std::size_t> order(rows);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
    Folds folds{std::vector<int>(rows), kFolds};
    for (std::size_t i = 0; i < order.size(); ++i) folds.of_row[order[i]] = static_cast<int>(i % kFolds);
    return folds;
}

// Held-out estimates: for each fold, a booster fitted on the other rows predicts the fold's rows. A fold whose
// training side is too small is left out (NaN estimates).
std::vector<double> held_out_estimates(const std::vector<const CalibrationRow*>& rows, const Folds& folds,
                                       const std::vector<std::string>& features, const CalibrationOptions& options) {
    std::vector<double> estimates(rows.size(), std::nan(""));
    for (int k = 0; k < folds.count; ++k) {
        std::vector<const CalibrationRow*> training, held_out;
        std::vector<std::size_t> held_index;
        for (std::size_t i = 0; i < rows.size(); ++i) {
            if (folds.of_row[i] == k) {
                held_out.push_back(rows[i]);
                held_index.push_back(i);
            } else {
                training.push_back(rows[i]);
            }
        }
        if (training.size() < kMinRows || held_out.empty()) continue;
        BoosterPtr model = train(training, features, options);
        const auto predicted = predict(model.get(), matrix_rows(features_of(held_out), features), features.size());
        for (std::size_t j = 0; j < held_out.size(); ++j) estimates[held_index[j]] = predicted[j];
    }
    return estimates;
}

}  // namespace

struct Calibration::Booster {
    std::vector<std::string> features;
    std::vector<std::pair<double, double>> ranges;  // per feature, as seen in training
    double quantile = 0;                            // of the normalised residuals
    json cross_validation;                          // what the held-out folds showed
    BoosterPtr handle;
    json model;  // XGBoost's JSON model, as saved
};

Calibration::Calibration() = default;
Calibration::Calibration(Calibration&&) noexcept = default;
Calibration& Calibration::operator=(Calibration&&) noexcept = default;
Calibration::~Calibration() = default;

Calibration Calibration::fit(const std::vector<CalibrationRow>& rows, const json& provenance,
                             const CalibrationOptions& options) {
    if (!(options.coverage > 0 && options.coverage < 1))
        throw Error("", "coverage must lie strictly between 0 and 1");
    // Feature sets: the SAM and shape features always, with every combination of the optional groups.
    std::map<FeatureGroup, std::vector<std::string>> by_group;
    for (const FeatureInfo& info : image_features()) by_group[info.group].push_back(info.name);
    const std::vector<FeatureGroup> optional_groups{FeatureGroup::Probability, FeatureGroup::Agreement};

    Calibration calibration;
    calibration.provenance_ = provenance;
    calibration.coverage_ = options.coverage;
    for (int subset = (1 << optional_groups.size()) - 1; subset >= 0; --subset) {
        std::vector<std::string> features = by_group[FeatureGroup::Sam];
        features.insert(features.end(), by_group[FeatureGroup::Shape].begin(), by_group[FeatureGroup::Shape].end());
        for (std::size_t g = 0; g < optional_groups.size(); ++g)
            if (subset & (1 << g))
                features.insert(features.end(), by_group[optional_groups[g]].begin(), by_group[optional_groups[g]].end());
        std::vector<const CalibrationRow*> usable;
        for (const CalibrationRow& row : rows)
            if (std::isfinite(row.true_dice) &&
                std::all_of(features.begin(), features.end(), [&](const std::string& f) { return row.features.count(f); }))
                usable.push_back(&row);
        if (usable.size() < kMinRows) continue;

        Booster booster;
        booster.features = features;
        for (std::size_t f = 0; f < features.size(); ++f) {
            double low = INFINITY, high = -INFINITY;
            for (const CalibrationRow* row : usable) {
                low = std::min(low, row->features.at(features[f]));
                high = std::max(high, row->features.at(features[f]));
            }
            booster.ranges.emplace_back(low, high);
        }
        // Residuals for the interval from two cross-validations, pooled: by dataset (the error on a dataset the
        // booster did not see, pessimistic when few datasets are left to train on) and by random folds (the error
        // on images like the training ones, optimistic under a shift).
        std::vector<double> residuals;
        booster.cross_validation = {{"rows", usable.size()}};
        for (const auto& [name, fold] : {std::pair<std::string, Folds>{"by_dataset", group_folds(usable)},
                                         std::pair<std::string, Folds>{"random_folds", random_folds(usable.size(), options.seed)}}) {
            if (fold.count == 0) continue;
            const std::vector<double> estimates = held_out_estimates(usable, fold, features, options);
            double absolute_error = 0, n = 0;
            for (std::size_t i = 0; i < usable.size(); ++i) {
                if (std::isnan(estimates[i])) continue;
                absolute_error += std::abs(usable[i]->true_dice - estimates[i]);
                residuals.push_back(std::abs(usable[i]->true_dice - estimates[i]) / interval_scale(estimates[i]));
                ++n;
            }
            if (n > 0) booster.cross_validation[name] = {{"folds", fold.count}, {"rows", n}, {"mae", absolute_error / n}};
        }
        booster.quantile = conformal_quantile(residuals, options.coverage);
        booster.handle = train(usable, features, options);
        bst_ulong length = 0;
        const char* buffer = nullptr;
        check(XGBoosterSaveModelToBuffer(booster.handle.get(), R"({"format": "json"})", &length, &buffer),
              "saving the model");
        booster.model = json::parse(std::string(buffer, length));
        calibration.boosters_.push_back(std::move(booster));
    }
    if (calibration.boosters_.empty())
        throw Error("", "too few scored images with a true Dice to calibrate: at least " + std::to_string(kMinRows) +
                            " are needed");
    return calibration;
}

std::optional<DiceEstimate> Calibration::estimate(const Features& features) const {
    for (const Booster& booster : boosters_) {
        std::vector<std::string> outside;
        bool complete = true;
        for (std::size_t f = 0; f < booster.features.size() && complete; ++f) {
            const auto found = features.find(booster.features[f]);
            complete = found != features.end() && std::isfinite(found->second);
            if (complete && (found->second < booster.ranges[f].first || found->second > booster.ranges[f].second))
                outside.push_back(booster.features[f]);
        }
        if (!complete) continue;
        const double estimate =
            predict(booster.handle.get(), matrix_rows({&features}, booster.features), booster.features.size()).front();
        DiceEstimate result = interval(estimate, booster.quantile);
        for (const std::string& name : outside) result.outside += (result.outside.empty() ? "" : ";") + name;
        return result;
    }
    return std::nullopt;
}

std::vector<std::vector<std::string>> Calibration::feature_sets() const {
    std::vector<std::vector<std::string>> sets;
    for (const Booster& booster : boosters_) sets.push_back(booster.features);
    return sets;
}

void Calibration::save(const std::string& path) const {
    json boosters = json::array();
    for (const Booster& booster : boosters_) {
        json ranges = json::object();
        for (std::size_t f = 0; f < booster.features.size(); ++f)
            ranges[booster.features[f]] = {booster.ranges[f].first, booster.ranges[f].second};
        boosters.push_back({{"features", booster.features},
                            {"feature_ranges", ranges},
                            {"conformal_quantile", std::isfinite(booster.quantile) ? json(booster.quantile) : json()},
                            {"cross_validation", booster.cross_validation},
                            {"xgboost", booster.model}});
    }
    int major = 0, minor = 0, patch = 0;
    XGBoostVersion(&major, &minor, &patch);
    const json file = {{"format", kCalibrationFormat},
                       {"version", kCalibrationVersion},
                       {"coverage", coverage_},
                       {"interval", "normalised split conformal: estimate +- quantile x (sqrt(e (1 - e)) + 0.05)"},
                       {"xgboost_version", std::to_string(major) + "." + std::to_string(minor) + "." +
                                               std::to_string(patch)},
                       {"provenance", provenance_},
                       {"boosters", boosters}};
    write_file_atomically(path, file.dump(1) + "\n");
}

Calibration Calibration::load(const std::string& path) {
    const std::optional<std::string> text = read_file(path);
    if (!text) throw Error(path, "cannot open the calibration file");
    const json file = json::parse(*text, nullptr, false);
    if (file.is_discarded() || !file.is_object()) throw Error(path, "not a calibration file (not JSON)");
    if (file.value("format", "") != kCalibrationFormat)
        throw Error(path, "not an sqasam calibration file (no \"format\": \"" + std::string(kCalibrationFormat) + "\")");
    if (file.value("version", 0) != kCalibrationVersion)
        throw Error(path, "calibration file version " + file.value("version", json(nullptr)).dump() +
                              "; this sqasam reads version " + std::to_string(kCalibrationVersion) +
                              ": fit it again with this version's `sqasam calibrate`");
    Calibration calibration;
    try {
        calibration.coverage_ = file.at("coverage").get<double>();
        calibration.provenance_ = file.at("provenance");
        std::set<std::string> known;
        for (const FeatureInfo& info : image_features()) known.insert(info.name);
        for (const json& entry : file.at("boosters")) {
            Booster booster;
            booster.features = entry.at("features").get<std::vector<std::string>>();
            for (const std::string& name : booster.features) {
                if (!known.count(name))
                    throw Error("", "the calibration uses the feature '" + name + "', which this sqasam does not "
                                    "compute: fit it again with this version");
                const json& range = entry.at("feature_ranges").at(name);
                booster.ranges.emplace_back(range.at(0).get<double>(), range.at(1).get<double>());
            }
            const json& quantile = entry.at("conformal_quantile");
            booster.quantile = quantile.is_null() ? INFINITY : quantile.get<double>();
            booster.cross_validation = entry.value("cross_validation", json::object());
            booster.model = entry.at("xgboost");
            const std::string model_text = booster.model.dump();
            BoosterHandle handle = nullptr;
            check(XGBoosterCreate(nullptr, 0, &handle), "creating a booster");
            booster.handle.reset(handle);
            check(XGBoosterLoadModelFromBuffer(handle, model_text.data(), model_text.size()), "loading the model");
            check(XGBoosterSetParam(handle, "nthread", "1"), "setting nthread");
            calibration.boosters_.push_back(std::move(booster));
        }
    } catch (const json::exception& e) {
        throw Error(path, std::string("broken calibration file: ") + e.what());
    } catch (const Error& e) {
        throw Error(path, e.problem());
    }
    if (calibration.boosters_.empty()) throw Error(path, "the calibration file holds no model");
    return calibration;
}

}  // namespace sqasam
