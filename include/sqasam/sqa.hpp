#pragma once
// SQA-SAM (Zhang et al. 2023, arXiv 2312.09899): score a segmentation prediction without ground truth. Every
// predicted object (a connected component of one class) prompts SAM twice, with its centre point and with its
// bounding box; the Dice between the object and SAM's mask is high where SAM "agrees" with the prediction.
// Object score = reduce(point Dice, box Dice); image score = mean over objects.
//
// Known limits of the method: SAM is class-agnostic and only ever sees the predicted objects, so a correct shape
// with the wrong class label, and objects the model missed altogether, do not lower the score. An image whose
// prediction is empty has no score (flags empty_prediction, no_objects): the method cannot say whether that is
// right, so such images deserve a look of their own; n_objects is recorded for the same reason.
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "sqasam/io.hpp"
#include "sqasam/results.hpp"
#include "sqasam/run_journal.hpp"
#include "sqasam/sam.hpp"

namespace sqasam {

// ---- Objects and prompts ----

struct ObjectOptions {
    int connectivity = 8;  // 8 or 4
    long min_area = 0;     // components with fewer pixels are dropped (0: keep all)
};

// One predicted object: a connected component of one class of the label map.
struct PredictedObject {
    int class_label = 0;
    int component = 0;  // OpenCV's component id within the class (raster order of first pixel), 1-based
    long area = 0;
    cv::Rect bounds;  // tight bounding box
    cv::Mat mask;     // CV_8U 0/1 over bounds
    cv::Point2f point;  // the point prompt, image pixel coordinates (see prompt_point)
};

// Objects of every class (ascending label, then component id). labels: CV_32S, 0 = background.
std::vector<PredictedObject> find_objects(const cv::Mat& labels, const ObjectOptions& options = {});

// The point prompt for an object mask (CV_8U 0/1) with the given centroid, both in the mask's coordinates: the
// centroid itself when the pixel containing it (rounded to the nearest pixel) belongs to the object, otherwise
// the object pixel farthest from the background (exact Euclidean distance transform; outside the mask counts as
// background; ties go to the first pixel in raster order), which keeps the point inside C- or ring-shaped objects.
cv::Point2f prompt_point(const cv::Mat& mask, cv::Point2d centroid);

// The box prompt in the official XYXY pixel convention of segment-anything (as its masks-to-boxes utilities
// produce): x0, y0 = first column and row of the object, x1, y1 = its last column and row, inclusive. A
// one-pixel object therefore has x0 == x1.
BoxPrompt prompt_box(const cv::Rect& bounds);

// Dice and IoU of an object against a full-image 0/1 mask. Both empty counts as perfect agreement (1, 1).
struct Overlap {
    double dice = 0, iou = 0;
};
Overlap overlap(const PredictedObject& object, const cv::Mat& image_mask);
// Dice of two same-size masks (nonzero = foreground); both empty -> 1.
double dice(const cv::Mat& a, const cv::Mat& b);
// Boundary IoU (Cheng et al., CVPR 2021) of two same-size masks (nonzero = foreground): the IoU of their inner
// boundary bands, a band being the mask's pixels within `band` pixels (Chebyshev distance; outside the image counts
// as outside) of its outside. Both empty -> 1.
double boundary_iou(const cv::Mat& a, const cv::Mat& b, int band);
// The band width used for an image: 2 % of its diagonal, at least 1 pixel (Cheng et al.'s choice).
int boundary_band_width(cv::Size image_size);
// 4 pi area / perimeter^2 of a mask (nonzero = foreground; perimeter along the pixel-centre contours, holes
// included), at most 1: near 1 for a disc, small for thin, ragged or holed shapes. A single pixel gives 1.
double compactness(const cv::Mat& mask);

// ---- Scoring with SAM ----

// SAM's masks for a batch of prompts on one image's embedding (SamPredictor::predict in the CLI, any stand-in in
// tests): per prompt all 4 outputs of one decoder pass, as MaskOutput::All orders them (mask 0 the single-mask
// output, masks 1..3 the multimask ones).
using MaskSource = std::function<std::vector<MaskPrediction>(const std::vector<Prompt>&)>;
// Prepares SAM for one RGB image (computes its embedding once) and returns the mask source for that image.
using Segmenter = std::function<MaskSource(const cv::Mat& rgb)>;
Segmenter sam_segmenter(SamPredictor& predictor);

// How the agreement between the object and SAM's masks is picked:
// - BestPredictedIou: of the 3 multimask outputs, the one SAM rates best (as the official demos do);
// - BestDice: of the 3, the one that agrees best with the object. It looks at the prediction when choosing, so
//   it is an upper bound ("oracle-ish") rather than an independent opinion of SAM;
// - SingleMask: the single-mask output (multimask_output=False).
// Every object gets 2 decoder passes (point and box), each giving the multimask and single outputs, so all choices
// are recorded.
struct ScoreOptions {
    ObjectOptions objects;
    Reducer reducer = Reducer::Max;
    MaskChoice mask_choice = MaskChoice::BestPredictedIou;
    ImageAggregation aggregation = ImageAggregation::Mean;
};

// How sqasam prompts a SAM model family by default, and why: each family the way it was trained. The choice is
// backed by the leave-one-dataset-out evidence in bench/quality (README, "Choosing the defaults").
struct PromptingDefaults {
    Reducer reducer;
    MaskChoice mask_choice;
    ImageAggregation aggregation;
    std::string reason;  // one or two sentences for the report
};
PromptingDefaults default_prompting(ModelType type);

struct ScoredObjects {
    std::vector<ObjectResult> objects;
    // Union over objects of SAM's mask (for the configured mask choice) per prompt kind, CV_8U 0/1 at image size.
    cv::Mat sam_point_mask, sam_box_mask;
};
// Called after each batch of objects SAM has scored: objects done so far, objects of the prediction.
using ObjectProgress = std::function<void(std::size_t done, std::size_t total)>;
ScoredObjects score_objects(const std::string& image_name, const std::string& model,
                            const std::vector<PredictedObject>& objects, cv::Size image_size, const MaskSource& sam,
                            const ScoreOptions& options, const ObjectProgress& progress = {});

// ---- Features: measurements beside the score, for calibration ----

// Where a feature comes from: SAM's masks, the prediction's shape, the model's probability map, or the other
// models' predictions of the same image.
enum class FeatureGroup { Sam, Shape, Probability, Agreement };
std::string to_string(FeatureGroup group);

struct FeatureInfo {
    const char* name;
    FeatureGroup group;
    // +1 where a higher value is expected to go with a higher true Dice (a monotone constraint for calibration),
    // 0 where no direction is assumed.
    int direction;
    const char* meaning;
};
// Every image feature sqasam records, in the order of images.csv's columns. n_objects and model_confidence are
// ImageResult's own fields; the others live in ImageResult::features.
const std::vector<FeatureInfo>& image_features();
// An image's features by name, its own fields n_objects and model_confidence included.
Features all_features(const ImageResult& image);

// The SAM and shape features of an image's objects (scored under options).
void add_object_features(Features& features, const std::vector<ObjectResult>& objects, const ScoreOptions& options,
                         cv::Size image_size);
// The probability features: probability CV_32F in [0,1] (the foreground's), pred_labels CV_32S of the same size.
void add_probability_features(Features& features, const cv::Mat& probability, const cv::Mat& pred_labels);

// ---- Ground truth and the model-confidence baseline ----

struct TrueDice {
    double dice = 1;  // mean over classes present in either map; 1 when both maps are empty
    std::vector<std::pair<int, double>> class_dice;  // per class present in either map, ascending label
};
// For binary maps this is the foreground Dice. Both maps: CV_32S labels of the same size.
TrueDice true_dice(const cv::Mat& pred_labels, const cv::Mat& gt_labels);

// The Model-Confidence baseline: mean over pixels of max(p, 1 - p), p in [0,1] (CV_32F).
double model_confidence(const cv::Mat& probability);

// ---- One image, a whole dataset ----

// Each object costs SAM two decoder passes (~0.1 s on a CPU): 1,000 objects take a few minutes.
inline constexpr std::size_t kDefaultMaxObjects = 1000;

struct PipelineOptions {
    ScoreOptions score;
    std::optional<double> pred_threshold;  // for soft predictions, fraction of full scale (default 0.5)
    std::optional<MapKind> pred_kind, gt_kind;  // how masks are read (see MaskReading); none: the automatic rule
    int64_t max_pixels = kDefaultMaxPixels;     // larger images, predictions and maps are flagged too_large
    std::size_t max_objects = kDefaultMaxObjects;  // an image with more objects is flagged too_many_objects, unscored
};

// One model's prediction of one image, scored.
struct ImageOutcome {
    ImageResult image;
    std::vector<ObjectResult> objects;
    cv::Mat sam_point_mask, sam_box_mask;  // as in ScoredObjects; empty when SAM did not run
};

// Within a catch block: the message of the exception being handled, for the flag processing_error ("OpenCV: ...",
// "out of memory", what() of a standard or sqasam exception, "unknown exception").
std::string current_exception_message();

// Reads the item's files and scores every model's prediction of it (one outcome per model, in the order of
// Dataset::models), on one SAM embedding of the image. Problems with one file become flags and messages in the
// results (see ImageResult::flags), never an exception: any exception while handling the image (sqasam's, OpenCV's,
// the standard library's, out of memory) becomes the flag processing_error with its message on every model's row.
// SAM runs only when some prediction has objects. With two or more models, each row gets the model_agreement
// feature. progress hears of each batch of objects SAM has scored: the model's index, its objects done so far and in
// all.
using ItemProgress = std::function<void(std::size_t model, std::size_t done, std::size_t total)>;
std::vector<ImageOutcome> score_item(const DatasetItem& item, const Dataset& dataset, const Segmenter& segmenter,
                                     const PipelineOptions& options, const ItemProgress& progress = {});

// The item's input files as they are now (path, size and modification time of each): a journaled image whose
// inputs no longer match is computed again on --resume.
nlohmann::json input_stamps(const DatasetItem& item);

// Finished images of a run, kept in out/.partial/ so a killed run can continue (--resume), on RunJournal (see
// run_journal.hpp for the journal's rules: lock, configuration check, torn and damaged lines, replaced lines):
// one line per image holds all its models' outcomes with their objects and the image's input_stamps, and
// masks/<model index>/<name>.png the SAM mask unions for the report's overlays (bit 0 point, bit 1 box).
class Journal {
public:
    Journal(const std::filesystem::path& out_dir, const nlohmann::json& config, bool resume);

    // The images earlier runs finished (read when the journal was opened), each with its models' outcomes in the
    // run's model order, without their masks.
    const std::vector<std::vector<ImageOutcome>>& finished() const { return finished_; }
    bool contains(const std::string& image) const { return journal_.contains(image); }
    // Whether the journal holds the item, scored from the input files as they are now.
    bool up_to_date(const DatasetItem& item) const;
    // Records a finished image, all its models' outcomes, with the stamps its inputs had before it was scored (on
    // disk at once; finished() does not change, contains() and up_to_date() know the image).
    void append(const std::vector<ImageOutcome>& outcomes, const nlohmann::json& inputs);
    // The SAM mask unions stored for an image and a model (its index in Dataset::models): {point, box}, empty Mats
    // when there are none.
    std::pair<cv::Mat, cv::Mat> masks(const std::string& image, std::size_t model) const;

private:
    std::filesystem::path mask_path(const std::string& image, std::size_t model) const;

    RunJournal journal_;
    std::vector<std::vector<ImageOutcome>> finished_;
};

// check_output_folder (run_journal.hpp) for score's outputs: images.csv, objects.csv, summary.json, report.html.
void check_output_folder(const std::filesystem::path& out_dir, const nlohmann::json& config);

struct RunResult {
    std::vector<ImageResult> images;    // in dataset order (sorted by name), each image's models in the run's order
    std::vector<ObjectResult> objects;  // grouped by image and model in the same order, then by class and component
    std::size_t resumed = 0;            // images taken from the journal
};
// Where a run stands after an image, and within an image after each batch of its objects, for progress and ETA.
struct RunProgress {
    std::size_t finished = 0, total = 0;       // images done (taken from the journal or computed), all images
    std::size_t computed = 0, to_compute = 0;  // images computed by this run so far, and in all
    std::string image;                         // the image just done, or the one being scored
    // Within the image being scored: the model whose objects SAM is scoring (its name, in runs of several models),
    // its objects done and in all; both counts 0 once the image is done.
    std::string model;
    std::size_t objects_done = 0, objects_total = 0;
};
using ProgressCallback = std::function<void(const RunProgress&)>;

// Scores every item not in the journal up to date, appending each as it finishes, and returns all results in
// order; journaled images that are no longer in the dataset are left out.
RunResult score_dataset(const Dataset& dataset, const Segmenter& segmenter, const PipelineOptions& options,
                        Journal& journal, const ProgressCallback& progress = {});

}  // namespace sqasam
