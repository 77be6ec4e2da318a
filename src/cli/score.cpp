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
#include "sqasam/calibration.hpp"
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
    std::string images, gt, manifest, out;
    std::vector<std::string> preds, probs;  // [NAME=]DIR each
    bool resume = false;
    std::string reducer = "auto", mask_choice = "auto", aggregation = "auto";
    int connectivity = 8;
    long min_area = 0;
    std::optional<double> pred_threshold;
    double failure_dice = 0.75;
    std::string calibration;  // a file from `sqasam calibrate`
};

std::string absolute(const std::string& path) {
    return path.empty() ? "" : fs::weakly_canonical(fs::absolute(path)).string();
}

// --pred and --prob folders, paired by model name (an unnamed --prob goes with the only --pred).
std::vector<PredictionFolder> prediction_folders(const ScoreCommandOptions& o) {
    std::vector<PredictionFolder> folders;
    for (const std::string& text : o.preds) {
        auto [name, dir] = split_named_folder(text);
        folders.push_back({name, dir, ""});
    }
    for (const std::string& text : o.probs) {
        auto [name, dir] = split_named_folder(text);
        PredictionFolder* owner = nullptr;
        if (name.empty() && folders.size() == 1) owner = &folders.front();
        for (PredictionFolder& folder : folders)
            if (!name.empty() && (folder.model == name || (folder.model.empty() &&
                                                           fs::path(folder.pred).filename().string() == name)))
                owner = &folder;
        if (!owner)
            throw Error("--prob " + text, name.empty() ? "with several --pred folders, name the model: --prob NAME=DIR"
                                                       : "no --pred folder is named '" + name + "'");
        if (!owner->prob.empty()) throw Error("--prob " + text, "a second probability folder for one model");
        owner->prob = dir;
    }
    return folders;
}

Dataset load_dataset(const ScoreCommandOptions& o) {
    if (!o.manifest.empty()) {
        if (!o.images.empty() || !o.preds.empty() || !o.probs.empty() || !o.gt.empty())
            throw Error("--manifest", "give either --manifest or the folders (--images, --pred, --prob, --gt)");
        return read_manifest(o.manifest);
    }
    if (o.images.empty() || o.preds.empty())
        throw Error("", "give --images and --pred folders (or a --manifest CSV)");
    return match_folders({o.images, prediction_folders(o), o.gt});
}

// Everything that changes the journaled results; a resumed run must match it.
nlohmann::json run_config(const ScoreCommandOptions& o, const Dataset& dataset, const PipelineOptions& pipeline) {
    std::error_code ec;
    auto checkpoint_bytes = fs::file_size(o.model.checkpoint, ec);
    nlohmann::json models = nlohmann::json::array();
    for (const SegmentationModel& model : dataset.models) models.push_back(model.name);
    nlohmann::json folders = nlohmann::json::array();
    for (const PredictionFolder& folder : o.manifest.empty() ? prediction_folders(o) : std::vector<PredictionFolder>{})
        folders.push_back({{"pred", absolute(folder.pred)}, {"prob", absolute(folder.prob)}});
    return {{"checkpoint", absolute(o.model.checkpoint)},
            {"checkpoint_bytes", ec ? 0 : checkpoint_bytes},
            {"model_type", o.model.model_type},
            {"precision", o.model.precision},
            {"images", absolute(o.images)},
            {"models", models},
            {"predictions", folders},
            {"gt", absolute(o.gt)},
            {"manifest", absolute(o.manifest)},
            {"reducer", to_string(pipeline.score.reducer)},
            {"mask_choice", to_string(pipeline.score.mask_choice)},
            {"aggregation", to_string(pipeline.score.aggregation)},
            {"connectivity", pipeline.score.objects.connectivity},
            {"min_area", pipeline.score.objects.min_area},
            {"pred_threshold", pipeline.pred_threshold ? nlohmann::json(*pipeline.pred_threshold) : nlohmann::json()},
            {"journal_format", 2}};
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
    std::map<std::string, std::size_t> model_index;
    for (std::size_t m = 0; m < dataset.models.size(); ++m) model_index[dataset.models[m].name] = m;
    std::vector<ImageOverlay> kept;
    for (const ImageResult& image : run.images)
        if (image.score) keep_lowest_scored(kept, ImageOverlay{image.image, image.model, *image.score, {}, {}, {}, {}, {}, {}});
    std::map<std::string, const DatasetItem*> items;
    for (const DatasetItem& item : dataset.items) items[item.name] = &item;
    std::vector<ImageOverlay> overlays;
    for (ImageOverlay& overlay : kept) {
        const DatasetItem& item = *items.at(overlay.image);
        const std::size_t model = model_index.at(overlay.model);
        auto [point, box] = journal.masks(overlay.image, model);
        if (point.empty()) continue;
        try {
            cv::cvtColor(read_rgb_image(item.image), overlay.bgr, cv::COLOR_RGB2BGR);
            overlay.prediction = read_label_map(item.predictions[model].pred, options.pred_threshold).labels != 0;
        } catch (const Error&) {
            continue;  // the file changed since it was scored; the tables still list the image
        }
        overlay.sam_point_mask = point;
        overlay.sam_box_mask = box;
        overlays.push_back(std::move(overlay));
    }
    return overlays;
}

// The run's scoring configuration: what the user chose, else the model family's default.
ScoreOptions scoring_options(const ScoreCommandOptions& o, ModelType model_type, std::string& reason) {
    const PromptingDefaults defaults = default_prompting(model_type);
    reason = defaults.reason;
    ScoreOptions score;
    score.reducer = o.reducer == "auto" ? defaults.reducer : reducer_from_string(o.reducer);
    score.mask_choice = o.mask_choice == "auto" ? defaults.mask_choice : mask_choice_from_string(o.mask_choice);
    score.aggregation = o.aggregation == "auto" ? defaults.aggregation : aggregation_from_string(o.aggregation);
    if (o.reducer != "auto" || o.mask_choice != "auto" || o.aggregation != "auto")
        reason += " Options given on the command line replace these defaults.";
    score.objects = {o.connectivity, o.min_area};
    return score;
}

// The calibration file, refused when it was fitted for another SAM model or scoring configuration: its features
// would mean something else.
std::optional<Calibration> load_calibration(const std::string& path, const nlohmann::json& config,
                                            ModelType model_type) {
    if (path.empty()) return std::nullopt;
    Calibration calibration = Calibration::load(path);
    const nlohmann::json& seen = calibration.provenance();
    if (seen.value("sam_model_type", "") != to_string(model_type))
        throw Error(path, "fitted on features from the SAM model " + seen.value("sam_model_type", "?") +
                              "; this run uses " + to_string(model_type) + ": calibrate on runs of this model");
    const nlohmann::json scoring = seen.value("scoring", nlohmann::json::object());
    for (const auto& [key, value] : scoring.items())
        if (config.value(key, nlohmann::json()) != value)
            throw Error(path, "fitted with " + key + " = " + value.dump() + "; this run uses " +
                                  config.value(key, nlohmann::json()).dump() + ": use the same scoring options");
    return calibration;
}

// Adds the calibrated estimate to every scored image; returns how many images lie outside what it saw. A
// calibration that fits none of the scored images is refused, naming the features the run lacks (the finished
// images stay in the journal: --resume with a fitting calibration, or without one, writes the outputs).
std::size_t apply_calibration(const Calibration& calibration, const std::string& path,
                              std::vector<ImageResult>& images) {
    std::size_t outside = 0, scored = 0, estimated = 0;
    std::string missing;
    for (ImageResult& image : images) {
        if (!image.score) continue;
        ++scored;
        const Features features = all_features(image);
        image.estimate = calibration.estimate(features);
        if (!image.estimate) {
            image.flags.push_back("no_calibration");
            image.error += std::string(image.error.empty() ? "" : "; ") +
                           "the calibration has no model for the features this image has";
            if (missing.empty()) {
                const std::vector<std::vector<std::string>> sets = calibration.feature_sets();
                for (const std::string& name : sets.back())  // the smallest set
                    if (!features.count(name)) missing += (missing.empty() ? "" : ", ") + name;
            }
            continue;
        }
        ++estimated;
        if (!image.estimate->outside.empty()) {
            image.flags.push_back("outside_calibration");
            ++outside;
        }
    }
    if (scored > 0 && estimated == 0)
        throw Error(path, "needs features that this run lacks (" + missing +
                              "); fit a calibration on runs like this one. The scored images are kept: rerun with "
                              "--resume, with another calibration or without one");
    return outside;
}

void run_score(const ScoreCommandOptions& o) {
    const Dataset dataset = load_dataset(o);
    const Sam sam = load_model(o.model);
    SamPredictor predictor(sam);

    PipelineOptions pipeline;
    std::string prompting_reason;
    pipeline.score = scoring_options(o, sam.info().type, prompting_reason);
    pipeline.pred_threshold = o.pred_threshold;

    const nlohmann::json config = run_config(o, dataset, pipeline);
    const std::optional<Calibration> calibration = load_calibration(o.calibration, config, sam.info().type);
    Journal journal(o.out, config, o.resume);
    ProgressLine progress;
    RunResult run = score_dataset(dataset, sam_segmenter(predictor), pipeline, journal, std::ref(progress));
    std::size_t outside_calibration = 0;
    if (calibration) outside_calibration = apply_calibration(*calibration, o.calibration, run.images);

    ReportInput report;
    report.eval_options.failure_threshold = o.failure_dice;
    report.evaluation = evaluate(run.images, run.objects, report.eval_options);
    report.reducer = pipeline.score.reducer;
    report.mask_choice = pipeline.score.mask_choice;
    report.aggregation = pipeline.score.aggregation;
    report.prompting_reason = prompting_reason;
    report.config = config;
    report.model = {{"checkpoint", absolute(o.model.checkpoint)},
                    {"type", to_string(sam.info().type)},
                    {"description", sam.info().describe()}};
    if (calibration)
        report.calibration = {{"file", absolute(o.calibration)},
                              {"coverage", calibration->coverage()},
                              {"fitted_on", calibration->provenance()}};
    report.overlays = lowest_scored_overlays(run, dataset, journal, pipeline);
    report.images = run.images;
    report.objects = run.objects;
    write_report_folder(o.out, report);

    size_t scored = 0, with_problems = 0;
    for (const ImageResult& image : run.images) {
        scored += image.score.has_value();
        with_problems += !image.error.empty();
    }
    std::cout << "sqasam score: " << dataset.items.size() << " images";
    if (dataset.models.size() > 1) std::cout << " x " << dataset.models.size() << " models";
    std::cout << " (" << run.resumed << " images from the journal), " << scored << " predictions scored, "
              << with_problems << " with problems listed in images.csv\n";
    if (outside_calibration > 0)
        std::cout << "warning: " << outside_calibration << " scored predictions have features outside the range the "
                  << "calibration was fitted on (flag outside_calibration): their Dice estimates extrapolate\n";
    std::cout
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
    cmd->add_option("--pred", o->preds,
                    "[NAME=]DIR: folder of one model's predictions matched to images by base name: binary {0,255}, "
                    "label maps (0 = background, 1..C) or soft maps (thresholded, see --pred-threshold; a soft map "
                    "is also the model's probability map). Repeat it for several models' predictions of the same "
                    "images: they are scored on one SAM embedding per image and compared with each other "
                    "(model_agreement). NAME defaults to the folder's name");
    cmd->add_option("--prob", o->probs,
                    "[NAME=]DIR: folder of probability maps of the model NAME (of the only --pred without NAME), for "
                    "the Model-Confidence baseline and the probability features");
    cmd->add_option("--gt", o->gt, "folder of ground-truth masks, for the true Dice and the evaluation");
    cmd->add_option("--manifest", o->manifest,
                    "CSV with columns image,pred[,prob][,gt] instead of the folders (paths relative to the CSV)");
    cmd->add_option("--out", o->out, "output folder (created if needed)")->required();
    cmd->add_flag("--resume", o->resume, "continue an interrupted run in --out, skipping images already done");
    cmd->add_option("--reducer", o->reducer,
                    "object score from point and box Dice: max, mean, min, point, box, or auto (the SAM model's "
                    "default: box for MedSAM and LiteMedSAM, which were trained on boxes; max for SAM and MobileSAM)")
        ->check(CLI::IsMember({"auto", "max", "mean", "min", "point", "box"}))
        ->capture_default_str();
    cmd->add_option("--mask-choice", o->mask_choice,
                    "which SAM mask: best_iou (SAM's best-rated of 3), best_dice (best agreement of 3: an upper "
                    "bound that peeks at the prediction), single (single-mask output), or auto (single for MedSAM "
                    "and LiteMedSAM, trained with one output mask; best_iou for SAM and MobileSAM)")
        ->check(CLI::IsMember({"auto", "best_iou", "best_dice", "single"}))
        ->capture_default_str();
    cmd->add_option("--aggregation", o->aggregation,
                    "image score from object scores: mean, area (area-weighted), or auto (the default: see README)")
        ->check(CLI::IsMember({"auto", "mean", "area"}))
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
    cmd->add_option("--calibration", o->calibration,
                    "a calibration file from `sqasam calibrate`: adds estimated_dice, dice_low and dice_high to "
                    "images.csv and the report (fitted for the same SAM model and scoring options)");
    cmd->add_option("--failure-dice", o->failure_dice, "true Dice below which an image counts as a failure (AUROC)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cmd->callback([o] { run_score(*o); });
}

}  // namespace sqasam::cli
