// images.csv, objects.csv and summary.json; the folder writer; which overlays to keep.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string_view>

#include "report/report_internal.hpp"
#include "sqasam/io.hpp"
#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {

namespace report_detail {

// RFC 4180: quote a field holding a separator, a quote, a line break or edge spaces; double inner quotes.
std::string csv_field(const std::string& text) {
    const bool needs_quotes = text.find_first_of(",\"\r\n") != std::string::npos ||
                              (!text.empty() && (text.front() == ' ' || text.back() == ' '));
    if (!needs_quotes) return text;
    std::string quoted = "\"";
    for (char c : text) {
        if (c == '"') quoted += '"';
        quoted += c;
    }
    return quoted + '"';
}

// OWASP's CSV-injection advice. Numbers are written by csv_number / fixed, so a negative number stays a number.
std::string csv_text(const std::string& text) {
    if (!text.empty() && std::string_view("=+-@\t\r").find(text.front()) != std::string_view::npos) return "'" + text;
    return text;
}

void write_output_set(const std::string& folder, const std::vector<std::pair<std::string, OutputWriter>>& files) {
    namespace fs = std::filesystem;
    std::error_code error;
    fs::create_directories(folder, error);
    if (error) throw Error(folder, "cannot create the output folder: " + error.message());
    const fs::path dir(folder), staging = dir / ".report-staging";
    fs::remove_all(staging, error);
    fs::create_directories(staging, error);
    if (error) throw Error(staging.string(), "cannot create the staging folder: " + error.message());
    for (const auto& [name, write] : files) write((staging / name).string());
    for (const auto& [name, write] : files) {
        fs::remove(dir / name, error);
        if (error) throw Error((dir / name).string(), "cannot replace: " + error.message());
    }
    for (const auto& [name, write] : files) {
        fs::rename(staging / name, dir / name, error);
        if (error) throw Error((dir / name).string(), "cannot move into place: " + error.message());
    }
    fs::remove(staging, error);
}

std::string csv_number(const std::optional<double>& value) { return value ? fixed(*value, 6) : std::string(); }

void csv_row(std::ostringstream& out, const std::vector<std::string>& fields) {
    for (std::size_t i = 0; i < fields.size(); ++i) out << (i ? "," : "") << csv_field(fields[i]);
    out << "\n";
}

std::string join(const std::vector<std::string>& parts, const std::string& separator) {
    std::string joined;
    for (std::size_t i = 0; i < parts.size(); ++i) joined += (i ? separator : "") + parts[i];
    return joined;
}

namespace {

nlohmann::json optional_json(const std::optional<double>& value) {
    return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json interval_json(const std::optional<Interval>& interval) {
    return interval ? nlohmann::json::array({interval->low, interval->high}) : nlohmann::json(nullptr);
}

}  // namespace

nlohmann::json metrics_json(const Metrics& m) {
    return {{"n", m.n},
            {"n_failures", m.n_failures},
            {"pearson", optional_json(m.pearson)},
            {"pearson_ci", interval_json(m.pearson_ci)},
            {"spearman", optional_json(m.spearman)},
            {"spearman_ci", interval_json(m.spearman_ci)},
            {"bottom25", optional_json(m.bottom25)},
            {"bottom50", optional_json(m.bottom50)},
            {"auroc", optional_json(m.auroc)},
            {"auroc_ci", interval_json(m.auroc_ci)},
            {"aurc", optional_json(m.aurc)},
            {"aurc_ci", interval_json(m.aurc_ci)},
            {"optimal_aurc", optional_json(m.optimal_aurc)},
            {"e_aurc", optional_json(m.e_aurc)}};
}

namespace {

// The calibrated estimate's metrics, with its mean absolute error and interval coverage; null without one.
nlohmann::json estimate_json(const Evaluation& e) {
    if (!e.estimate) return nullptr;
    nlohmann::json metrics = metrics_json(*e.estimate);
    metrics["mae"] = optional_json(e.estimate_mae);
    metrics["interval_coverage"] = optional_json(e.estimate_coverage);
    return metrics;
}

}  // namespace

}  // namespace report_detail

using report_detail::csv_number;
using report_detail::csv_row;
using report_detail::csv_text;
using report_detail::estimate_json;
using report_detail::fixed;
using report_detail::join;
using report_detail::metrics_json;

void write_images_csv(const std::string& path, const std::vector<ImageResult>& images) {
    std::set<int> labels;
    std::set<std::string> present;
    bool any_estimate = false;
    for (const auto& image : images) {
        for (const auto& [label, dice] : image.class_dice) labels.insert(label);
        for (const auto& [name, value] : image.features) present.insert(name);
        any_estimate = any_estimate || image.estimate.has_value();
    }
    const bool per_class = labels.size() > 1;  // one class: its Dice is true_dice already
    std::vector<std::string> feature_columns;  // those not written as ImageResult's own columns
    for (const FeatureInfo& feature : image_features())
        if (present.count(feature.name)) feature_columns.push_back(feature.name);

    std::ostringstream out;
    std::vector<std::string> header{"image", "model", "score", "n_objects", "flags", "error", "true_dice",
                                    "model_confidence"};
    if (any_estimate)
        for (const char* column : {"estimated_dice", "dice_low", "dice_high", "outside_calibration"})
            header.push_back(column);
    if (per_class)
        for (int label : labels) header.push_back("dice_class_" + std::to_string(label));
    header.insert(header.end(), feature_columns.begin(), feature_columns.end());
    csv_row(out, header);
    for (const auto& image : images) {
        std::vector<std::string> row{csv_text(image.image),          csv_text(image.model),
                                     csv_number(image.score),        std::to_string(image.n_objects),
                                     join(image.flags, ";"),         csv_text(image.error),
                                     csv_number(image.true_dice),    csv_number(image.model_confidence)};
        if (any_estimate) {
            const auto& e = image.estimate;
            row.push_back(e ? fixed(e->dice, 6) : "");
            row.push_back(e ? fixed(e->low, 6) : "");
            row.push_back(e ? fixed(e->high, 6) : "");
            row.push_back(e ? e->outside : "");
        }
        if (per_class)
            for (int label : labels) {
                const auto found = std::find_if(image.class_dice.begin(), image.class_dice.end(),
                                                [&](const auto& entry) { return entry.first == label; });
                row.push_back(found == image.class_dice.end() ? "" : fixed(found->second, 6));
            }
        for (const std::string& name : feature_columns) {
            const auto found = image.features.find(name);
            row.push_back(found == image.features.end() ? "" : fixed(found->second, 6));
        }
        csv_row(out, row);
    }
    write_file_atomically(path, out.str());
}

void write_objects_csv(const std::string& path, const std::vector<ObjectResult>& objects) {
    std::ostringstream out;
    std::vector<std::string> header{"image", "model", "class", "component", "area", "x0",
                                    "y0",    "x1",    "y1",    "point_x",   "point_y"};
    const std::vector<std::pair<std::string, std::array<double, 3> PromptAgreement::*>> measures{
        {"dice", &PromptAgreement::dice},
        {"iou", &PromptAgreement::iou},
        {"predicted_iou", &PromptAgreement::predicted_iou},
        {"stability", &PromptAgreement::stability},
        {"boundary_iou", &PromptAgreement::boundary_iou}};
    for (const std::string prompt : {"point", "box"})
        for (const auto choice : kAllMaskChoices)
            for (const auto& [measure, member] : measures)
                header.push_back(prompt + "_" + to_string(choice) + "_" + measure);
    for (const char* column : {"point_box_dice", "compactness", "score"}) header.push_back(column);
    csv_row(out, header);
    for (const auto& o : objects) {
        std::vector<std::string> row{csv_text(o.image),
                                     csv_text(o.model),
                                     std::to_string(o.class_label),
                                     std::to_string(o.component),
                                     std::to_string(o.area),
                                     std::to_string(o.box[0]),
                                     std::to_string(o.box[1]),
                                     std::to_string(o.box[2]),
                                     std::to_string(o.box[3]),
                                     fixed(o.point[0], 2),
                                     fixed(o.point[1], 2)};
        for (const PromptAgreement* agreement : {&o.point_prompt, &o.box_prompt})
            for (std::size_t c = 0; c < kAllMaskChoices.size(); ++c)
                for (const auto& [measure, member] : measures) row.push_back(fixed((agreement->*member)[c], 6));
        row.push_back(fixed(o.point_box_dice, 6));
        row.push_back(fixed(o.compactness, 6));
        row.push_back(fixed(o.score, 6));
        csv_row(out, row);
    }
    write_file_atomically(path, out.str());
}

nlohmann::json summary_json(const ReportInput& input) {
    const Evaluation& e = input.evaluation;
    nlohmann::json config = input.config;
    config["reducer"] = to_string(input.reducer);
    config["mask_choice"] = to_string(input.mask_choice);
    config["aggregation"] = to_string(input.aggregation);
    config["prompting_reason"] = input.prompting_reason;
    config["failure_threshold"] = input.eval_options.failure_threshold;
    config["bootstrap"] = {{"resamples", input.eval_options.bootstrap_resamples},
                           {"confidence", input.eval_options.confidence},
                           {"seed", input.eval_options.seed},
                           {"method", "percentile"}};

    nlohmann::json ablation = nlohmann::json::array();
    for (const auto& row : e.ablation) {
        nlohmann::json entry = {{"reducer", to_string(row.reducer)},
                                {"mask_choice", to_string(row.mask_choice)},
                                {"aggregation", to_string(row.aggregation)}};
        entry.update(metrics_json(row.metrics));
        ablation.push_back(entry);
    }
    std::map<std::string, int> flag_counts;
    for (const auto& image : input.images)
        for (const auto& flag : image.flags) ++flag_counts[flag];
    const ImageCounts counts = count_images(input.images);
    return {{"n_images", e.n_images},
            {"n_scored", counts.scored},
            {"n_flagged", counts.flagged},
            {"n_with_ground_truth", e.n_with_ground_truth},
            {"n_objects", input.objects.size()},
            {"sqa", metrics_json(e.sqa)},
            {"model_confidence", e.model_confidence ? metrics_json(*e.model_confidence) : nlohmann::json(nullptr)},
            {"estimated_dice", estimate_json(e)},
            {"calibration", input.calibration},
            {"config", config},
            {"ablation", ablation},
            {"flags", flag_counts},
            {"model", input.model}};
}

void write_summary_json(const std::string& path, const ReportInput& input) {
    write_file_atomically(path, summary_json(input).dump(2) + "\n");
}

void write_report_folder(const std::string& folder, const ReportInput& input) {
    report_detail::write_output_set(
        folder, {{"report.html", [&](const std::string& path) { write_report_html(path, input); }},
                 {"summary.json", [&](const std::string& path) { write_summary_json(path, input); }},
                 {"objects.csv", [&](const std::string& path) { write_objects_csv(path, input.objects); }},
                 {"images.csv", [&](const std::string& path) { write_images_csv(path, input.images); }}});
}

ImageCounts count_images(const std::vector<ImageResult>& images) {
    ImageCounts counts;
    counts.images = images.size();
    for (const ImageResult& image : images) {
        counts.scored += image.score.has_value();
        counts.flagged += !image.flags.empty() || !image.error.empty();
    }
    return counts;
}

void keep_lowest_scored(std::vector<ImageOverlay>& kept, ImageOverlay overlay, std::size_t limit) {
    const auto position = std::upper_bound(kept.begin(), kept.end(), overlay.score,
                                           [](double score, const ImageOverlay& o) { return score < o.score; });
    if (static_cast<std::size_t>(position - kept.begin()) >= limit) return;
    kept.insert(position, std::move(overlay));
    if (kept.size() > limit) kept.pop_back();
}

}  // namespace sqasam
