// From an item's files to its ImageResult: every per-file problem becomes a flag and a message.
#include <filesystem>
#include <iterator>
#include <map>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

void note(ImageResult& result, const std::string& flag, const std::string& message) {
    result.flags.push_back(flag);
    if (!message.empty()) result.error += (result.error.empty() ? "" : "; ") + message;
}

bool file_present(const std::string& path) { return !path.empty() && std::filesystem::exists(path); }

std::string missing_message(const std::string& what, const std::string& path) {
    return path.empty() ? "no " + what + " file with this base name" : path + ": no such file";
}

std::string size_text(const cv::Mat& m) { return std::to_string(m.cols) + "x" + std::to_string(m.rows); }

bool any_foreground(const cv::Mat& labels) { return cv::countNonZero(labels) > 0; }

// Ground truth -> true Dice, probability map -> model confidence. Their problems leave the image scored.
void add_reference_measures(const DatasetItem& item, const Dataset& dataset, const cv::Mat& pred_labels,
                            ImageResult& result) {
    if (dataset.has_gt) {
        if (!file_present(item.gt)) {
            note(result, "missing_gt", missing_message("ground-truth", item.gt));
        } else {
            try {
                LabelMap gt = read_label_map(item.gt);
                if (gt.labels.size() != pred_labels.size())
                    throw Error(item.gt, "ground truth is " + size_text(gt.labels) + ", prediction is " +
                                             size_text(pred_labels));
                TrueDice truth = true_dice(pred_labels, gt.labels);
                result.true_dice = truth.dice;
                result.class_dice = truth.class_dice;
            } catch (const Error& e) {
                note(result, "gt_error", e.what());
            }
        }
    }
    if (dataset.has_prob) {
        if (!file_present(item.prob)) {
            note(result, "missing_prob", missing_message("probability-map", item.prob));
        } else {
            try {
                cv::Mat probability = read_probability_map(item.prob);
                if (probability.size() != pred_labels.size())
                    throw Error(item.prob, "probability map is " + size_text(probability) + ", prediction is " +
                                               size_text(pred_labels));
                result.model_confidence = model_confidence(probability);
            } catch (const Error& e) {
                note(result, "prob_error", e.what());
            }
        }
    }
}

}  // namespace

ImageOutcome score_item(const DatasetItem& item, const Dataset& dataset, const Segmenter& segmenter,
                        const PipelineOptions& options) {
    ImageOutcome outcome;
    ImageResult& result = outcome.image;
    result.image = item.name;
    if (!item.problem.empty()) note(result, "ambiguous_name", item.problem);
    if (!file_present(item.image)) note(result, "missing_image", missing_message("image", item.image));
    if (!file_present(item.pred)) note(result, "missing_prediction", missing_message("prediction", item.pred));
    if (!result.flags.empty()) return outcome;

    cv::Mat rgb;
    LabelMap pred;
    try {
        rgb = read_rgb_image(item.image);
    } catch (const Error& e) {
        note(result, "read_error", e.what());
    }
    try {
        pred = read_label_map(item.pred, options.pred_threshold);
    } catch (const Error& e) {
        note(result, "prediction_error", e.what());
    }
    if (!result.flags.empty()) return outcome;
    if (pred.labels.size() != rgb.size()) {
        note(result, "size_mismatch",
             item.pred + ": prediction is " + size_text(pred.labels) + ", image is " + size_text(rgb));
        return outcome;
    }

    add_reference_measures(item, dataset, pred.labels, result);

    std::vector<PredictedObject> objects = find_objects(pred.labels, options.score.objects);
    result.n_objects = static_cast<int>(objects.size());
    if (!any_foreground(pred.labels)) note(result, "empty_prediction", "");
    if (objects.empty()) {
        note(result, "no_objects", "");
        return outcome;
    }
    ScoredObjects scored = score_objects(item.name, objects, rgb.size(), segmenter(rgb), options.score);
    std::vector<const ObjectResult*> scored_objects;
    for (const ObjectResult& object : scored.objects) scored_objects.push_back(&object);
    result.score = image_score(scored_objects, options.score.reducer, options.score.mask_choice,
                               options.score.aggregation);
    outcome.objects = std::move(scored.objects);
    outcome.sam_point_mask = std::move(scored.sam_point_mask);
    outcome.sam_box_mask = std::move(scored.sam_box_mask);
    return outcome;
}

RunResult score_dataset(const Dataset& dataset, const Segmenter& segmenter, const PipelineOptions& options,
                        Journal& journal, const ProgressCallback& progress) {
    std::map<std::string, const ImageOutcome*> journaled;
    for (const ImageOutcome& outcome : journal.finished()) journaled[outcome.image.image] = &outcome;

    RunProgress state;
    state.total = dataset.items.size();
    for (const DatasetItem& item : dataset.items) state.to_compute += journaled.count(item.name) ? 0 : 1;

    RunResult run;
    for (const DatasetItem& item : dataset.items) {
        auto found = journaled.find(item.name);
        if (found != journaled.end()) {
            run.images.push_back(found->second->image);
            run.objects.insert(run.objects.end(), found->second->objects.begin(), found->second->objects.end());
            ++run.resumed;
        } else {
            ImageOutcome outcome = score_item(item, dataset, segmenter, options);
            journal.append(outcome);
            run.images.push_back(std::move(outcome.image));
            run.objects.insert(run.objects.end(), std::make_move_iterator(outcome.objects.begin()),
                               std::make_move_iterator(outcome.objects.end()));
            ++state.computed;
        }
        ++state.finished;
        state.image = item.name;
        if (progress) progress(state);
    }
    return run;
}

}  // namespace sqasam
