// A run's evaluation: the paper's metrics with bootstrap intervals for SQA and Model Confidence, and the
// ablation over every scoring configuration (conventions in sqasam/eval.hpp).
#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "sqasam/eval.hpp"

namespace sqasam {
namespace {

std::vector<bool> failures(const std::vector<double>& true_dice, double threshold) {
    std::vector<bool> failed(true_dice.size());
    for (std::size_t i = 0; i < true_dice.size(); ++i) failed[i] = true_dice[i] < threshold;
    return failed;
}

// The four metrics that get intervals, on one (re)sample.
struct Resampled {
    std::optional<double> pearson, spearman, auroc, aurc;
};

Resampled resampled_metrics(const Pairs& pairs, double failure_threshold) {
    return {pearson(pairs.value, pairs.true_dice), spearman(pairs.value, pairs.true_dice),
            auroc_failure(pairs.value, failures(pairs.true_dice, failure_threshold)), aurc(pairs)};
}

Metrics point_metrics(const Pairs& pairs, double failure_threshold) {
    Metrics m;
    m.n = static_cast<int>(pairs.value.size());
    const auto failed = failures(pairs.true_dice, failure_threshold);
    m.n_failures = static_cast<int>(std::count(failed.begin(), failed.end(), true));
    const auto r = resampled_metrics(pairs, failure_threshold);
    m.pearson = r.pearson;
    m.spearman = r.spearman;
    m.auroc = r.auroc;
    m.aurc = r.aurc;
    m.bottom25 = bottom_k_accuracy(pairs, 0.25);
    m.bottom50 = bottom_k_accuracy(pairs, 0.50);
    m.optimal_aurc = optimal_aurc(pairs.true_dice);
    if (m.aurc && m.optimal_aurc) m.e_aurc = *m.aurc - *m.optimal_aurc;
    return m;
}

void add_bootstrap_intervals(Metrics& m, const Pairs& pairs, const EvalOptions& options) {
    const std::size_t n = pairs.value.size();
    if (options.bootstrap_resamples <= 0 || n < 2) return;
    std::mt19937_64 rng(options.seed);
    std::vector<double> pearsons, spearmans, aurocs, aurcs;
    Pairs sample;
    for (int b = 0; b < options.bootstrap_resamples; ++b) {
        sample.names.clear();
        sample.value.clear();
        sample.true_dice.clear();
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t pick = rng() % n;  // the modulo bias is below 1e-15 for any realistic n
            sample.names.push_back(pairs.names[pick]);
            sample.value.push_back(pairs.value[pick]);
            sample.true_dice.push_back(pairs.true_dice[pick]);
        }
        const auto r = resampled_metrics(sample, options.failure_threshold);
        if (r.pearson) pearsons.push_back(*r.pearson);
        if (r.spearman) spearmans.push_back(*r.spearman);
        if (r.auroc) aurocs.push_back(*r.auroc);
        if (r.aurc) aurcs.push_back(*r.aurc);
    }
    const double tail = 50.0 * (1.0 - options.confidence);  // percent in each tail
    auto interval = [&](const std::optional<double>& estimate, const std::vector<double>& values) {
        if (!estimate || values.empty()) return std::optional<Interval>{};
        return std::optional<Interval>{Interval{percentile(values, tail), percentile(values, 100.0 - tail)}};
    };
    m.pearson_ci = interval(m.pearson, pearsons);
    m.spearman_ci = interval(m.spearman, spearmans);
    m.auroc_ci = interval(m.auroc, aurocs);
    m.aurc_ci = interval(m.aurc, aurcs);
}

// Images with a finite value (from `value_of`) and a true Dice.
template <typename ValueOf>
Pairs pair_up(const std::vector<ImageResult>& images, ValueOf value_of) {
    Pairs pairs;
    for (const auto& image : images) {
        const std::optional<double> value = value_of(image);
        if (!value || !image.true_dice || !std::isfinite(*value) || !std::isfinite(*image.true_dice)) continue;
        pairs.names.push_back(image.image + '\t' + image.model);  // orders ties by image, then model
        pairs.value.push_back(*value);
        pairs.true_dice.push_back(*image.true_dice);
    }
    return pairs;
}

std::vector<AblationRow> ablation(const std::vector<ImageResult>& images, const std::vector<ObjectResult>& objects,
                                  const EvalOptions& options) {
    std::map<std::pair<std::string, std::string>, std::vector<const ObjectResult*>> objects_of;
    for (const auto& object : objects) objects_of[{object.image, object.model}].push_back(&object);
    const std::vector<const ObjectResult*> none;
    std::vector<AblationRow> rows;
    for (const auto aggregation : {ImageAggregation::Mean, ImageAggregation::AreaWeighted})
        for (const auto choice : kAllMaskChoices)
            for (const auto reducer : kAllReducers) {
                const Pairs pairs = pair_up(images, [&](const ImageResult& image) {
                    const auto found = objects_of.find({image.image, image.model});
                    return image_score(found == objects_of.end() ? none : found->second, reducer, choice,
                                       aggregation);
                });
                rows.push_back({reducer, choice, aggregation, point_metrics(pairs, options.failure_threshold)});
            }
    return rows;
}

}  // namespace

Metrics evaluate_pairs(const Pairs& pairs, const EvalOptions& options) {
    Metrics m = point_metrics(pairs, options.failure_threshold);
    add_bootstrap_intervals(m, pairs, options);
    return m;
}

Evaluation evaluate(const std::vector<ImageResult>& images, const std::vector<ObjectResult>& objects,
                    const EvalOptions& options) {
    Evaluation evaluation;
    evaluation.n_images = static_cast<int>(images.size());
    for (const auto& image : images)
        if (image.true_dice) ++evaluation.n_with_ground_truth;
    evaluation.sqa = evaluate_pairs(pair_up(images, [](const ImageResult& i) { return i.score; }), options);
    const bool any_confidence =
        std::any_of(images.begin(), images.end(), [](const ImageResult& i) { return i.model_confidence.has_value(); });
    if (any_confidence)
        evaluation.model_confidence =
            evaluate_pairs(pair_up(images, [](const ImageResult& i) { return i.model_confidence; }), options);
    const bool any_estimate =
        std::any_of(images.begin(), images.end(), [](const ImageResult& i) { return i.estimate.has_value(); });
    if (any_estimate) {
        evaluation.estimate = evaluate_pairs(pair_up(images, [](const ImageResult& i) {
            return i.estimate ? std::optional<double>(i.estimate->dice) : std::nullopt;
        }), options);
        double absolute_error = 0, covered = 0, n = 0;
        for (const auto& image : images) {
            if (!image.estimate || !image.true_dice) continue;
            absolute_error += std::abs(image.estimate->dice - *image.true_dice);
            covered += image.estimate->low <= *image.true_dice && *image.true_dice <= image.estimate->high;
            ++n;
        }
        if (n > 0) {
            evaluation.estimate_mae = absolute_error / n;
            evaluation.estimate_coverage = covered / n;
        }
    }
    if (evaluation.n_with_ground_truth > 0) evaluation.ablation = ablation(images, objects, options);
    return evaluation;
}

}  // namespace sqasam
