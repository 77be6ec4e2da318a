#pragma once
// What scoring produces and evaluation/reporting consume: one record per object and per image.
#include <array>
#include <cstddef>
#include <map>
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

// Position of a mask choice in kAllMaskChoices: the index into PromptAgreement's arrays.
std::size_t mask_choice_index(MaskChoice choice);
// An object's score from the Dice of its point-prompt and box-prompt masks.
double reduce(Reducer reducer, double point_dice, double box_dice);

// Dice/IoU of the object against the SAM mask picked by each MaskChoice, for one prompt kind.
struct PromptAgreement {
    std::array<double, 3> dice{};  // indexed like kAllMaskChoices
    std::array<double, 3> iou{};
    std::array<double, 3> predicted_iou{};  // SAM's own IoU prediction for the picked mask
    std::array<double, 3> stability{};      // SAM's stability score of the picked mask
    // Boundary IoU (Cheng et al., CVPR 2021) of the object and the picked mask: the IoU of their inner boundary
    // bands, so that a disagreement along the outline counts whatever the object's size.
    std::array<double, 3> boundary_iou{};
};

// Named measurements beside a score, for calibration and for a reader of the CSVs (the list, with their meaning,
// is sqasam::image_features() in sqa.hpp). A measure that does not apply (no probability map, one model) is absent.
using Features = std::map<std::string, double>;

struct ObjectResult {
    std::string image;  // base name
    std::string model;  // the segmentation model whose prediction holds the object
    int class_label = 1;
    int component = 0;  // connected-component id within the class, 1-based
    long area = 0;
    int box[4] = {0, 0, 0, 0};  // x0, y0, x1, y1, inclusive pixel corners (official XYXY)
    float point[2] = {0, 0};    // x, y
    PromptAgreement point_prompt, box_prompt;
    double point_box_dice = 0;  // Dice between SAM's point-prompt and box-prompt masks (configured mask choice)
    double compactness = 0;     // 4 pi area / perimeter^2: 1 for a disc, near 0 for thin or ragged shapes
    double score = 0;  // with the run's configured reducer and mask choice

    double score_with(Reducer reducer, MaskChoice choice) const;
};

// An image's (or a volume's) score from its objects under a configuration: the mean of their
// score_with(reducer, choice), weighted by their `size` (ObjectResult::area, VolumeObjectResult::voxels) with
// AreaWeighted; empty without objects.
template <class Object>
std::optional<double> aggregate_score(const std::vector<const Object*>& objects, Reducer reducer, MaskChoice choice,
                                      ImageAggregation aggregation, long Object::*size) {
    double weighted_sum = 0, total_weight = 0;
    for (const Object* object : objects) {
        const double weight = aggregation == ImageAggregation::AreaWeighted ? static_cast<double>(object->*size) : 1.0;
        weighted_sum += weight * object->score_with(reducer, choice);
        total_weight += weight;
    }
    if (total_weight <= 0) return std::nullopt;
    return weighted_sum / total_weight;
}
inline std::optional<double> image_score(const std::vector<const ObjectResult*>& objects, Reducer reducer,
                                         MaskChoice choice, ImageAggregation aggregation) {
    return aggregate_score(objects, reducer, choice, aggregation, &ObjectResult::area);
}

// A calibrated estimate of an image's true Dice (sqasam calibrate, score --calibration) and its conformal interval.
struct DiceEstimate {
    double dice = 0, low = 0, high = 1;
    // Features outside the range the calibration saw (names, ";"-separated); empty when all were inside.
    std::string outside;
};

// One image as predicted by one segmentation model.
struct ImageResult {
    std::string image;  // base name
    std::string model;  // the segmentation model (its prediction set's name)
    std::optional<double> score;  // none when the image has no object or could not be read
    int n_objects = 0;
    // Problems that leave the image unscored (error says which file and why): "missing_image",
    // "missing_prediction", "ambiguous_name", "read_error" (image), "prediction_error" (unreadable or not a mask),
    // "too_large" (image or prediction over the pixel limit, refused unread), "size_mismatch" (prediction vs
    // image). Notes: "empty_prediction" (no foreground pixel), "no_objects" (none left after --min-area; also set
    // with empty_prediction), "missing_gt", "gt_error", "missing_prob", "prob_error" (the image is scored; error
    // says why there is no true Dice / model confidence). Read notes (see ReadNote), bare for the image and with
    // the prefix pred_ or gt_ for those files: "exif_orientation", "jpeg_warning", "nonfinite_pixels" (image
    // only), "pred_kind_guessed" / "gt_kind_guessed" (the automatic mask rule guessed; error says how).
    std::vector<std::string> flags;
    std::string error;  // every problem's message, "; "-separated; empty when there is none
    std::optional<double> true_dice;           // with ground truth; both empty counts as 1
    std::vector<std::pair<int, double>> class_dice;  // per class label, with ground truth
    std::optional<double> model_confidence;    // mean over pixels of max(p, 1-p), with probability maps
    Features features;                         // see image_features() in sqa.hpp
    std::optional<DiceEstimate> estimate;      // with a calibration
};

}  // namespace sqasam
