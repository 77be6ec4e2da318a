// sqasam score: a dataset of images and predictions -> images.csv, objects.csv, summary.json, report.html.
// Each finished image goes to a journal in <out>/.partial first, so --resume continues a killed run.
#include <unistd.h>

#include <chrono>
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
#include "cli/progress.hpp"
#include "sam/sam_model.hpp"
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
    bool resume = false, overwrite = false;
    int progress_seconds = 30;
    std::string reducer = "auto", mask_choice = "auto", aggregation = "auto";
    int connectivity = 8;
    long min_area = 0;
    std::optional<double> pred_threshold;
    std::string pred_kind = "auto", gt_kind = "auto";
    int64_t max_pixels = kDefaultMaxPixels;
    std::size_t max_objects = kDefaultMaxObjects;
    double failure_dice = 0.75;
    std::string calibration;  // a file from `sqasam calibrate`
};

std::optional<MapKind> kind_option(const std::string& name) {
    if (name == "auto") return std::nullopt;
    return map_kind_from_string(name);
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

// A model none of whose predictions matches an image stops the run before anything is computed, and says why with
// the closest names; a partial mismatch is a warning (those images get missing_prediction). Stray predictions are
// named, not scored.
void check_pairing(const Dataset& dataset, const ScoreCommandOptions& o) {
    for (std::size_t m = 0; m < dataset.models.size(); ++m) {
        const SegmentationModel& model = dataset.models[m];
        std::size_t paired = 0;
        for (const DatasetItem& item : dataset.items) paired += !item.predictions[m].pred.empty();
        std::string hints;
        if (o.manifest.empty())
            for (const std::string& hint : unmatched_name_hints(dataset, m)) hints += "\n  " + hint;
        const std::string whose = dataset.models.size() > 1 ? " of model " + model.name : "";
        if (paired == 0)
            throw Error(o.manifest.empty() ? (o.preds.size() == 1 ? split_named_folder(o.preds.front()).second : "--pred")
                                           : o.manifest,
                        "no prediction" + whose + " matches any of the " + std::to_string(dataset.items.size()) +
                            " images, so nothing can be scored (files are paired by base name, the file name "
                            "without its extension)" + hints);
        if (paired < dataset.items.size())
            std::cerr << "sqasam: warning: " << dataset.items.size() - paired << " of " << dataset.items.size()
                      << " images have no prediction" << whose << " (flag missing_prediction)" << hints << "\n";
        if (!model.unmatched_predictions.empty())
            std::cerr << "sqasam: warning: " << counted(model.unmatched_predictions.size(), "prediction file") << whose
                      << " without a matching image, not scored, e.g. " << model.unmatched_predictions.front() << "\n";
    }
}

// Everything that changes the journaled results; a resumed run must match it.
// The checkpoint counts by its content (SHA-256, cached by file_sha256), not by its path or size.
nlohmann::json run_config(const ScoreCommandOptions& o, const Dataset& dataset, const PipelineOptions& pipeline,
                          Precision precision) {
    nlohmann::json models = nlohmann::json::array();
    for (const SegmentationModel& model : dataset.models) models.push_back(model.name);
    nlohmann::json folders = nlohmann::json::array();
    for (const PredictionFolder& folder : o.manifest.empty() ? prediction_folders(o) : std::vector<PredictionFolder>{})
        folders.push_back({{"pred", absolute_path(folder.pred)}, {"prob", absolute_path(folder.prob)}});
    return {{"checkpoint_sha256", file_sha256(o.model.checkpoint)},
            {"model_type", o.model.model_type},
            {"precision", to_string(precision)},  // what ran, after auto and any fallback
            {"images", absolute_path(o.images)},
            {"models", models},
            {"predictions", folders},
            {"gt", absolute_path(o.gt)},
            {"manifest", absolute_path(o.manifest)},
            {"reducer", to_string(pipeline.score.reducer)},
            {"mask_choice", to_string(pipeline.score.mask_choice)},
            {"aggregation", to_string(pipeline.score.aggregation)},
            {"connectivity", pipeline.score.objects.connectivity},
            {"min_area", pipeline.score.objects.min_area},
            {"pred_threshold", pipeline.pred_threshold ? nlohmann::json(*pipeline.pred_threshold) : nlohmann::json()},
            {"pred_kind", o.pred_kind},
            {"gt_kind", o.gt_kind},
            {"max_pixels", pipeline.max_pixels},
            {"max_objects", pipeline.max_objects},
            {"journal_format", 3}};
}

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
            cv::cvtColor(read_rgb_image(item.image, options.max_pixels), overlay.bgr, cv::COLOR_RGB2BGR);
            const MaskReading reading{options.pred_kind, options.pred_threshold, options.max_pixels};
            overlay.prediction = read_label_map(item.predictions[model].pred, reading).labels != 0;
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
    check_pairing(dataset, o);
    const Sam sam = load_model(o.model);
    SamPredictor predictor(sam);

    PipelineOptions pipeline;
    std::string prompting_reason;
    pipeline.score = scoring_options(o, sam.info().type, prompting_reason);
    pipeline.pred_threshold = o.pred_threshold;
    pipeline.pred_kind = kind_option(o.pred_kind);
    pipeline.gt_kind = kind_option(o.gt_kind);
    pipeline.max_pixels = o.max_pixels;
    pipeline.max_objects = o.max_objects;

    const nlohmann::json config = run_config(o, dataset, pipeline, sam.model().encoder_precision());
    const std::optional<Calibration> calibration = load_calibration(o.calibration, config, sam.info().type);
    if (!o.overwrite) check_output_folder(o.out, config);
    Journal journal(o.out, config, o.resume);
    RunResult run;
    {
        ScoreProgress progress(stderr, ::isatty(STDERR_FILENO) != 0, std::chrono::seconds(o.progress_seconds));
        run = score_dataset(dataset, sam_segmenter(predictor), pipeline, journal, std::ref(progress));
    }
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
    report.model = {{"checkpoint", absolute_path(o.model.checkpoint)},
                    {"checkpoint_sha256", config["checkpoint_sha256"]},
                    {"type", to_string(sam.info().type)},
                    {"description", sam.info().describe()}};
    if (calibration)
        report.calibration = {{"file", absolute_path(o.calibration)},
                              {"coverage", calibration->coverage()},
                              {"fitted_on", calibration->provenance()}};
    report.overlays = lowest_scored_overlays(run, dataset, journal, pipeline);
    report.images = run.images;
    report.objects = run.objects;
    write_report_folder(o.out, report);

    const ImageCounts counts = count_images(run.images);
    std::cout << "sqasam score: " << counted(dataset.items.size(), "image");
    if (dataset.models.size() > 1)
        std::cout << " x " << counted(dataset.models.size(), "model") << ": " << counts.scored << " of "
                  << counted(counts.images, "prediction") << " scored, ";
    else
        std::cout << ", " << counts.scored << " scored, ";
    std::cout << counts.flagged << " flagged (flags and problems in images.csv)";
    if (run.resumed > 0) std::cout << "; " << counted(run.resumed, "image") << " taken from the journal of the earlier run";
    std::cout << "\n";
    if (outside_calibration > 0)
        std::cout << "warning: " << counted(outside_calibration, "scored prediction") << " with features outside the range the "
                  << "calibration was fitted on (flag outside_calibration): their Dice estimates extrapolate\n";
    std::cout << "report: " << (fs::path(o.out) / "report.html").string() << "\n";
    if (counts.scored == 0)
        throw Error(o.out, "no prediction could be scored (every one is flagged: see images.csv or report.html)");
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
    add_output_options(*cmd, o->out, o->resume, o->overwrite, "images");
    cmd->add_option("--progress-seconds", o->progress_seconds,
                    "when stderr is not a terminal, a progress line at least this often (0: after every image)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
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
    const auto kinds = CLI::IsMember({"auto", "binary", "labels", "soft"});
    cmd->add_option("--pred-kind", o->pred_kind,
                    "how predictions are read: binary (nonzero = foreground), labels (each value a class), soft "
                    "(thresholded), or auto (decided per file from its values; guesses are flagged "
                    "pred_kind_guessed)")
        ->check(kinds)
        ->capture_default_str();
    cmd->add_option("--gt-kind", o->gt_kind, "how ground-truth masks are read, as --pred-kind (flag gt_kind_guessed)")
        ->check(kinds)
        ->capture_default_str();
    cmd->add_option("--max-pixels", o->max_pixels,
                    "images and masks with more pixels (width x height) are flagged too_large without being decoded")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_option("--max-objects", o->max_objects,
                    "predictions with more objects are flagged too_many_objects and not scored (each object costs "
                    "two SAM decoder passes)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_option("--calibration", o->calibration,
                    "a calibration file from `sqasam calibrate`: adds estimated_dice, dice_low and dice_high to "
                    "images.csv and the report (fitted for the same SAM model and scoring options)");
    cmd->add_option("--failure-dice", o->failure_dice, "true Dice below which an image counts as a failure (AUROC)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cmd->callback([o] { run_score(*o); });
}

}  // namespace sqasam::cli
