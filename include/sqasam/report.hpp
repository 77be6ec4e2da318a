#pragma once
// What `sqasam score` writes: images.csv, objects.csv, summary.json and a self-contained report.html.
// Every file is written atomically (a temporary file in the same folder, then renamed over the target).
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "sqasam/eval.hpp"
#include "sqasam/results.hpp"

namespace sqasam {

// The pictures behind one image's overlay in report.html. The score command fills these for the
// lowest-scored images only (see keep_lowest_scored); points and boxes come from the image's ObjectResults.
struct ImageOverlay {
    std::string image;         // base name, as in ImageResult::image
    std::string model;         // the segmentation model, as in ImageResult::model
    double score = 0;          // the image score, to rank overlays
    cv::Mat bgr;               // CV_8UC3 as cv::imread gives it (a CV_8UC1 grey image is accepted too)
    cv::Mat prediction;        // CV_8UC1, nonzero = predicted object (all classes)
    cv::Mat sam_point_mask;    // CV_8UC1, union over objects of SAM's mask for the point prompt
    cv::Mat sam_box_mask;      // CV_8UC1, union over objects of SAM's mask for the box prompt
    std::string caption;       // shown beside the name (volumes: model, object and slice)
    std::vector<ObjectResult> prompts;  // the prompts drawn; empty: the objects of `image` in ReportInput
};

// A section of report.html that a caller adds (volumes: per-class scores, model agreement): a title and its HTML.
struct ReportSection {
    std::string title, html;
};

inline constexpr std::size_t kReportOverlays = 8;

// Adds overlay to kept if it is among the `limit` lowest scores seen so far (ties: the earlier one stays);
// kept stays sorted by score ascending. Lets the score command stream images while holding few pictures.
void keep_lowest_scored(std::vector<ImageOverlay>& kept, ImageOverlay overlay, std::size_t limit = kReportOverlays);

// How many images a run has in each state; the console summary and the report's cards count the same way.
struct ImageCounts {
    std::size_t images = 0, scored = 0;
    std::size_t flagged = 0;  // with any flag: problems (missing or unreadable files) and notes (no_objects, ...)
};
ImageCounts count_images(const std::vector<ImageResult>& images);

struct ReportInput {
    std::vector<ImageResult> images;
    std::vector<ObjectResult> objects;
    Evaluation evaluation;     // from evaluate(images, objects, options)
    EvalOptions eval_options;  // what the evaluation used (threshold, bootstrap), recorded in summary.json
    // The run's configuration: its row is marked in the ablation table.
    Reducer reducer = Reducer::Max;
    MaskChoice mask_choice = MaskChoice::BestPredictedIou;
    ImageAggregation aggregation = ImageAggregation::Mean;
    std::string prompting_reason;  // why the SAM model is prompted this way (default_prompting), for the report
    nlohmann::json config = nlohmann::json::object();  // anything else worth recording (paths, thresholds, ...)
    nlohmann::json model = nlohmann::json::object();   // checkpoint, model type, ...
    nlohmann::json calibration;                        // the calibration applied (file, coverage, provenance), or null
    std::vector<ImageOverlay> overlays;                // lowest-scored images, any order
    std::string unit = "image";                        // what one row of images is ("volume" for 3D runs)
    std::vector<ReportSection> sections;               // added after the overlays
};

// Each writes one file atomically; failures throw sqasam::Error naming the file.
void write_images_csv(const std::string& path, const std::vector<ImageResult>& images);
void write_objects_csv(const std::string& path, const std::vector<ObjectResult>& objects);
nlohmann::json summary_json(const ReportInput& input);
void write_summary_json(const std::string& path, const ReportInput& input);
void write_report_html(const std::string& path, const ReportInput& input);

// images.csv, objects.csv, summary.json and report.html into folder (created if missing), swapped in as one set:
// written whole into folder/.report-staging, then the old set removed and the new one renamed into place, so a
// failure or a kill never leaves new files beside an older run's.
void write_report_folder(const std::string& folder, const ReportInput& input);

}  // namespace sqasam
