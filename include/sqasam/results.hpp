#pragma once
// What scoring produces and evaluation/reporting consume: one record per object and per image.
#include <array>
#include <optional>
#include <string>
#include <vector>

namespace sqasam {

// How SAM's candidate masks are turned into one mask per prompt.
enum class MaskChoice { BestPredictedIou, BestDice, SingleMask };
// How an object's point-prompt and box-prompt Dice become its score.
enum class Reducer { Max, Mean, Min, PointOnly, BoxOnly };
// How object scores become the image score.
enum class ImageAggregation { Mean, AreaWeighted };

inline constexpr std::array<MaskChoice, 3> kAllMaskChoices{MaskChoice::BestPredictedIou, MaskChoice::BestDice,
                                                           MaskChoice::SingleMask};
inline constexpr std::array<Reducer, 5> kAllReducers{Reducer::Max, Reducer::Mean, Reducer::Min, Reducer::PointOnly,
                                                     Reducer::BoxOnly};

std::string to_string(MaskChoice choice);
std::string to_string(Reducer reducer);
std::string to_string(ImageAggregation aggregation);
MaskChoice mask_choice_from_string(const std::string& name);  // "best_iou", "best_dice", "single"
Reducer reducer_from_string(const std::string& name);         // "max", "mean", "min", "point", "box"
ImageAggregation aggregation_from_string(const std::string& name);  // "mean", "area"

// Dice/IoU of the object against the SAM mask picked by each MaskChoice, for one prompt kind.
struct PromptAgreement {
    std::array<double, 3> dice{};  // indexed like kAllMaskChoices
    std::array<double, 3> iou{};
    std::array<double, 3> predicted_iou{};  // SAM's own IoU prediction for the picked mask
};

struct ObjectResult {
    std::string image;  // base name
    int class_label = 1;
    int component = 0;  // connected-component id within the class, 1-based
    long area = 0;
    int box[4] = {0, 0, 0, 0};  // x0, y0, x1, y1, inclusive pixel corners (official XYXY)
    float point[2] = {0, 0};    // x, y
    PromptAgreement point_prompt, box_prompt;
    double score = 0;  // with the run's configured reducer and mask choice

    double score_with(Reducer reducer, MaskChoice choice) const;
};

struct ImageResult {
    std::string image;  // base name
    std::optional<double> score;  // none when the image has no object or could not be read
    int n_objects = 0;
    std::vector<std::string> flags;  // "no_objects", "read_error", "size_mismatch", "missing_prediction", ...
    std::string error;               // the message when a flag is an error
    std::optional<double> true_dice;           // with ground truth; both empty counts as 1
    std::vector<std::pair<int, double>> class_dice;  // per class label, with ground truth
    std::optional<double> model_confidence;    // mean over pixels of max(p, 1-p), with probability maps
};

}  // namespace sqasam
