// Object and image scores from SAM's masks, and the ground-truth and model-confidence measures beside them.
#include <algorithm>
#include <optional>
#include <set>

#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

// Decoded masks of all prompts of a batch stay in memory together; this bounds that to roughly 64 MB of masks.
constexpr double kBatchPixelBudget = 64.0 * 1024 * 1024;
// The outputs of one decoder pass (MaskSource): the single-mask one, then the multimask ones.
constexpr int kSingleMask = 0, kFirstMultimask = 1, kDecoderMasks = 4;

// Mask k of a prediction, without copying.
cv::Mat mask_view(const MaskPrediction& prediction, int k) {
    const uint8_t* data = prediction.masks.data() + static_cast<size_t>(k) * prediction.height * prediction.width;
    return cv::Mat(prediction.height, prediction.width, CV_8U, const_cast<uint8_t*>(data));
}

void check_prediction(const MaskPrediction& prediction, cv::Size image_size) {
    if (prediction.num_masks != kDecoderMasks || prediction.width != image_size.width ||
        prediction.height != image_size.height ||
        prediction.masks.size() != static_cast<size_t>(kDecoderMasks) * image_size.area() ||
        prediction.iou_predictions.size() != static_cast<size_t>(kDecoderMasks))
        throw Error("", "SAM returned " + std::to_string(prediction.num_masks) + " masks of " +
                            std::to_string(prediction.width) + "x" + std::to_string(prediction.height) + ", expected " +
                            std::to_string(kDecoderMasks) + " of " + std::to_string(image_size.width) + "x" +
                            std::to_string(image_size.height));
}

size_t first_max(const std::vector<double>& values) {
    return static_cast<size_t>(std::max_element(values.begin(), values.end()) - values.begin());
}

// The agreement of one prompt's masks with the object for every mask choice, and the mask the configured
// choice picks.
PromptAgreement agreement(const PredictedObject& object, const cv::Mat& object_in_image, int band,
                          const MaskPrediction& masks, MaskChoice configured, cv::Mat& picked) {
    std::array<Overlap, kDecoderMasks> overlaps;
    std::vector<double> predicted, dices;
    for (int k = 0; k < kDecoderMasks; ++k) overlaps[k] = overlap(object, mask_view(masks, k));
    for (int k = kFirstMultimask; k < kDecoderMasks; ++k) {
        predicted.push_back(masks.iou_predictions[k]);
        dices.push_back(overlaps[k].dice);
    }
    std::array<int, 3> picks{};  // decoder output per mask choice
    picks[mask_choice_index(MaskChoice::BestPredictedIou)] = kFirstMultimask + int(first_max(predicted));
    picks[mask_choice_index(MaskChoice::BestDice)] = kFirstMultimask + int(first_max(dices));  // ties: the first
    picks[mask_choice_index(MaskChoice::SingleMask)] = kSingleMask;

    std::array<std::optional<double>, kDecoderMasks> boundary;  // computed once per decoder output
    PromptAgreement result;
    for (size_t i = 0; i < picks.size(); ++i) {
        const int k = picks[i];
        if (!boundary[k]) boundary[k] = boundary_iou(object_in_image, mask_view(masks, k), band);
        result.dice[i] = overlaps[k].dice;
        result.iou[i] = overlaps[k].iou;
        result.predicted_iou[i] = masks.iou_predictions[k];
        result.stability[i] = k < static_cast<int>(masks.stability_scores.size()) ? masks.stability_scores[k] : 0.0;
        result.boundary_iou[i] = *boundary[k];
    }
    picked = mask_view(masks, picks[mask_choice_index(configured)]);
    return result;
}

}  // namespace

PromptingDefaults default_prompting(ModelType type) {
    // Objects are weighted by area for every family: small spurious blobs get unreliable Dice from any SAM, and on
    // the shared data the area-weighted mean tracked the true Dice better on every dataset (README).
    const std::string aggregation = " The image score weights objects by area, so that small spurious blobs do not "
                                    "outvote the main object.";
    switch (type) {
        case ModelType::MedSam:
        case ModelType::LiteMedSam:
            return {Reducer::BoxOnly, MaskChoice::SingleMask, ImageAggregation::AreaWeighted,
                    to_string(type) + " was trained with box prompts and one output mask, so each object's score is "
                                      "the Dice between the object and the single mask its box prompt gives." +
                        aggregation};
        default:
            return {Reducer::Max, MaskChoice::BestPredictedIou, ImageAggregation::AreaWeighted,
                    to_string(type) + " is prompted as SQA-SAM prompts SAM: each object's score is the better Dice of "
                                      "its point-prompt and box-prompt masks, each the mask SAM rates best of its "
                                      "three." + aggregation};
    }
}

ScoredObjects score_objects(const std::string& image_name, const std::string& model,
                            const std::vector<PredictedObject>& objects, cv::Size image_size, const MaskSource& sam,
                            const ScoreOptions& options, const ObjectProgress& progress) {
    ScoredObjects scored;
    scored.sam_point_mask = cv::Mat::zeros(image_size, CV_8U);
    scored.sam_box_mask = cv::Mat::zeros(image_size, CV_8U);
    // Each object costs 2 prompts x 4 full-size masks.
    const int band = boundary_band_width(image_size);
    cv::Mat object_in_image = cv::Mat::zeros(image_size, CV_8U);
    const size_t per_batch =
        std::clamp<size_t>(static_cast<size_t>(kBatchPixelBudget / (2.0 * kDecoderMasks * image_size.area())), 1, 32);
    for (size_t begin = 0; begin < objects.size(); begin += per_batch) {
        size_t end = std::min(objects.size(), begin + per_batch);
        std::vector<Prompt> prompts;
        for (size_t i = begin; i < end; ++i) {
            const PredictedObject& object = objects[i];
            prompts.push_back(Prompt{{PointPrompt{object.point.x, object.point.y, 1}}, std::nullopt});
            prompts.push_back(Prompt{{}, prompt_box(object.bounds)});
        }
        const std::vector<MaskPrediction> masks = sam(prompts);
        if (masks.size() != prompts.size())
            throw Error("", "SAM returned a different number of predictions than prompts");
        for (const MaskPrediction& prediction : masks) check_prediction(prediction, image_size);
        for (size_t i = begin; i < end; ++i) {
            const PredictedObject& object = objects[i];
            size_t p = 2 * (i - begin);
            ObjectResult result;
            result.image = image_name;
            result.model = model;
            result.class_label = object.class_label;
            result.component = object.component;
            result.area = object.area;
            BoxPrompt box = prompt_box(object.bounds);
            const float corners[4] = {box.x0, box.y0, box.x1, box.y1};
            for (int c = 0; c < 4; ++c) result.box[c] = static_cast<int>(corners[c]);
            result.point[0] = object.point.x;
            result.point[1] = object.point.y;
            cv::Mat point_mask, box_mask;
            object.mask.copyTo(object_in_image(object.bounds));
            result.point_prompt = agreement(object, object_in_image, band, masks[p], options.mask_choice, point_mask);
            result.box_prompt = agreement(object, object_in_image, band, masks[p + 1], options.mask_choice, box_mask);
            object_in_image(object.bounds).setTo(0);
            result.point_box_dice = dice(point_mask, box_mask);
            result.compactness = compactness(object.mask);
            scored.sam_point_mask |= point_mask;
            scored.sam_box_mask |= box_mask;
            result.score = result.score_with(options.reducer, options.mask_choice);
            scored.objects.push_back(std::move(result));
        }
        if (progress) progress(end, objects.size());
    }
    return scored;
}

TrueDice true_dice(const cv::Mat& pred_labels, const cv::Mat& gt_labels) {
    if (pred_labels.size() != gt_labels.size() || pred_labels.type() != CV_32SC1 || gt_labels.type() != CV_32SC1)
        throw Error("", "true_dice: label maps must be CV_32S of the same size");
    std::set<int> classes;
    for (const cv::Mat* labels : {&pred_labels, &gt_labels})
        for (int r = 0; r < labels->rows; ++r) {
            const int* row = labels->ptr<int>(r);
            for (int c = 0; c < labels->cols; ++c)
                if (row[c] != 0) classes.insert(row[c]);
        }
    TrueDice result;
    if (classes.empty()) return result;  // both empty: the prediction is exactly right
    double sum = 0;
    for (int label : classes) {
        double d = dice(pred_labels == label, gt_labels == label);
        result.class_dice.emplace_back(label, d);
        sum += d;
    }
    result.dice = sum / static_cast<double>(classes.size());
    return result;
}

double model_confidence(const cv::Mat& probability) {
    cv::Mat complement = 1.0 - probability;
    return cv::mean(cv::max(probability, complement))[0];
}

}  // namespace sqasam
