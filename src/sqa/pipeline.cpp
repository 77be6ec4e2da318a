// From an item's files to one ImageResult per model: every per-file problem becomes a flag and a message.
#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

// Messages name files, whose names may not be UTF-8; the outputs hold them escaped (escape_non_utf8).
void note(ImageResult& result, const std::string& flag, const std::string& message) {
    result.flags.push_back(flag);
    if (!message.empty()) result.error += (result.error.empty() ? "" : "; ") + escape_non_utf8(message);
}

// A read note about one of the item's files becomes a flag: as it is for the image, prefixed by the file's role
// (pred_, gt_) for the others.
void note_read(ImageResult& result, const std::vector<ReadNote>& notes, const std::string& role_prefix) {
    for (const ReadNote& read : notes) note(result, role_prefix + read.flag, read.message);
}

// A path whose existence cannot be told (a symlink loop) counts as present: reading it then says why it fails.
bool file_present(const std::string& path) {
    std::error_code ec;
    return !path.empty() && (std::filesystem::exists(path, ec) || ec);
}

std::string missing_message(const std::string& what, const std::string& path) {
    return path.empty() ? "no " + what + " file with this base name" : path + ": no such file";
}

std::string size_text(const cv::Mat& m) { return std::to_string(m.cols) + "x" + std::to_string(m.rows); }

bool any_foreground(const cv::Mat& labels) { return cv::countNonZero(labels) > 0; }

// The median (the mean of the middle two for an even count): robust to one poor model among the others.
double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    const std::size_t half = values.size() / 2;
    return values.size() % 2 ? values[half] : (values[half - 1] + values[half]) / 2;
}

// The ground truth, read once for all models; empty with the problem noted when it cannot be used. Its read
// notes go to every model's row.
struct GroundTruth {
    cv::Mat labels;
    std::string flag, message;
    std::vector<ReadNote> notes;
};

GroundTruth read_ground_truth(const DatasetItem& item, cv::Size image_size, const PipelineOptions& options) {
    if (!file_present(item.gt)) return {{}, "missing_gt", missing_message("ground-truth", item.gt), {}};
    try {
        LabelMap gt = read_label_map(item.gt, {options.gt_kind, {}, options.max_pixels});
        if (gt.labels.size() != image_size)
            throw Error(item.gt, "ground truth is " + size_text(gt.labels) + ", image is " +
                                     std::to_string(image_size.width) + "x" + std::to_string(image_size.height));
        return {gt.labels, "", "", gt.notes};
    } catch (const Error& e) {
        return {{}, "gt_error", e.what(), {}};
    }
}

// The model's probability map: its own file, else a soft prediction itself (the model's foreground
// probabilities), else none.
std::optional<cv::Mat> read_probability(const PredictionFiles& files, const SegmentationModel& model,
                                        const LabelMap& pred, int64_t max_pixels, ImageResult& result) {
    std::string path = files.prob;
    if (model.has_prob) {
        if (!file_present(path)) {
            note(result, "missing_prob", missing_message("probability-map", path));
            return std::nullopt;
        }
    } else if (pred.kind == MapKind::Soft) {
        path = files.pred;
    } else {
        return std::nullopt;
    }
    try {
        cv::Mat probability = read_probability_map(path, max_pixels);
        if (probability.size() != pred.labels.size())
            throw Error(path, "probability map is " + size_text(probability) + ", prediction is " +
                                  size_text(pred.labels));
        return probability;
    } catch (const Error& e) {
        note(result, "prob_error", e.what());
        return std::nullopt;
    }
}

// One outcome per model, named, without results yet.
std::vector<ImageOutcome> blank_outcomes(const DatasetItem& item, const Dataset& dataset) {
    std::vector<ImageOutcome> outcomes(dataset.models.size());
    for (size_t m = 0; m < outcomes.size(); ++m) {
        outcomes[m].image.image = item.name;
        outcomes[m].image.model = dataset.models[m].name;
    }
    return outcomes;
}

// score_item without the net for unexpected exceptions.
std::vector<ImageOutcome> score_item_unguarded(const DatasetItem& item, const Dataset& dataset,
                                               const Segmenter& segmenter, const PipelineOptions& options,
                                               const ItemProgress& progress) {
    const size_t n_models = dataset.models.size();
    if (item.predictions.size() != n_models)
        throw Error("", "item " + item.name + " has " + std::to_string(item.predictions.size()) +
                            " predictions for " + std::to_string(n_models) + " models");
    std::vector<ImageOutcome> outcomes = blank_outcomes(item, dataset);
    auto note_all = [&](const std::string& flag, const std::string& message) {
        for (ImageOutcome& outcome : outcomes) note(outcome.image, flag, message);
    };
    if (!item.problem.empty()) note_all("ambiguous_name", item.problem);
    if (!file_present(item.image)) note_all("missing_image", missing_message("image", item.image));
    for (size_t m = 0; m < n_models; ++m)
        if (!file_present(item.predictions[m].pred))
            note(outcomes[m].image, "missing_prediction", missing_message("prediction", item.predictions[m].pred));
    if (!item.problem.empty() || !file_present(item.image)) return outcomes;

    ImageFile image;
    try {
        image = read_image(item.image, options.max_pixels);
    } catch (const ImageTooLarge& e) {
        note_all("too_large", e.what());
        return outcomes;
    } catch (const Error& e) {
        note_all("read_error", e.what());
        return outcomes;
    }
    for (ImageOutcome& outcome : outcomes) note_read(outcome.image, image.notes, "");
    const cv::Mat& rgb = image.rgb;

    // The models' predictions that can be scored.
    std::vector<std::optional<LabelMap>> preds(n_models);
    for (size_t m = 0; m < n_models; ++m) {
        ImageResult& result = outcomes[m].image;
        if (!file_present(item.predictions[m].pred)) continue;
        const std::string& path = item.predictions[m].pred;
        LabelMap pred;
        try {
            pred = read_label_map(path, {options.pred_kind, options.pred_threshold, options.max_pixels});
        } catch (const ImageTooLarge& e) {
            note(result, "too_large", e.what());
            continue;
        } catch (const Error& e) {
            note(result, "prediction_error", e.what());
            continue;
        }
        note_read(result, pred.notes, "pred_");
        if (pred.labels.size() != rgb.size()) {
            note(result, "size_mismatch", path + ": prediction is " + size_text(pred.labels) + ", image is " + size_text(rgb));
            continue;
        }
        preds[m] = std::move(pred);
    }

    GroundTruth gt;
    if (dataset.has_gt) gt = read_ground_truth(item, rgb.size(), options);
    size_t n_usable = 0;
    for (const auto& pred : preds) n_usable += pred.has_value();

    bool embedded = false;
    MaskSource sam;
    for (size_t m = 0; m < n_models; ++m) {
        if (!preds[m]) continue;
        const LabelMap& pred = *preds[m];
        ImageOutcome& outcome = outcomes[m];
        ImageResult& result = outcome.image;
        if (dataset.has_gt) {
            note_read(result, gt.notes, "gt_");
            if (gt.labels.empty()) {
                note(result, gt.flag, gt.message);
            } else {
                TrueDice truth = true_dice(pred.labels, gt.labels);
                result.true_dice = truth.dice;
                result.class_dice = truth.class_dice;
            }
        }
        if (std::optional<cv::Mat> probability =
                read_probability(item.predictions[m], dataset.models[m], pred, options.max_pixels, result)) {
            result.model_confidence = model_confidence(*probability);
            add_probability_features(result.features, *probability, pred.labels);
        }
        if (n_usable > 1) {
            std::vector<double> agreement;
            for (size_t other = 0; other < n_models; ++other)
                if (other != m && preds[other]) agreement.push_back(true_dice(pred.labels, preds[other]->labels).dice);
            result.features["model_agreement"] = median(agreement);
        }

        std::vector<PredictedObject> objects = find_objects(pred.labels, options.score.objects);
        result.n_objects = static_cast<int>(objects.size());
        if (!any_foreground(pred.labels)) note(result, "empty_prediction", "");
        if (objects.empty()) {
            note(result, "no_objects", "");
            add_object_features(result.features, {}, options.score, rgb.size());
            continue;
        }
        if (objects.size() > options.max_objects) {
            note(result, "too_many_objects",
                 item.predictions[m].pred + ": " + std::to_string(objects.size()) + " objects, more than the limit of " +
                     std::to_string(options.max_objects) + " (--max-objects; --min-area drops small ones)");
            continue;
        }
        if (!embedded) {
            sam = segmenter(rgb);  // one embedding serves every model's objects
            embedded = true;
        }
        ObjectProgress model_progress;
        if (progress) model_progress = [&progress, m](size_t done, size_t total) { progress(m, done, total); };
        ScoredObjects scored =
            score_objects(item.name, result.model, objects, rgb.size(), sam, options.score, model_progress);
        std::vector<const ObjectResult*> scored_objects;
        for (const ObjectResult& object : scored.objects) scored_objects.push_back(&object);
        result.score = image_score(scored_objects, options.score.reducer, options.score.mask_choice,
                                   options.score.aggregation);
        add_object_features(result.features, scored.objects, options.score, rgb.size());
        outcome.objects = std::move(scored.objects);
        outcome.sam_point_mask = std::move(scored.sam_point_mask);
        outcome.sam_box_mask = std::move(scored.sam_box_mask);
    }
    return outcomes;
}

}  // namespace

std::string current_exception_message() {
    try {
        throw;
    } catch (const cv::Exception& e) {
        return "OpenCV: " + e.msg;
    } catch (const std::bad_alloc&) {
        return "out of memory";
    } catch (const std::exception& e) {  // sqasam::Error among them
        return e.what();
    } catch (...) {
        return "unknown exception";
    }
}

std::vector<ImageOutcome> score_item(const DatasetItem& item, const Dataset& dataset, const Segmenter& segmenter,
                                     const PipelineOptions& options, const ItemProgress& progress) {
    std::string problem;
    try {
        return score_item_unguarded(item, dataset, segmenter, options, progress);
    } catch (...) {
        problem = current_exception_message();
    }
    std::vector<ImageOutcome> failed = blank_outcomes(item, dataset);
    for (ImageOutcome& outcome : failed) note(outcome.image, "processing_error", item.name + ": " + problem);
    return failed;
}

RunResult score_dataset(const Dataset& dataset, const Segmenter& segmenter, const PipelineOptions& options,
                        Journal& journal, const ProgressCallback& progress) {
    std::map<std::string, const std::vector<ImageOutcome>*> journaled;
    for (const std::vector<ImageOutcome>& item : journal.finished())
        if (!item.empty()) journaled[item.front().image.image] = &item;

    // Which items the journal holds scored from their files as they are now (stamping every file once).
    std::vector<bool> reusable;
    for (const DatasetItem& item : dataset.items)
        reusable.push_back(journaled.count(item.name) && journal.up_to_date(item));
    RunProgress state;
    state.total = dataset.items.size();
    state.to_compute = static_cast<size_t>(std::count(reusable.begin(), reusable.end(), false));

    RunResult run;
    auto take = [&run](const ImageOutcome& outcome) {
        run.images.push_back(outcome.image);
        run.objects.insert(run.objects.end(), outcome.objects.begin(), outcome.objects.end());
    };
    for (size_t i = 0; i < dataset.items.size(); ++i) {
        const DatasetItem& item = dataset.items[i];
        if (reusable[i]) {
            for (const ImageOutcome& outcome : *journaled.at(item.name)) take(outcome);
            ++run.resumed;
        } else {
            state.image = item.name;
            ItemProgress within_image;
            if (progress)
                within_image = [&](size_t model, size_t done, size_t total) {
                    if (dataset.models.size() > 1) state.model = dataset.models[model].name;
                    state.objects_done = done;
                    state.objects_total = total;
                    progress(state);
                };
            const nlohmann::json inputs = input_stamps(item);  // before reading: a change while scoring shows
            const std::vector<ImageOutcome> outcomes = score_item(item, dataset, segmenter, options, within_image);
            state.model.clear();
            state.objects_done = state.objects_total = 0;
            journal.append(outcomes, inputs);
            for (const ImageOutcome& outcome : outcomes) take(outcome);
            ++state.computed;
        }
        ++state.finished;
        state.image = item.name;
        if (progress) progress(state);
    }
    return run;
}

}  // namespace sqasam
