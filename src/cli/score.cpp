// sqasam score: a dataset of images and predictions -> images.csv, objects.csv, summary.json, report.html.
// Each finished image goes to a journal in <out>/.partial first, so --resume continues a killed run.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "cli/commands.hpp"
#include "sqasam/error.hpp"
#include "sqasam/eval.hpp"
#include "sqasam/io.hpp"
#include "sqasam/report.hpp"
#include "sqasam/sam.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam::cli {
namespace {
namespace fs = std::filesystem;

struct ScoreCommandOptions {
    ModelOptions model;
    std::string images, pred, prob, gt, manifest, out;
    bool resume = false;
    std::string reducer = "max", mask_choice = "best_iou", aggregation = "mean";
    int connectivity = 8;
    long min_area = 0;
    std::optional<double> pred_threshold;
    double failure_dice = 0.75;
};

std::string absolute(const std::string& path) {
    return path.empty() ? "" : fs::weakly_canonical(fs::absolute(path)).string();
}

Dataset load_dataset(const ScoreCommandOptions& o) {
    if (!o.manifest.empty()) {
        if (!o.images.empty() || !o.pred.empty() || !o.prob.empty() || !o.gt.empty())
            throw Error("--manifest", "give either --manifest or the folders (--images, --pred, --prob, --gt)");
        return read_manifest(o.manifest);
    }
    if (o.images.empty() || o.pred.empty())
        throw Error("", "give --images and --pred folders (or a --manifest CSV)");
    return match_folders({o.images, o.pred, o.prob, o.gt});
}

// Everything that changes the journaled results; a resumed run must match it.
nlohmann::json run_config(const ScoreCommandOptions& o, const PipelineOptions& pipeline) {
    std::error_code ec;
    auto checkpoint_bytes = fs::file_size(o.model.checkpoint, ec);
    return {{"checkpoint", absolute(o.model.checkpoint)},
            {"checkpoint_bytes", ec ? 0 : checkpoint_bytes},
            {"model_type", o.model.model_type},
            {"precision", o.model.precision},
            {"images", absolute(o.images)},
            {"pred", absolute(o.pred)},
            {"prob", absolute(o.prob)},
            {"gt", absolute(o.gt)},
            {"manifest", absolute(o.manifest)},
            {"reducer", to_string(pipeline.score.reducer)},
            {"mask_choice", to_string(pipeline.score.mask_choice)},
            {"aggregation", to_string(pipeline.score.aggregation)},
            {"connectivity", pipeline.score.objects.connectivity},
            {"min_area", pipeline.score.objects.min_area},
            {"pred_threshold", pipeline.pred_threshold ? nlohmann::json(*pipeline.pred_threshold) : nlohmann::json()}};
}

std::string clock_text(double seconds) {
    long s = std::lround(seconds);
    char text[32];
    if (s >= 3600) std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
    return text;
}

// One self-overwriting line on a terminal; nothing when stderr is a file or pipe.
class ProgressLine {
public:
    ProgressLine() : enabled_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}

    void operator()(const RunProgress& p) {
        if (!enabled_) return;
        double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        std::string eta = p.computed == 0 ? "--:--"
                                          : clock_text(elapsed / static_cast<double>(p.computed) *
                                                       static_cast<double>(p.to_compute - p.computed));
        std::fprintf(stderr, "\r\033[K[%zu/%zu] %3.0f%%  elapsed %s  ETA %s  %s", p.finished, p.total,
                     100.0 * static_cast<double>(p.finished) / static_cast<double>(p.total),
                     clock_text(elapsed).c_str(), eta.c_str(), p.image.c_str());
        if (p.finished == p.total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
    }

private:
    bool enabled_;
    std::chrono::steady_clock::time_point start_;
};

// The report's pictures for the lowest-scored images, read back from the files and the journal's SAM masks.
std::vector<ImageOverlay> lowest_scored_overlays(const RunResult& run, const Dataset& dataset, const Journal& journal,
                                                 const PipelineOptions& options) {
    std::vector<ImageOverlay> kept;
    for (const ImageResult& image : run.images)
        if (image.score) keep_lowest_scored(kept, ImageOverlay{image.image, *image.score, {}, {}, {}, {}});
    std::map<std::string, const DatasetItem*> items;
    for (const DatasetItem& item : dataset.items) items[item.name] = &item;
    std::vector<ImageOverlay> overlays;
    for (ImageOverlay& overlay : kept) {
        const DatasetItem& item = *items.at(overlay.image);
        auto [point, box] = journal.masks(overlay.image);
        if (point.empty()) continue;
        try {
            cv::cvtColor(read_rgb_image(item.image), overlay.bgr, cv::COLOR_RGB2BGR);
            overlay.prediction = read_label_map(item.pred, options.pred_threshold).labels != 0;
        } catch (const Error&) {
            continue;  // the file changed since it was scored; the tables still list the image
        }
        overlay.sam_point_mask = point;
        overlay.sam_box_mask = box;
        overlays.push_back(std::move(overlay));
    }
    return overlays;
}

void run_score(const ScoreCommandOptions& o) {
    PipelineOptions pipeline;
    pipeline.score.reducer = reducer_from_string(o.reducer);
    pipeline.score.mask_choice = mask_choice_from_string(o.mask_choice);
    pipeline.score.aggregation = aggregation_from_string(o.aggregation);
    pipeline.score.objects = {o.connectivity, o.min_area};
    pipeline.pred_threshold = o.pred_threshold;
    const Dataset dataset = load_dataset(o);

    const Sam sam = load_model(o.model);
    SamPredictor predictor(sam);

    const nlohmann::json config = run_config(o, pipeline);
    Journal journal(o.out, config, o.resume);
    ProgressLine progress;
    const RunResult run = score_dataset(dataset, sam_segmenter(predictor), pipeline, journal, std::ref(progress));

    ReportInput report;
    report.eval_options.failure_threshold = o.failure_dice;
    report.evaluation = evaluate(run.images, run.objects, report.eval_options);
    report.reducer = pipeline.score.reducer;
    report.mask_choice = pipeline.score.mask_choice;
    report.aggregation = pipeline.score.aggregation;
    report.config = config;
    report.model = {{"checkpoint", absolute(o.model.checkpoint)},
                    {"type", to_string(sam.info().type)},
                    {"description", sam.info().describe()}};
    report.overlays = lowest_scored_overlays(run, dataset, journal, pipeline);
    report.images = run.images;
    report.objects = run.objects;
    write_report_folder(o.out, report);

    size_t scored = 0, with_problems = 0;
    for (const ImageResult& image : run.images) {
        scored += image.score.has_value();
        with_problems += !image.error.empty();
    }
    std::cout << "sqasam score: " << run.images.size() << " images (" << run.resumed << " from the journal), "
              << scored << " scored, " << with_problems << " with problems listed in images.csv\n"
              << "report: " << (fs::path(o.out) / "report.html").string() << "\n";
}

}  // namespace

void add_score_command(CLI::App& app) {
    auto o = std::make_shared<ScoreCommandOptions>();
    CLI::App* cmd = app.add_subcommand(
        "score", "Score segmentation predictions without ground truth (SQA-SAM): writes images.csv, objects.csv, "
                 "summary.json and report.html into --out");
    add_model_options(*cmd, o->model);
    cmd->add_option("--images", o->images, "folder of images (PNG, JPEG, TIFF, BMP)");
    cmd->add_option("--pred", o->pred,
                    "folder of predictions matched to images by base name: binary {0,255}, label maps (0 = "
                    "background, 1..C) or soft maps (thresholded, see --pred-threshold)");
    cmd->add_option("--prob", o->prob, "folder of probability maps, for the Model-Confidence baseline");
    cmd->add_option("--gt", o->gt, "folder of ground-truth masks, for the true Dice and the evaluation");
    cmd->add_option("--manifest", o->manifest,
                    "CSV with columns image,pred[,prob][,gt] instead of the folders (paths relative to the CSV)");
    cmd->add_option("--out", o->out, "output folder (created if needed)")->required();
    cmd->add_flag("--resume", o->resume, "continue an interrupted run in --out, skipping images already done");
    cmd->add_option("--reducer", o->reducer, "object score from point and box Dice: max, mean, min, point, box")
        ->capture_default_str();
    cmd->add_option("--mask-choice", o->mask_choice,
                    "which SAM mask: best_iou (SAM's best-rated of 3), best_dice (best agreement of 3: an upper "
                    "bound that peeks at the prediction), single (single-mask output)")
        ->capture_default_str();
    cmd->add_option("--aggregation", o->aggregation, "image score from object scores: mean or area (area-weighted)")
        ->capture_default_str();
    cmd->add_option("--connectivity", o->connectivity, "object connectivity, 4 or 8")
        ->check(CLI::IsMember({4, 8}))
        ->capture_default_str();
    cmd->add_option("--min-area", o->min_area, "ignore predicted objects smaller than this many pixels")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option_function<double>(
           "--pred-threshold",
           [o](double value) { o->pred_threshold = value; },
           "threshold for soft predictions as a fraction of full scale (default 0.5); binary and label maps are "
           "used as they are")
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--failure-dice", o->failure_dice, "true Dice below which an image counts as a failure (AUROC)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cmd->callback([o] { run_score(*o); });
}

}  // namespace sqasam::cli
