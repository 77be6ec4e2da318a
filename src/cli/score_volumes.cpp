// sqasam score-volumes: 3D images and their predictions (nnU-Net layout) -> volumes.csv, classes.csv, objects.csv,
// summary.json, report.html. Each finished case goes to a journal in <out>/.partial first, so --resume continues a
// killed run.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.hpp"
#include "sam/sam_model.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/volume.hpp"

namespace sqasam::cli {
namespace {
namespace fs = std::filesystem;

struct ScoreVolumesOptions {
    ModelOptions model;
    std::string images, gt, out, dataset_json;
    std::vector<std::string> preds;  // DIR or NAME=DIR
    bool prob = false, resume = false, overwrite = false;
    std::optional<std::string> channel;
    std::string modality = "auto", window = "40,400", slice_axis = "auto";
    int max_slices = 10, connectivity = 26;
    long min_voxels = 0;
    std::string reducer = "auto", mask_choice = "auto", aggregation = "auto";
    std::optional<double> pred_threshold;
    double failure_dice = 0.75;
};

// --pred DIR (named after the folder) or NAME=DIR, read as score reads them (split_named_folder).
VolumeModel parse_pred(const std::string& value) {
    const auto [name, dir] = split_named_folder(value);
    return {model_name(name, dir), dir};
}

WindowRule parse_window(const std::string& modality, const std::string& window) {
    WindowRule rule;
    rule.modality = modality_from_string(modality);
    double level = 0, width = 0;
    char extra = 0;
    if (std::sscanf(window.c_str(), "%lf,%lf%c", &level, &width, &extra) != 2 || width <= 0)
        throw Error("--window", "expected LEVEL,WIDTH in HU with a positive width, such as 40,400; got '" + window + "'");
    rule.level = level;
    rule.width = width;
    return rule;
}

// Everything that changes the journaled results; a resumed run must match it. The checkpoint counts by its content.
nlohmann::json run_config(const ScoreVolumesOptions& o, const VolumeDataset& dataset, const VolumeRunOptions& run,
                          Precision precision) {
    nlohmann::json preds = nlohmann::json::object();
    for (const VolumeModel& model : dataset.models) preds[model.name] = absolute_path(model.folder);
    return {{"command", "score-volumes"},
            {"checkpoint_sha256", file_sha256(o.model.checkpoint)},
            {"model_type", o.model.model_type},
            {"precision", to_string(precision)},  // what ran, after auto and any fallback
            {"images", absolute_path(o.images)},
            {"pred", preds},
            {"gt", absolute_path(o.gt)},
            {"prob", o.prob},
            {"channel", o.channel.value_or("0")},
            {"dataset_json", absolute_path(dataset.dataset_json)},
            {"modality", to_string(run.window.modality)},
            {"window", o.window},
            {"slice_axis", o.slice_axis},
            {"max_slices_per_object", run.objects.max_slices},
            {"connectivity", run.objects.connectivity},
            {"min_voxels", run.objects.min_voxels},
            {"pred_threshold", run.pred_threshold ? nlohmann::json(*run.pred_threshold) : nlohmann::json()},
            {"reducer", to_string(run.score.reducer)},
            {"mask_choice", to_string(run.score.mask_choice)},
            {"aggregation", to_string(run.score.aggregation)},
            {"journal_format", 1}};
}

void run_score_volumes(const ScoreVolumesOptions& o) {
    VolumeFolders folders;
    folders.images = o.images;
    for (const std::string& pred : o.preds) folders.preds.push_back(parse_pred(pred));
    folders.gt = o.gt;
    folders.prob = o.prob;
    folders.channel = o.channel.value_or("0");
    folders.dataset_json = o.dataset_json;
    const VolumeDataset dataset = match_volume_folders(folders);

    VolumeRunOptions run;
    run.objects.connectivity = o.connectivity;
    run.objects.min_voxels = o.min_voxels;
    run.objects.max_slices = o.max_slices;
    run.objects.slice_axis = o.slice_axis == "auto" ? -1 : std::stoi(o.slice_axis);
    run.window = parse_window(o.modality, o.window);
    // A channel asked for by number also picks the volume of a 4D image; a named one (t1c) only picks files.
    if (o.channel && !o.channel->empty() && std::all_of(o.channel->begin(), o.channel->end(), ::isdigit))
        run.channel = std::stoi(*o.channel);
    run.pred_threshold = o.pred_threshold;

    const Sam sam = load_model(o.model);
    SamPredictor predictor(sam);
    // As `score` does: what the user chose, else the SAM model family's default prompting.
    const PromptingDefaults defaults = default_prompting(sam.info().type);
    run.score.reducer = o.reducer == "auto" ? defaults.reducer : reducer_from_string(o.reducer);
    run.score.mask_choice = o.mask_choice == "auto" ? defaults.mask_choice : mask_choice_from_string(o.mask_choice);
    run.score.aggregation = o.aggregation == "auto" ? defaults.aggregation : aggregation_from_string(o.aggregation);
    const Segmenter segmenter = sam_segmenter(predictor);

    VolumeReportInput report;
    report.class_names = dataset.class_names;
    report.score = run.score;
    report.prompting_reason = defaults.reason;
    report.eval_options.failure_threshold = o.failure_dice;
    report.config = run_config(o, dataset, run, sam.model().encoder_precision());
    report.model = {{"checkpoint", absolute_path(o.model.checkpoint)},
                    {"type", to_string(sam.info().type)},
                    {"description", sam.info().describe()}};
    if (!o.overwrite)
        check_output_folder(o.out, report.config,
                            {"volumes.csv", "classes.csv", "objects.csv", "summary.json", "report.html"});
    VolumeJournal journal(o.out, report.config, o.resume);

    std::vector<ImageOverlay> overlays;
    size_t resumed = 0;
    score_volume_cases(dataset, segmenter, run, journal, [&](const VolumeRunProgress& progress) {
        CaseOutcome& outcome = *progress.outcome;
        resumed += progress.from_journal;
        if (progress.from_journal)
            std::fprintf(stderr, "[%zu/%zu] %s: from the journal of the earlier run\n", progress.finished,
                         progress.total, outcome.name.c_str());
        else
            std::fprintf(stderr, "[%zu/%zu] %s: %d slices encoded, %.1f s\n", progress.finished, progress.total,
                         outcome.name.c_str(), outcome.volumes.empty() ? 0 : outcome.volumes.front().slices_encoded,
                         progress.seconds);
        for (const CaseOutcome::WorstSlice& slice : outcome.worst_slices)
            for (const VolumeResult& volume : outcome.volumes)
                if (volume.model == slice.model && volume.volume.score && !slice.gray.empty())
                    keep_lowest_scored(overlays, volume_overlay(volume, slice));
        report.volumes.insert(report.volumes.end(), outcome.volumes.begin(), outcome.volumes.end());
        report.objects.insert(report.objects.end(), std::make_move_iterator(outcome.objects.begin()),
                              std::make_move_iterator(outcome.objects.end()));
    });
    report.overlays = std::move(overlays);
    write_volume_report(o.out, report);

    size_t scored = 0, with_problems = 0;
    for (const VolumeResult& v : report.volumes) {
        scored += v.volume.score.has_value();
        with_problems += !v.volume.error.empty();
    }
    std::cout << "sqasam score-volumes: " << counted(dataset.cases.size(), "case") << " x "
              << counted(dataset.models.size(), "model") << ", " << counted(scored, "volume") << " scored, "
              << with_problems << " with problems listed in volumes.csv";
    if (resumed > 0) std::cout << "; " << counted(resumed, "case") << " taken from the journal of the earlier run";
    std::cout << "\nreport: " << (fs::path(o.out) / "report.html").string() << "\n";
}

}  // namespace

void add_score_volumes_command(CLI::App& app) {
    auto o = std::make_shared<ScoreVolumesOptions>();
    CLI::App* cmd = app.add_subcommand(
        "score-volumes",
        "Score 3D segmentations (NIfTI, NRRD, MetaImage, DICOM; nnU-Net layout) without ground truth: each class's "
        "3D components are scored slice by slice with SAM; writes volumes.csv, classes.csv, objects.csv, "
        "summary.json and report.html into --out");
    add_model_options(*cmd, o->model);
    cmd->add_option("--images", o->images,
                    "folder of images: CASE_0000.nii.gz (nnU-Net channel suffix), CASE.nrrd, ..., or CASE/ folders "
                    "holding one DICOM series each")
        ->required();
    cmd->add_option("--pred", o->preds,
                    "folder of predicted label volumes CASE.nii.gz (repeatable: several models in one run; NAME=DIR "
                    "names one, else the folder's name does)")
        ->required();
    cmd->add_option("--gt", o->gt, "folder of ground-truth label volumes CASE.nii.gz (labelsTs)");
    cmd->add_flag("--prob", o->prob,
                  "read nnU-Net's CASE.npz (probabilities) beside each prediction, for the Model-Confidence baseline");
    cmd->add_option("--channel", o->channel,
                    "which image channel: N picks CASE_000N (and volume N of a 4D image; default 0), a name picks "
                    "CASE_NAME (BraTS: t1, t1c, t2, fla); a 4D image without --channel is flagged");
    cmd->add_option("--dataset-json", o->dataset_json,
                    "nnU-Net dataset.json with class names (default: found beside the images or predictions)");
    add_output_options(*cmd, o->out, o->resume, o->overwrite, "cases");
    cmd->add_option("--modality", o->modality,
                    "windowing rule: ct (--window), mr (0.5-99.5 percentile clip of nonzero voxels) or auto (DICOM's "
                    "Modality, else CT when the minimum is below -500)")
        ->check(CLI::IsMember({"auto", "ct", "mr"}))
        ->capture_default_str();
    cmd->add_option("--window", o->window, "CT window LEVEL,WIDTH in HU (default soft tissue)")->capture_default_str();
    cmd->add_option("--slice-axis", o->slice_axis,
                    "axis the objects are sliced along: 0, 1, 2 (voxel index i, j, k) or auto (coarsest spacing)")
        ->check(CLI::IsMember({"auto", "0", "1", "2"}))
        ->capture_default_str();
    cmd->add_option("--max-slices-per-object", o->max_slices,
                    "slices scored per object, evenly spaced over its extent (0 = all)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--connectivity", o->connectivity, "3D object connectivity, 26 or 6")
        ->check(CLI::IsMember({6, 26}))
        ->capture_default_str();
    cmd->add_option("--min-voxels", o->min_voxels, "ignore predicted objects smaller than this many voxels")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--reducer", o->reducer,
                    "slice score from point and box Dice: max, mean, min, point, box, or auto (as in score: the SAM "
                    "model's default)")
        ->check(CLI::IsMember({"auto", "max", "mean", "min", "point", "box"}))
        ->capture_default_str();
    cmd->add_option("--mask-choice", o->mask_choice, "which SAM mask: best_iou, best_dice, single or auto")
        ->check(CLI::IsMember({"auto", "best_iou", "best_dice", "single"}))
        ->capture_default_str();
    cmd->add_option("--aggregation", o->aggregation,
                    "volume score from object scores: mean, area (weighted by voxels) or auto")
        ->check(CLI::IsMember({"auto", "mean", "area"}))
        ->capture_default_str();
    cmd->add_option_function<double>(
           "--pred-threshold", [o](double value) { o->pred_threshold = value; },
           "threshold for soft (float) predictions (default 0.5); label volumes are used as they are")
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--failure-dice", o->failure_dice, "true Dice below which a volume counts as a failure (AUROC)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    cmd->callback([o] { run_score_volumes(*o); });
}

}  // namespace sqasam::cli
