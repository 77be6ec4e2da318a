// Object and image scores from SAM's masks, and the ground-truth and model-confidence measures beside them.
#include <algorithm>
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
PromptAgreement agreement(const PredictedObject& object, const MaskPrediction& masks, MaskChoice configured,
                          cv::Mat& picked) {
    std::vector<Overlap> overlaps;
    std::vector<double> predicted, dices;
    for (int k = kFirstMultimask; k < kDecoderMasks; ++k) {
        overlaps.push_back(overlap(object, mask_view(masks, k)));
        predicted.push_back(masks.iou_predictions[k]);
        dices.push_back(overlaps.back().dice);
    }
    struct Pick {
        int k;
        Overlap overlap;
    };
    std::array<Pick, 3> picks{};
    size_t by_iou = first_max(predicted), by_dice = first_max(dices);  // ties: the first, like numpy's argmax
    picks[mask_choice_index(MaskChoice::BestPredictedIou)] = {kFirstMultimask + int(by_iou), overlaps[by_iou]};
    picks[mask_choice_index(MaskChoice::BestDice)] = {kFirstMultimask + int(by_dice), overlaps[by_dice]};
    picks[mask_choice_index(MaskChoice::SingleMask)] = {kSingleMask, overlap(object, mask_view(masks, kSingleMask))};

    PromptAgreement result;
    for (size_t i = 0; i < picks.size(); ++i) {
        result.dice[i] = picks[i].overlap.dice;
        result.iou[i] = picks[i].overlap.iou;
        result.predicted_iou[i] = masks.iou_predictions[picks[i].k];
    }
    picked = mask_view(masks, picks[mask_choice_index(configured)].k);
    return result;
}

}  // namespace

ScoredObjects score_objects(const std::string& image_name, const std::vector<PredictedObject>& objects,
                            cv::Size image_size, const MaskSource& sam, const ScoreOptions& options) {
    ScoredObjects scored;
    scored.sam_point_mask = cv::Mat::zeros(image_size, CV_8U);
    scored.sam_box_mask = cv::Mat::zeros(image_size, CV_8U);
    // Each object costs 2 prompts x 4 full-size masks.
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
            result.class_label = object.class_label;
            result.component = object.component;
            result.area = object.area;
            BoxPrompt box = prompt_box(object.bounds);
            const float corners[4] = {box.x0, box.y0, box.x1, box.y1};
            for (int c = 0; c < 4; ++c) result.box[c] = static_cast<int>(corners[c]);
            result.point[0] = object.point.x;
            result.point[1] = object.point.y;
            cv::Mat point_mask, box_mask;
            result.point_prompt = agreement(object, masks[p], options.mask_choice, point_mask);
            result.box_prompt = agreement(object, masks[p + 1], options.mask_choice, box_mask);
            scored.sam_point_mask |= point_mask;
            scored.sam_box_mask |= box_mask;
            result.score = result.score_with(options.reducer, options.mask_choice);
            scored.objects.push_back(std::move(result));
        }
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
