#pragma once
// SQA-SAM on 3D volumes (CT, MR): NIfTI, NRRD, MetaImage and DICOM series read with ITK, nnU-Net folder layouts,
// each class's 3D connected components scored slice by slice with SAM, one row per volume, class and object.
//
// Conventions (also in the README):
// - Voxels are stored as ITK reads them: index (i, j, k), i fastest; physical point = origin + direction *
//   (spacing .* index), in ITK's LPS space. nibabel's get_fdata()[i, j, k] is the same voxel; nnU-Net's arrays and
//   SimpleITK's GetArrayFromImage() are indexed [k, j, i] (and nnU-Net's CASE.npz `probabilities` [c, k, j, i]).
// - Slices are taken along one axis (default: the one of coarsest spacing, the slowest on ties). A slice along axis
//   2 has rows j and columns i; along axis 1 rows k, columns i; along axis 0 rows k, columns j. There is no
//   in-plane resampling.
// - Every slice handed to SAM is windowed to 8 bits first (see WindowRule), then goes through the model's own
//   preprocessing as three equal channels.
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "sqasam/eval.hpp"
#include "sqasam/io.hpp"
#include "sqasam/report.hpp"
#include "sqasam/results.hpp"
#include "sqasam/run_journal.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {

// ---- Volumes and their geometry ----

struct VolumeGeometry {
    std::array<long, 3> size{0, 0, 0};
    std::array<double, 3> spacing{1, 1, 1};
    std::array<double, 3> origin{0, 0, 0};
    std::array<double, 9> direction{1, 0, 0, 0, 1, 0, 0, 0, 1};  // row-major; column a is axis a's direction
    long voxels() const { return size[0] * size[1] * size[2]; }
};
std::string to_string(const VolumeGeometry& geometry);  // "240x240x155 @ 1x1x1 mm"

// Whether two grids are the same: equal sizes, and spacing, origin and direction equal within the tolerances
// (relative for spacing, in units of the smallest spacing for the origin, absolute for direction cosines).
struct GeometryTolerance {
    double spacing = 1e-4, origin = 1e-3, direction = 1e-4;
};
// Empty when the grids match, else what differs ("size 240x240x155 vs 240x240x154").
std::string geometry_difference(const VolumeGeometry& a, const VolumeGeometry& b, const GeometryTolerance& tolerance = {});

struct ImageVolume {
    VolumeGeometry geometry;
    std::vector<float> voxels;  // i fastest
    std::string modality;       // "CT" or "MR" when the file says so (DICOM's Modality), else empty
};

struct LabelVolume {
    VolumeGeometry geometry;
    std::vector<int32_t> labels;  // i fastest, 0 = background
    MapKind kind = MapKind::Labels;
};

// NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), or a folder holding one DICOM series.
bool is_volume_path(const std::filesystem::path& path);
// The file name without its volume extension ("CASE_0000.nii.gz" -> "CASE_0000"); a folder's name as it is.
std::string volume_stem(const std::filesystem::path& path);

// Reads an image volume as float intensities (DICOM: rescale slope and intercept applied). A 4D file (or 3D with
// several components per voxel) needs `channel` (its index along the 4th dimension / among the components);
// without it the read fails. A 3D volume with `channel` > 0 fails too. Every failure is an Error naming the path.
ImageVolume read_image_volume(const std::string& path, std::optional<int> channel = {});
// Reads a prediction or ground truth: any integer type is a label map (values 0 and the type's maximum only, for
// unsigned 8/16 bits, are a binary mask whose foreground becomes label 1; negative labels are an Error); a float
// volume follows the 2D rule of label_map_from_values (integer values: labels; otherwise a soft map thresholded at
// soft_threshold, default 0.5).
LabelVolume read_label_volume(const std::string& path, std::optional<double> soft_threshold = {});

// Model confidence of a probability volume: mean over voxels of max over classes of p (for one foreground map,
// max(p, 1 - p)). Reads a float volume (one foreground probability in [0, 1]) or nnU-Net's CASE.npz (key
// `probabilities`, C x K x J x I, float16/32/64), streamed so that one float per voxel is held. The grid must be
// `geometry`'s (the npz holds no geometry, only its shape is checked).
double volume_model_confidence(const std::string& path, const VolumeGeometry& geometry);

// ---- Intensities for SAM ----

enum class Modality { Auto, CT, MR };
std::string to_string(Modality modality);
Modality modality_from_string(const std::string& name);  // "auto", "ct", "mr"

// How intensities become the 8-bit gray slices SAM sees, as MedSAM's pre_CT_MR.py does:
// - CT: clip to [level - width/2, level + width/2] (default soft tissue: level 40, width 400 HU);
// - MR: clip to the 0.5th and 99.5th percentiles of the nonzero voxels (numpy's linear interpolation); voxels
//   that were 0 stay 0;
// then (x - min) / (max - min) * 255 over the clipped volume, truncated to an integer (as numpy's uint8 cast does).
// Auto: the DICOM Modality when the file gives one, else CT when the volume's minimum is below -500 (air in
// Hounsfield units is -1000) and MR otherwise. CT stored without its intercept (0..4095) reads as MR: say --modality ct.
struct WindowRule {
    Modality modality = Modality::Auto;
    double level = 40, width = 400;
};
struct WindowedVolume {
    VolumeGeometry geometry;
    std::vector<uint8_t> gray;  // i fastest
    Modality modality = Modality::CT;  // the rule applied
    double low = 0, high = 0;          // the clip bounds used
};
WindowedVolume window_volume(const ImageVolume& image, const WindowRule& rule);

// The axis of coarsest spacing (the slowest one on ties).
int default_slice_axis(const VolumeGeometry& geometry);
// Slice `index` along `axis` as a CV_8U or CV_32S matrix (see the axis conventions above).
cv::Mat volume_slice(const uint8_t* voxels, const VolumeGeometry& geometry, int axis, long index);
cv::Mat volume_slice(const int32_t* voxels, const VolumeGeometry& geometry, int axis, long index);

// ---- Objects ----

struct VolumeObjectOptions {
    int connectivity = 26;  // 26 or 6
    long min_voxels = 0;    // smaller components are dropped
    int slice_axis = -1;    // -1: default_slice_axis
    int max_slices = 10;    // per object, evenly spaced; 0 = all
};

// One 3D connected component of one class, and the slices of it that are scored.
struct VolumeObject {
    int class_label = 0;
    int component = 0;  // 1-based, in raster order (i fastest) of the component's first voxel
    long voxels = 0;
    std::array<long, 6> bounds{};  // i0, j0, k0, i1, j1, k1, inclusive
    int n_slices = 0;              // slices along the axis that hold voxels of it
    // The chosen slices (ascending) and the object's 2D cross-section on each: its bounds, 0/1 mask, area and
    // point prompt (PredictedObject's rules; a cross-section may have several pieces: it is one prompt).
    std::vector<long> slices;
    std::vector<PredictedObject> cross_sections;
};

// Which slices of an object spanning slices first..last (indices along the axis) are scored: the multiples of a
// step s in [first, last], s the smallest power of two that leaves at most max_slices of them (s = 1, every slice,
// when the object spans at most max_slices or max_slices is 0). Evenly spaced, at least ceil(max_slices / 2) of
// them (of the max_slices + 1 or more multiples of s / 2, every second is one of s). Positions are shared by the
// whole case: every step divides the larger ones, so where objects overlap along the axis (nested classes, several
// models' predictions of one structure) the coarser ones' slices are among the finer ones' and are encoded once.
std::vector<long> choose_slices(long first, long last, int max_slices);

// The objects of every class (ascending label, then component). axis must be resolved (0..2).
std::vector<VolumeObject> find_volume_objects(const LabelVolume& labels, const VolumeObjectOptions& options);

// ---- Scores ----

// One scored slice of an object: the slice index and the 2D record of that cross-section (ObjectResult::image is
// the case name; area is the cross-section's).
struct SliceScore {
    long slice = 0;
    ObjectResult cross_section;
};

struct VolumeObjectResult {
    std::string case_name, model;
    int class_label = 0, component = 0;
    long voxels = 0;
    double volume_ml = 0;
    std::array<long, 6> bounds{};
    int n_slices = 0;
    std::vector<SliceScore> slices;
    double score = 0;  // area-weighted mean of the slice scores, with the run's reducer and mask choice

    double score_with(Reducer reducer, MaskChoice choice) const;
};

struct ClassResult {
    int class_label = 0;
    int n_objects = 0;
    long voxels = 0;                  // predicted
    std::optional<double> score;      // mean over the class's objects (area-weighted by voxels with --aggregation area)
    std::optional<double> true_dice;  // with ground truth (classes present in prediction or ground truth)
};

struct VolumeResult {
    // image = case name; score = mean over objects (or voxel-weighted); flags, error, true_dice, class_dice and
    // model_confidence as in 2D. Flags of volumes: missing_image, missing_prediction, read_error,
    // prediction_error, multichannel_image (4D without --channel), geometry_mismatch, empty_prediction,
    // no_objects, missing_gt, gt_error, missing_prob, prob_error, processing_error (anything else went wrong).
    ImageResult volume;
    std::string model;
    int slices_encoded = 0;                        // of the case (shared by its models)
    std::optional<double> agreement;               // mean pairwise Dice of all the case's models (>= 2 models)
    std::optional<double> model_agreement;         // median Dice of this model against each other model
    std::vector<ClassResult> classes;
    std::optional<Modality> modality;              // the windowing rule applied (none when no image was read)
};

// Score of a volume from its objects under a configuration (ablation): mean of object scores, or weighted by
// voxels for AreaWeighted; empty without objects.
std::optional<double> volume_score(const std::vector<const VolumeObjectResult*>& objects, Reducer reducer,
                                   MaskChoice choice, ImageAggregation aggregation);

// ---- A dataset of volumes ----

// One case: its image and, per model, its prediction (same order as VolumeDataset::models).
struct VolumeCase {
    std::string name;
    std::string image;             // file or DICOM folder; empty when missing
    std::vector<std::string> pred;  // per model; empty entry when missing
    std::vector<std::string> prob;  // per model; empty when missing or not asked for
    std::string gt;
    std::string problem;  // set when names clash (two files of one case in a folder)
};

struct VolumeModel {
    std::string name, folder;
};

struct VolumeDataset {
    std::vector<VolumeModel> models;
    std::vector<VolumeCase> cases;  // sorted by name
    bool has_gt = false, has_prob = false;
    std::map<int, std::string> class_names;  // from dataset.json, when found
    std::string dataset_json;                 // the file they came from
};

struct VolumeFolders {
    std::string images;
    std::vector<VolumeModel> preds;  // one per --pred
    std::string gt;
    bool prob = false;          // look for CASE.npz beside each prediction (nnU-Net --save_probabilities)
    std::string channel = "0";  // image file suffix: "0" -> CASE_0000, "t1c" -> CASE_t1c; CASE alone also matches
    std::string dataset_json;   // explicit; else dataset.json in the images folder's parent, the images folder or
                                // a prediction folder, the first found
};

// nnU-Net layout: images CASE_0000.nii.gz (channel suffix), predictions and labels CASE.nii.gz. Every case found
// in the images folder (with the channel asked for) or in a prediction folder becomes a case.
VolumeDataset match_volume_folders(const VolumeFolders& folders);
// dataset.json's class names: nnU-Net v2 {"labels": {"liver": 1}} or v1 {"labels": {"1": "liver"}}; background
// (0) is left out.
std::map<int, std::string> read_class_names(const std::string& dataset_json);

struct VolumeRunOptions {
    ScoreOptions score;                // reducer, mask choice, aggregation (objects options are unused here)
    VolumeObjectOptions objects;
    WindowRule window;
    std::optional<int> channel;        // for 4D images: which volume; empty = refuse 4D images
    std::optional<double> pred_threshold;
    GeometryTolerance tolerance;
};

// What scoring one case gives: one result per model, their objects, and the pictures of the case's worst slice.
struct CaseOutcome {
    std::string name;                         // the case's
    std::vector<VolumeResult> volumes;        // one per model
    std::vector<VolumeObjectResult> objects;  // all models
    // For the report: per model with a scored object, the slice where its lowest-scored object scored lowest: the
    // gray slice, and on it the prediction (nonzero where the model predicts any class) and SAM's mask unions (0/1).
    struct WorstSlice {
        std::string model;
        long slice = -1;
        int axis = 2;
        cv::Mat gray, prediction, sam_point_mask, sam_box_mask;
        std::vector<ObjectResult> cross_sections;  // every cross-section scored on that slice for that model
    };
    std::vector<WorstSlice> worst_slices;
};

// Reads the case's files and scores every model's prediction. Each slice that any object of any model is scored
// on is encoded once (segmenter) and its embedding serves every object on it. Per-case problems become flags.
CaseOutcome score_case(const VolumeCase& item, const VolumeDataset& dataset, const Segmenter& segmenter,
                       const VolumeRunOptions& options);

// ---- A run: the journal behind --resume ----

// The case's input files as they are now (path_stamp of its image file or DICOM folder, ground truth, and each
// model's prediction and probabilities): a journaled case whose inputs no longer match is scored again on --resume.
nlohmann::json input_stamps(const VolumeCase& item);

// Finished cases of a score-volumes run, kept in out/.partial/ so a killed run can continue (--resume), on
// RunJournal (see run_journal.hpp for the journal's rules: lock, configuration check, torn and damaged lines,
// replaced lines): one line per case holds every model's VolumeResult, its objects with their scored slices and its
// worst slice (which one, its cross-sections); the worst slice's pictures are written before the line, as one
// 3-channel PNG slices/<model index>/<case>.png: the gray slice, and its masks (bit 0 SAM's point-prompt union,
// bit 1 its box-prompt union, bit 2 the prediction).
class VolumeJournal {
public:
    VolumeJournal(const std::filesystem::path& out_dir, const nlohmann::json& config, bool resume);

    // The cases earlier runs finished (read when the journal was opened), their worst slices without pictures
    // (see load_pictures).
    const std::vector<CaseOutcome>& finished() const { return finished_; }
    // Whether the journal holds the case, scored from its files as they are now.
    bool up_to_date(const VolumeCase& item) const;
    // Records a finished case with the stamps its inputs had before it was scored (on disk when this returns).
    void append(const CaseOutcome& outcome, const nlohmann::json& inputs);
    // Reads the pictures of a journaled case's worst slices back; one whose picture is missing or unreadable keeps
    // empty ones (the tables still list the case).
    void load_pictures(CaseOutcome& outcome) const;

private:
    std::filesystem::path picture_path(const std::string& case_name, std::size_t model) const;

    RunJournal journal_;
    std::vector<CaseOutcome> finished_;
};

// Where a run of cases stands, for progress lines: cases done (from the journal or computed) and in all, and the
// case just done.
struct VolumeRunProgress {
    std::size_t finished = 0, total = 0;
    CaseOutcome* outcome = nullptr;        // the case just done (the callback may take its contents)
    bool from_journal = false;             // taken from the journal rather than scored
    double seconds = 0;                    // spent scoring it
};

// Scores every case not in the journal up to date, appending each as it finishes, and hands every case's outcome
// (journaled ones with their pictures) to on_case in dataset order, so that a caller keeps only what it needs (the
// report's few pictures). Any exception while scoring a case (out of memory, OpenCV's, ...) becomes the flag
// processing_error with its message on every model's row of that case; the run goes on.
void score_volume_cases(const VolumeDataset& dataset, const Segmenter& segmenter, const VolumeRunOptions& options,
                        VolumeJournal& journal, const std::function<void(const VolumeRunProgress&)>& on_case);

// ---- Outputs ----

// What `sqasam score-volumes` writes into a folder: volumes.csv (one row per case and model), classes.csv (per
// case, model and class), objects.csv (per 3D object), summary.json and report.html (the 2D report's evaluation,
// with per-class and model-agreement sections and the worst slices of the lowest-scored volumes).
struct VolumeReportInput {
    std::vector<VolumeResult> volumes;
    std::vector<VolumeObjectResult> objects;
    std::map<int, std::string> class_names;
    std::vector<ImageOverlay> overlays;  // from volume_overlay(), for the lowest-scored volumes
    EvalOptions eval_options;
    ScoreOptions score;
    nlohmann::json config = nlohmann::json::object();
    nlohmann::json model = nlohmann::json::object();
    std::string prompting_reason;  // default_prompting's reason, for the report
};

// The name of a volume's row in the report: the case, with the model in brackets when a run has several.
std::string volume_row_name(const VolumeResult& volume, bool several_models);
// The report's picture of a worst slice.
ImageOverlay volume_overlay(const VolumeResult& volume, const CaseOutcome::WorstSlice& slice);
// The evaluation of a volume run: the 2D metrics over volumes, and the ablation recomputed from the slices.
Evaluation evaluate_volumes(const std::vector<VolumeResult>& volumes, const std::vector<VolumeObjectResult>& objects,
                            const EvalOptions& options);
// The five outputs into folder (created if missing), swapped in as one set as write_report_folder does.
void write_volume_report(const std::string& folder, const VolumeReportInput& input);

}  // namespace sqasam
