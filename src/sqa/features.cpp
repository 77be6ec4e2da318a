// The measurements recorded beside each image's score (images.csv) and used by calibration.
#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

// Area-weighted mean of value(object) over the objects.
template <typename Value>
double area_weighted(const std::vector<ObjectResult>& objects, Value value) {
    double sum = 0, total = 0;
    for (const ObjectResult& object : objects) {
        sum += static_cast<double>(object.area) * value(object);
        total += static_cast<double>(object.area);
    }
    return total > 0 ? sum / total : 0.0;
}

// The patch side for the least-confident-patch feature: an eighth of the shorter image side, at least 8 pixels.
int patch_side(cv::Size size) { return std::max(8, std::min(size.width, size.height) / 8); }

}  // namespace

const std::vector<FeatureInfo>& image_features() {
    static const std::vector<FeatureInfo> features = {
        {"sam_dice_mean", FeatureGroup::Sam, +1, "mean over objects of the object score (the run's reducer and mask)"},
        {"sam_dice_area_weighted", FeatureGroup::Sam, +1, "the same, weighted by object area"},
        {"sam_dice_worst", FeatureGroup::Sam, +1, "the lowest object score"},
        {"sam_box_boundary_iou", FeatureGroup::Sam, +1,
         "boundary IoU of each object with SAM's box-prompt mask, area-weighted"},
        {"sam_box_predicted_iou", FeatureGroup::Sam, 0, "SAM's own IoU prediction for its box-prompt mask, area-weighted"},
        {"sam_box_stability", FeatureGroup::Sam, 0, "SAM's stability score of its box-prompt mask, area-weighted"},
        {"sam_point_box_dice", FeatureGroup::Sam, 0, "Dice between SAM's point-prompt and box-prompt masks, area-weighted"},
        {"n_objects", FeatureGroup::Shape, 0, "number of predicted objects (images.csv's n_objects)"},
        {"foreground_fraction", FeatureGroup::Shape, 0, "share of the image's pixels predicted as foreground"},
        {"largest_object_share", FeatureGroup::Shape, 0, "the largest object's share of the predicted foreground"},
        {"compactness", FeatureGroup::Shape, 0, "4 pi area / perimeter^2 of the objects, area-weighted"},
        {"model_confidence", FeatureGroup::Probability, 0,
         "mean over all pixels of max(p, 1-p): the Model-Confidence baseline (images.csv's model_confidence)"},
        {"confidence_foreground", FeatureGroup::Probability, +1, "mean of max(p, 1-p) over the predicted foreground"},
        {"confidence_boundary", FeatureGroup::Probability, +1,
         "mean of max(p, 1-p) over a band around the predicted outline"},
        {"confidence_worst_patch", FeatureGroup::Probability, +1,
         "the lowest mean of max(p, 1-p) over square patches of an eighth of the shorter image side"},
        {"soft_dice", FeatureGroup::Probability, +1,
         "Dice between the probability map and the prediction, 2 sum(p y) / (sum p + sum y): the Dice the model "
         "itself expects"},
        {"model_agreement", FeatureGroup::Agreement, +1,
         "median Dice between this model's prediction and each other model's prediction of the image (the mean "
         "for two or three models; the median keeps one poor model from pulling a good one down)"},
    };
    return features;
}

std::string to_string(FeatureGroup group) {
    switch (group) {
        case FeatureGroup::Sam: return "sam";
        case FeatureGroup::Shape: return "shape";
        case FeatureGroup::Probability: return "probability";
        case FeatureGroup::Agreement: return "agreement";
    }
    return "?";
}

void add_object_features(Features& features, const std::vector<ObjectResult>& objects, const ScoreOptions& options,
                         cv::Size image_size) {
    long total_area = 0, largest = 0;
    for (const ObjectResult& object : objects) {
        total_area += object.area;
        largest = std::max(largest, object.area);
    }
    features["foreground_fraction"] = static_cast<double>(total_area) / static_cast<double>(image_size.area());
    if (objects.empty()) return;
    features["largest_object_share"] = static_cast<double>(largest) / static_cast<double>(total_area);
    features["compactness"] = area_weighted(objects, [](const ObjectResult& o) { return o.compactness; });

    const std::size_t choice = mask_choice_index(options.mask_choice);
    std::vector<const ObjectResult*> pointers;
    double worst = 1;
    for (const ObjectResult& object : objects) {
        pointers.push_back(&object);
        worst = std::min(worst, object.score_with(options.reducer, options.mask_choice));
    }
    features["sam_dice_mean"] =
        *image_score(pointers, options.reducer, options.mask_choice, ImageAggregation::Mean);
    features["sam_dice_area_weighted"] =
        *image_score(pointers, options.reducer, options.mask_choice, ImageAggregation::AreaWeighted);
    features["sam_dice_worst"] = worst;
    features["sam_box_boundary_iou"] =
        area_weighted(objects, [&](const ObjectResult& o) { return o.box_prompt.boundary_iou[choice]; });
    features["sam_box_predicted_iou"] =
        area_weighted(objects, [&](const ObjectResult& o) { return o.box_prompt.predicted_iou[choice]; });
    features["sam_box_stability"] =
        area_weighted(objects, [&](const ObjectResult& o) { return o.box_prompt.stability[choice]; });
    features["sam_point_box_dice"] = area_weighted(objects, [](const ObjectResult& o) { return o.point_box_dice; });
}

Features all_features(const ImageResult& image) {
    Features features = image.features;
    // The shape features are there exactly when the prediction could be read, which gives n_objects a meaning.
    if (features.count("foreground_fraction")) features["n_objects"] = image.n_objects;
    if (image.model_confidence) features["model_confidence"] = *image.model_confidence;
    return features;
}

void add_probability_features(Features& features, const cv::Mat& probability, const cv::Mat& pred_labels) {
    if (probability.type() != CV_32FC1 || pred_labels.type() != CV_32SC1 || probability.size() != pred_labels.size())
        throw Error("", "add_probability_features: a CV_32F map and CV_32S labels of one size are needed");
    const cv::Mat confidence = cv::max(probability, 1.0 - probability);
    const cv::Mat foreground = pred_labels != 0;

    const double predicted = cv::countNonZero(foreground);
    if (predicted > 0) features["confidence_foreground"] = cv::mean(confidence, foreground)[0];
    const int band = std::max(1, boundary_band_width(pred_labels.size()) / 2);
    const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_ELLIPSE, {2 * band + 1, 2 * band + 1});
    cv::Mat dilated, eroded;
    cv::dilate(foreground, dilated, kernel);
    cv::erode(foreground, eroded, kernel, {-1, -1}, 1, cv::BORDER_CONSTANT, 0);
    const cv::Mat outline = dilated & ~eroded;
    if (cv::countNonZero(outline) > 0) features["confidence_boundary"] = cv::mean(confidence, outline)[0];

    const int side = patch_side(confidence.size());
    if (confidence.cols >= side && confidence.rows >= side) {
        cv::Mat patch_means;
        cv::boxFilter(confidence, patch_means, CV_32F, {side, side}, {-1, -1}, true, cv::BORDER_REFLECT);
        // Only patches that lie wholly inside the image.
        const int half = side / 2;
        double lowest = 0;
        cv::minMaxLoc(patch_means(cv::Rect(half, half, confidence.cols - side + 1, confidence.rows - side + 1)),
                      &lowest);
        features["confidence_worst_patch"] = lowest;
    }

    cv::Mat predicted_probability;
    probability.copyTo(predicted_probability, foreground);
    const double denominator = cv::sum(probability)[0] + predicted;
    features["soft_dice"] = denominator > 0 ? 2 * cv::sum(predicted_probability)[0] / denominator : 1.0;
}

}  // namespace sqasam
