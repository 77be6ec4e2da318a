#pragma once
// Reading what a user points sqasam at: images, predicted label maps, probability maps, ground truth, and the
// pairing of files across folders (or a manifest). Every failure is an sqasam::Error naming the file.
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

namespace sqasam {

// PNG, JPEG, TIFF and BMP, by extension (case-insensitive).
bool is_supported_image_file(const std::filesystem::path& path);

// An image for SAM: CV_8UC3 in RGB order. Gray becomes three equal channels, alpha is dropped, 16-bit is scaled
// to 8-bit (v / 257) and float is taken as [0,1] (x 255). Pixels are read as stored (EXIF orientation ignored),
// which is how the masks beside them are read too.
cv::Mat read_rgb_image(const std::string& path);

// How a mask file's values were interpreted.
enum class MapKind {
    Binary,  // {0, full scale}: foreground is label 1
    Labels,  // integer label map: 0 background, every other value is a class label kept as is
    Soft,    // scores/probabilities, thresholded into foreground label 1
};
std::string to_string(MapKind kind);

struct LabelMap {
    cv::Mat labels;  // CV_32S, 0 background
    MapKind kind = MapKind::Binary;
};

// The rule that tells binary masks, label maps and soft maps apart, for a single-channel 8-bit, 16-bit or float
// image (full scale: 255, 65535, 1.0):
// - only the values 0 and full scale: Binary;
// - integer values otherwise: Labels, unless there are more than kMaxLabels distinct values or (8/16-bit) full
//   scale occurs beside other values, which make it Soft;
// - any non-integer value (float): Soft.
// Soft maps become foreground (label 1) where value > threshold x full scale; threshold 0.5 unless given.
// So a label map whose classes are coded as spread-out gray levels reaching 255 (0, 85, 170, 255) reads as soft.
// Negative, NaN or infinite values, and soft float values above 1, make the file a bad mask (Error).
inline constexpr int kMaxLabels = 32;
LabelMap label_map_from_values(const cv::Mat& values, std::optional<double> soft_threshold = {},
                               const std::string& file = "");
// Reads a prediction or ground-truth mask. Multi-channel files are accepted when their colour channels are
// equal (a gray image saved as RGB); coloured masks are rejected.
LabelMap read_label_map(const std::string& path, std::optional<double> soft_threshold = {});

// A probability map scaled to [0,1]: 8-bit / 255, 16-bit / 65535, float as is (must lie in [0,1]). CV_32F.
cv::Mat read_probability_map(const std::string& path);

// A CSV file's rows (RFC 4180: quoted fields may hold separators, quotes and line breaks); blank lines are skipped.
struct CsvRow {
    int line = 0;  // where the row starts, 1-based
    std::vector<std::string> fields;
};
std::vector<CsvRow> read_csv(const std::string& path);

// Replaces path's contents all at once: writes a temporary file beside it, flushes it to disk and renames it over
// path, so a reader (or a killed run) never sees a half-written file.
void write_file_atomically(const std::filesystem::path& path, const std::string& contents);
// Appends text to path (created if needed) and flushes it to disk before returning: a journal line that survives a
// crash right after.
void append_durably(const std::filesystem::path& path, const std::string& text);

// One segmentation model's files for an image; a path is empty where the file is missing.
struct PredictionFiles {
    std::string pred;
    std::string prob;  // its probability map, when the run has them for this model
};

// A segmentation model whose predictions are scored (one `--pred` folder, or one manifest column).
struct SegmentationModel {
    std::string name;       // as given (`--pred NAME=DIR`), else the folder's name; unique within a run
    bool has_prob = false;  // whether probability maps were given for it
    // Its prediction files whose base name no image has (folders only, sorted): not items, kept to say so.
    std::vector<std::string> unmatched_predictions;
};

// One image to score and the files that belong to it; a path is empty where the file is missing.
struct DatasetItem {
    std::string name;  // base name (file name without its last extension)
    std::string image, gt;
    std::vector<PredictionFiles> predictions;  // one per model, in the order of Dataset::models
    std::string problem;  // set when the files cannot be paired (two files share the base name in one folder)
};

struct Dataset {
    std::vector<DatasetItem> items;  // sorted by name, unique names
    std::vector<SegmentationModel> models;  // at least one
    bool has_gt = false;  // whether ground truth was asked for
};

// A folder of one model's predictions, and optionally its probability maps.
struct PredictionFolder {
    std::string model;  // empty: the folder's name
    std::string pred;
    std::string prob;   // optional
};

struct DatasetFolders {
    std::string images;
    std::vector<PredictionFolder> predictions;  // one or more models
    std::string gt;  // optional: empty when not given
};

// "NAME=DIR" -> {NAME, DIR}; a plain "DIR" (or an existing folder whose name holds '=') -> {"", DIR}. NAME may not
// hold '/'. For the repeatable --pred and --prob options.
std::pair<std::string, std::string> split_named_folder(const std::string& text);

// Pairs files by base name (extensions may differ). Every image becomes an item; a model's predictions without an
// image are listed in its unmatched_predictions; files of other types are ignored. A missing or empty folder, or two
// models with one name, is an Error.
Dataset match_folders(const DatasetFolders& folders);

// For up to `limit` images that found no prediction file of model `model` (an index into Dataset::models):
// "image X.jpg: no prediction named X.*, closest X_mask.png" (closest: the model's unmatched prediction whose base
// name is fewest edits away), to explain a naming mismatch.
std::vector<std::string> unmatched_name_hints(const Dataset& dataset, std::size_t model, std::size_t limit = 3);

// A CSV with a header naming the columns image and pred, optionally prob and gt (any order; quoting as in
// RFC 4180). Several models: columns `pred:NAME` (and `prob:NAME`) beside or instead of `pred` (model "pred").
// Relative paths are relative to the manifest's folder; an empty cell is a missing file. The item name is the
// image's base name; two rows with the same name are an Error.
Dataset read_manifest(const std::string& csv_path);

}  // namespace sqasam
