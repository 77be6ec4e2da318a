// The outputs of a volume run: volumes.csv, classes.csv, objects.csv, summary.json and report.html, the last two
// through the 2D report's writers.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "report/report_internal.hpp"
#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"

namespace sqasam {
namespace {

using report_detail::csv_number;
using report_detail::csv_row;
using report_detail::csv_text;
using report_detail::fixed;
using report_detail::html_escape;
using report_detail::join;

std::string class_name(const std::map<int, std::string>& names, int label) {
    const auto found = names.find(label);
    return found == names.end() ? "" : found->second;
}

std::optional<double> class_dice(const VolumeResult& volume, int label) {
    for (const auto& [l, dice] : volume.volume.class_dice)
        if (l == label) return dice;
    return std::nullopt;
}

void write_volumes_csv(const std::string& path, const VolumeReportInput& input) {
    std::set<int> labels;
    for (const VolumeResult& v : input.volumes)
        for (const auto& [label, dice] : v.volume.class_dice) labels.insert(label);
    std::ostringstream out;
    std::vector<std::string> header{"case",      "model",     "score",     "n_objects",        "slices_encoded",
                                    "modality",  "flags",     "error",     "true_dice",        "model_confidence",
                                    "agreement", "model_agreement"};
    for (int label : labels) {
        const std::string name = class_name(input.class_names, label);
        header.push_back("dice_class_" + std::to_string(label) + (name.empty() ? "" : "_" + name));
    }
    csv_row(out, header);
    for (const VolumeResult& v : input.volumes) {
        std::vector<std::string> row{csv_text(v.volume.image),
                                     csv_text(v.model),
                                     csv_number(v.volume.score),
                                     std::to_string(v.volume.n_objects),
                                     std::to_string(v.slices_encoded),
                                     v.modality ? to_string(*v.modality) : "",
                                     join(v.volume.flags, ";"),
                                     csv_text(v.volume.error),
                                     csv_number(v.volume.true_dice),
                                     csv_number(v.volume.model_confidence),
                                     csv_number(v.agreement),
                                     csv_number(v.model_agreement)};
        for (int label : labels) row.push_back(csv_number(class_dice(v, label)));
        csv_row(out, row);
    }
    write_file_atomically(path, out.str());
}

void write_classes_csv(const std::string& path, const VolumeReportInput& input) {
    std::ostringstream out;
    csv_row(out, {"case", "model", "class", "class_name", "n_objects", "voxels", "score", "true_dice"});
    for (const VolumeResult& v : input.volumes)
        for (const ClassResult& c : v.classes)
            csv_row(out, {csv_text(v.volume.image), csv_text(v.model), std::to_string(c.class_label),
                          csv_text(class_name(input.class_names, c.class_label)), std::to_string(c.n_objects),
                          std::to_string(c.voxels), csv_number(c.score), csv_number(c.true_dice)});
    write_file_atomically(path, out.str());
}

void write_objects_csv(const std::string& path, const VolumeReportInput& input) {
    const std::size_t choice = mask_choice_index(input.score.mask_choice);
    std::ostringstream out;
    csv_row(out, {"case", "model", "class", "class_name", "component", "voxels", "volume_ml", "i0", "j0", "k0", "i1",
                  "j1", "k1", "n_slices", "slices_scored", "lowest_slice", "lowest_slice_score", "point_dice",
                  "box_dice", "score"});
    for (const VolumeObjectResult& o : input.objects) {
        // The configured mask choice's point and box Dice, area-weighted over the scored slices like the score.
        double point = 0, box = 0, area = 0;
        const SliceScore* lowest = nullptr;
        for (const SliceScore& s : o.slices) {
            const double a = static_cast<double>(s.cross_section.area);
            point += a * s.cross_section.point_prompt.dice[choice];
            box += a * s.cross_section.box_prompt.dice[choice];
            area += a;
            if (!lowest || s.cross_section.score < lowest->cross_section.score) lowest = &s;
        }
        std::vector<std::string> row{csv_text(o.case_name), csv_text(o.model), std::to_string(o.class_label),
                                     csv_text(class_name(input.class_names, o.class_label)),
                                     std::to_string(o.component),
                                     std::to_string(o.voxels), fixed(o.volume_ml, 4)};
        for (long b : o.bounds) row.push_back(std::to_string(b));
        row.push_back(std::to_string(o.n_slices));
        row.push_back(std::to_string(o.slices.size()));
        row.push_back(lowest ? std::to_string(lowest->slice) : "");
        row.push_back(lowest ? fixed(lowest->cross_section.score, 6) : "");
        row.push_back(area > 0 ? fixed(point / area, 6) : "");
        row.push_back(area > 0 ? fixed(box / area, 6) : "");
        row.push_back(fixed(o.score, 6));
        csv_row(out, row);
    }
    write_file_atomically(path, out.str());
}

bool several_models(const std::vector<VolumeResult>& volumes) {
    std::set<std::string> models;
    for (const VolumeResult& v : volumes) models.insert(v.model);
    return models.size() > 1;
}

// The volumes as the 2D report's rows (image = case, model = model).
std::vector<ImageResult> report_rows(const std::vector<VolumeResult>& volumes) {
    std::vector<ImageResult> rows;
    for (const VolumeResult& v : volumes) rows.push_back(v.volume);
    return rows;
}

std::string classes_section_html(const VolumeReportInput& input) {
    struct Sums {
        int volumes = 0, objects = 0, scored = 0, with_truth = 0;
        double score = 0, dice = 0;
    };
    std::map<int, Sums> by_class;
    for (const VolumeResult& v : input.volumes)
        for (const ClassResult& c : v.classes) {
            Sums& s = by_class[c.class_label];
            ++s.volumes;
            s.objects += c.n_objects;
            if (c.score) ++s.scored, s.score += *c.score;
            if (c.true_dice) ++s.with_truth, s.dice += *c.true_dice;
        }
    std::ostringstream html;
    html << "<p class=\"muted\">Per class: the mean of its volumes' class scores (each the mean over the class's "
            "objects) and, with ground truth, of its true Dice. Every row of classes.csv is one volume's class.</p>"
            "<table><thead><tr><th>Class</th><th class=\"left\">Name</th><th>Volumes</th><th>Objects</th>"
            "<th>Mean score</th><th>Mean true Dice</th></tr></thead><tbody>";
    for (const auto& [label, s] : by_class)
        html << "<tr><td>" << label << "</td><td class=\"left\">" << html_escape(class_name(input.class_names, label))
             << "</td><td>" << s.volumes << "</td><td>" << s.objects << "</td><td>"
             << (s.scored ? fixed(s.score / s.scored, 3) : "&mdash;") << "</td><td>"
             << (s.with_truth ? fixed(s.dice / s.with_truth, 3) : "&mdash;") << "</td></tr>";
    html << "</tbody></table>";
    return html.str();
}

std::string agreement_section_html(const VolumeReportInput& input, const std::optional<Metrics>& agreement_metrics) {
    std::map<std::string, std::vector<const VolumeResult*>> by_case;
    for (const VolumeResult& v : input.volumes) by_case[v.volume.image].push_back(&v);
    std::ostringstream html;
    html << "<p class=\"muted\">Agreement: the mean pairwise Dice (mean over the classes present in either) of the "
            "models' predictions of a case; per model, its mean Dice against each other model.";
    if (agreement_metrics && agreement_metrics->spearman)
        html << " Against the true Dice, a model's agreement with the others reaches Spearman "
             << fixed(*agreement_metrics->spearman, 3) << " (n = " << agreement_metrics->n << ").";
    html << "</p><table><thead><tr><th>Case</th><th>Agreement</th>";
    std::vector<std::string> models;
    for (const VolumeResult& v : input.volumes)
        if (std::find(models.begin(), models.end(), v.model) == models.end()) models.push_back(v.model);
    for (const std::string& model : models) html << "<th>" << html_escape(model) << "<br>score / agreement</th>";
    html << "</tr></thead><tbody>";
    for (const auto& [name, rows] : by_case) {
        html << "<tr><td>" << html_escape(name) << "</td><td>"
             << (rows.front()->agreement ? fixed(*rows.front()->agreement, 3) : "&mdash;") << "</td>";
        for (const std::string& model : models) {
            const auto row = std::find_if(rows.begin(), rows.end(), [&](const auto* r) { return r->model == model; });
            html << "<td>";
            if (row != rows.end())
                html << ((*row)->volume.score ? fixed(*(*row)->volume.score, 3) : "&mdash;") << " / "
                     << ((*row)->model_agreement ? fixed(*(*row)->model_agreement, 3) : "&mdash;");
            html << "</td>";
        }
        html << "</tr>";
    }
    html << "</tbody></table>";
    return html.str();
}

// Agreement with the other models as a quality measure, evaluated like the score (runs with ground truth).
std::optional<Metrics> agreement_metrics(const std::vector<VolumeResult>& volumes, const EvalOptions& options) {
    Pairs pairs;
    const bool several = several_models(volumes);
    for (const VolumeResult& v : volumes)
        if (v.model_agreement && v.volume.true_dice) {
            pairs.names.push_back(volume_row_name(v, several));
            pairs.value.push_back(*v.model_agreement);
            pairs.true_dice.push_back(*v.volume.true_dice);
        }
    if (pairs.value.empty()) return std::nullopt;
    return evaluate_pairs(pairs, options);
}

}  // namespace

std::string volume_row_name(const VolumeResult& volume, bool several) {
    return several ? volume.volume.image + " (" + volume.model + ")" : volume.volume.image;
}

ImageOverlay volume_overlay(const VolumeResult& volume, const CaseOutcome::WorstSlice& slice) {
    ImageOverlay overlay;
    overlay.image = volume.volume.image;
    overlay.model = volume.model;
    overlay.score = volume.volume.score.value_or(0);
    overlay.bgr = slice.gray;
    overlay.prediction = slice.prediction != 0;
    overlay.sam_point_mask = slice.sam_point_mask;
    overlay.sam_box_mask = slice.sam_box_mask;
    overlay.caption = "slice " + std::to_string(slice.slice) + " along axis " + std::to_string(slice.axis) +
                      ", where its lowest-scored object scored lowest";
    overlay.prompts = slice.cross_sections;
    return overlay;
}

Evaluation evaluate_volumes(const std::vector<VolumeResult>& volumes, const std::vector<VolumeObjectResult>& objects,
                            const EvalOptions& options) {
    const std::vector<ImageResult> rows = report_rows(volumes);
    Evaluation evaluation = evaluate(rows, {}, options);  // objects are 3D here: the ablation follows
    evaluation.ablation.clear();
    if (evaluation.n_with_ground_truth == 0) return evaluation;
    std::map<std::pair<std::string, std::string>, std::vector<const VolumeObjectResult*>> objects_of;
    for (const VolumeObjectResult& o : objects) objects_of[{o.case_name, o.model}].push_back(&o);
    EvalOptions point_only = options;
    point_only.bootstrap_resamples = 0;
    for (const auto aggregation : {ImageAggregation::Mean, ImageAggregation::AreaWeighted})
        for (const auto choice : kAllMaskChoices)
            for (const auto reducer : kAllReducers) {
                Pairs pairs;
                for (size_t i = 0; i < volumes.size(); ++i) {
                    const auto found = objects_of.find({volumes[i].volume.image, volumes[i].model});
                    if (found == objects_of.end() || !volumes[i].volume.true_dice) continue;
                    const auto score = volume_score(found->second, reducer, choice, aggregation);
                    if (!score) continue;
                    pairs.names.push_back(volume_row_name(volumes[i], true));
                    pairs.value.push_back(*score);
                    pairs.true_dice.push_back(*volumes[i].volume.true_dice);
                }
                evaluation.ablation.push_back({reducer, choice, aggregation, evaluate_pairs(pairs, point_only)});
            }
    return evaluation;
}

void write_volume_report(const std::string& folder, const VolumeReportInput& input) {
    ReportInput report;
    report.unit = "volume";
    report.images = report_rows(input.volumes);
    report.evaluation = evaluate_volumes(input.volumes, input.objects, input.eval_options);
    report.eval_options = input.eval_options;
    report.reducer = input.score.reducer;
    report.mask_choice = input.score.mask_choice;
    report.aggregation = input.score.aggregation;
    report.config = input.config;
    report.model = input.model;
    report.prompting_reason = input.prompting_reason;
    report.overlays = input.overlays;
    // One record per 3D object, for the counts (the overlays carry their own prompts).
    const bool several = several_models(input.volumes);
    for (const VolumeObjectResult& o : input.objects) {
        ObjectResult record;
        record.image = o.case_name;
        record.model = o.model;
        record.class_label = o.class_label;
        record.component = o.component;
        record.area = o.voxels;
        record.score = o.score;
        report.objects.push_back(record);
    }
    const std::optional<Metrics> agreement = agreement_metrics(input.volumes, input.eval_options);
    report.sections.push_back({"Scores per class", classes_section_html(input)});
    if (several) report.sections.push_back({"Agreement between models", agreement_section_html(input, agreement)});

    nlohmann::json summary = summary_json(report);
    int slices = 0;
    std::map<std::string, int> slices_of_case;
    for (const VolumeResult& v : input.volumes) slices_of_case[v.volume.image] = v.slices_encoded;
    for (const auto& [name, count] : slices_of_case) slices += count;
    summary["unit"] = "volume";
    summary["n_cases"] = slices_of_case.size();
    std::set<std::string> models;
    for (const VolumeResult& v : input.volumes) models.insert(v.model);
    summary["n_models"] = models.size();
    summary["slices_encoded"] = slices;
    summary["agreement"] = agreement ? report_detail::metrics_json(*agreement) : nlohmann::json(nullptr);
    nlohmann::json names = nlohmann::json::object();
    for (const auto& [label, name] : input.class_names) names[std::to_string(label)] = name;
    summary["class_names"] = names;
    report_detail::write_output_set(
        folder, {{"report.html", [&](const std::string& path) { write_report_html(path, report); }},
                 {"summary.json", [&](const std::string& path) { write_file_atomically(path, summary.dump(2) + "\n"); }},
                 {"objects.csv", [&](const std::string& path) { write_objects_csv(path, input); }},
                 {"classes.csv", [&](const std::string& path) { write_classes_csv(path, input); }},
                 {"volumes.csv", [&](const std::string& path) { write_volumes_csv(path, input); }}});
}

}  // namespace sqasam
