#pragma once
// Reading what a user points sqasam at: images, predicted label maps, probability maps, ground truth, and the
// pairing of files across folders (or a manifest). Every failure is an sqasam::Error naming the file.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <opencv2/core.hpp>

#include "sqasam/error.hpp"

namespace sqasam {

// PNG, JPEG, TIFF and BMP, by extension (case-insensitive).
bool is_supported_image_file(const std::filesystem::path& path);

// How every image, prediction, probability map and ground-truth file is read:
// - Only PNG, JPEG, TIFF (classic) and BMP, recognised by their first bytes whatever the extension; anything else
//   (including formats OpenCV could decode) is an Error.
// - The header is read first: an image of more than max_pixels pixels (width x height) is refused before it is
//   decoded (ImageTooLarge), as is a file larger than 16 bytes per allowed pixel plus 1 MiB.
// - EXIF orientation (a JPEG's or PNG's Exif block, a TIFF's Orientation tag) is applied, as image viewers and
//   cv2.imread do, to images and masks alike; a file read with an orientation other than 1 gets the note
//   exif_orientation, since a mask made from the stored pixels would then no longer line up.
// - A JPEG is checked with libjpeg first: data cut short (a truncated file, even one ending in an end-of-image
//   marker) is an Error, any other libjpeg warning the note jpeg_warning.
inline constexpr int64_t kDefaultMaxPixels = 50'000'000;

// The image was larger than the pixel limit: scoring flags it too_large rather than read_error.
class ImageTooLarge : public Error {
public:
    using Error::Error;
};

// Something worth a flag that did not stop the file being used.
struct ReadNote {
    std::string flag;     // exif_orientation, jpeg_warning, nonfinite_pixels, kind_guessed
    std::string message;  // names the file
};

// An image for SAM: CV_8UC3 in RGB order. Gray becomes three equal channels and alpha is dropped. 16-bit pixels
// are scaled by the bit depth their values use: with b = max(8, bits of the largest value), v -> v x 255 / (2^b - 1),
// so 10-, 12- or 14-bit data stored in a 16-bit file keeps all its grey levels, and data that uses all 16 bits is
// v / 257. Float pixels are taken as [0,1] (x 255, saturated); NaN or infinite ones become 0 with the note
// nonfinite_pixels.
struct ImageFile {
    cv::Mat rgb;
    std::vector<ReadNote> notes;
};
ImageFile read_image(const std::string& path, int64_t max_pixels = kDefaultMaxPixels);
cv::Mat read_rgb_image(const std::string& path, int64_t max_pixels = kDefaultMaxPixels);  // read_image's pixels

// How a mask file's values were interpreted.
enum class MapKind {
    Binary,  // foreground (every nonzero value) is label 1
    Labels,  // integer label map: 0 background, every other value is a class label kept as is
    Soft,    // scores/probabilities, foreground label 1 where value > threshold x full scale
};
std::string to_string(MapKind kind);
MapKind map_kind_from_string(const std::string& name);  // "binary", "labels", "soft"

// How to read a mask: a forced kind, or none for the automatic rule below.
struct MaskReading {
    std::optional<MapKind> kind;           // none: auto
    std::optional<double> soft_threshold;  // fraction of full scale for soft maps; 0.5 unless given
    int64_t max_pixels = kDefaultMaxPixels;
};

struct LabelMap {
    cv::Mat labels;  // CV_32S, 0 background
    MapKind kind = MapKind::Binary;
    std::vector<ReadNote> notes;  // kind_guessed when the automatic rule had to guess, and the file's read notes
};

// The automatic rule, for a single-channel 8-bit, 16-bit or float image (full scale: 255, 65535, 1.0), over its
// distinct nonzero values V:
// - any non-integer value (float): Soft;
// - V empty, {full scale} or {1}: Binary;
// - one other value v (0/254, 0/128): Binary, noted kind_guessed (it could be class v of a label map);
// - up to kMaxLabels values without full scale among them: Labels; noted kind_guessed when the soft reading is
//   possible too (the largest value is above the threshold: {100, 200}), since a soft map with few levels would
//   look the same;
// - full scale beside other values ({1, 255}, {85, 170, 255}: often an anti-aliased binary mask), or more than
//   kMaxLabels values: Soft, noted kind_guessed (a label map looks the same; --pred-kind labels reads it so);
//   integer float values above 1, which no soft map holds, are Labels.
// A forced kind reads every file the same way: binary (nonzero = foreground), labels (non-integer values are an
// Error) or soft (values above full scale are an Error). Negative, NaN or infinite values make a file a bad mask
// (Error) under every rule.
inline constexpr int kMaxLabels = 32;
LabelMap label_map_from_values(const cv::Mat& values, const MaskReading& reading = {}, const std::string& file = "");
// Reads a prediction or ground-truth mask. Multi-channel files are accepted when their colour channels are
// equal (a gray image saved as RGB); coloured masks are rejected.
LabelMap read_label_map(const std::string& path, const MaskReading& reading = {});

// A probability map scaled to [0,1]: 8-bit / 255, 16-bit / 65535, float as is (must lie in [0,1]). CV_32F.
cv::Mat read_probability_map(const std::string& path, int64_t max_pixels = kDefaultMaxPixels);

// A CSV file's rows (RFC 4180: quoted fields may hold separators, quotes and line breaks); blank lines are skipped.
struct CsvRow {
    int line = 0;  // where the row starts, 1-based
    std::vector<std::string> fields;
};
std::vector<CsvRow> read_csv(const std::string& path);

// A whole file's bytes, or nullopt when it cannot be opened.
std::optional<std::string> read_file(const std::filesystem::path& path);
// Replaces path's contents all at once: writes a temporary file beside it, flushes it to disk and renames it over
// path, so a reader (or a killed run) never sees a half-written file.
void write_file_atomically(const std::filesystem::path& path, const std::string& contents);
// Appends text to path (created if needed) and flushes it to disk before returning: a journal line that survives a
// crash right after.
void append_durably(const std::filesystem::path& path, const std::string& text);

// An exclusive lock on an output folder for one run: flock on <folder>/.sqasam.lock, which holds the holder's pid.
// A second run into the folder is refused with an Error naming that pid. The kernel drops the lock when its process
// ends, however it ends, so a lock file left by a dead run is no obstacle.
class FolderLock {
public:
    explicit FolderLock(const std::filesystem::path& folder);
    ~FolderLock();
    FolderLock(const FolderLock&) = delete;
    FolderLock& operator=(const FolderLock&) = delete;

private:
    int fd_ = -1;
};

// A file's size and modification time: what tells an input changed since it was scored from an unchanged one.
struct FileStamp {
    int64_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileStamp&) const = default;
};
std::optional<FileStamp> file_stamp(const std::string& path);  // none when the file is missing or unreadable

// The SHA-256 of a file's contents, in hex. Remembered in $XDG_CACHE_HOME/sqasam/sha256.json (~/.cache/... without
// it) under the file's absolute path with its size, modification and change times and inode, so an unchanged
// multi-gigabyte checkpoint is hashed once rather than on every run; a cache that cannot be read or written is
// ignored.
std::string file_sha256(const std::string& path);

// Text for JSON and CSV, which hold UTF-8 only: valid UTF-8 stays as it is, and each byte that is not part of a
// valid UTF-8 sequence becomes \xHH (lower-case hex, as Python's backslashreplace writes it). File names that are
// not UTF-8 (caf\xe9.png) are written this way in every output and in the journal.
std::string escape_non_utf8(const std::string& text);

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
    std::string name;  // base name (file name without its last extension), escape_non_utf8'd
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
// A model's name from split_named_folder's parts: NAME where given, else the folder's own name (the current
// folder's for "."), escape_non_utf8'd so that it fits the JSON and CSV outputs.
std::string model_name(const std::string& name, const std::string& folder);

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
