// sqasam calibrate: fits a Dice calibration on finished `sqasam score` runs that had ground truth.
#include <charconv>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "cli/commands.hpp"
#include "sqasam/calibration.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct CalibrateCommandOptions {
    std::vector<std::string> runs;
    std::string out;
    double coverage = 0.9;
};

std::optional<double> parse_number(const std::string& text) {
    double value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || error != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

json read_json(const fs::path& path) {
    const std::optional<std::string> text = read_file(path);
    if (!text) throw Error(path.string(), "missing: is this the --out folder of a finished `sqasam score` run?");
    json value = json::parse(*text, nullptr, false);
    if (value.is_discarded()) throw Error(path.string(), "not valid JSON");
    return value;
}

// What a run's features depend on besides the images: it must be the same for every run of one calibration.
json calibration_context(const json& summary) {
    const json& config = summary.at("config");
    json scoring = json::object();
    for (const char* key : {"reducer", "mask_choice", "aggregation", "connectivity", "min_area", "pred_threshold"})
        scoring[key] = config.value(key, json());
    return {{"sam_model_type", summary.at("model").value("type", "")}, {"scoring", scoring}};
}

// The scored images of one run that have a true Dice, as calibration rows of the group `group`.
std::vector<CalibrationRow> read_run_rows(const fs::path& run, const std::string& group) {
    const fs::path table = run / "images.csv";
    const std::vector<CsvRow> rows = read_csv(table.string());
    if (rows.empty()) throw Error(table.string(), "empty");
    std::map<std::string, std::size_t> column;
    for (std::size_t i = 0; i < rows.front().fields.size(); ++i) column[rows.front().fields[i]] = i;
    for (const char* required : {"score", "true_dice"})
        if (!column.count(required)) throw Error(table.string(), std::string("has no '") + required + "' column");
    auto cell = [&](const CsvRow& row, const std::string& name) -> std::optional<double> {
        const auto found = column.find(name);
        if (found == column.end() || found->second >= row.fields.size()) return std::nullopt;
        return parse_number(row.fields[found->second]);
    };
    std::vector<CalibrationRow> result;
    for (std::size_t r = 1; r < rows.size(); ++r) {
        const auto truth = cell(rows[r], "true_dice");
        if (!truth || !cell(rows[r], "score")) continue;  // unscored images have no estimate to calibrate
        CalibrationRow row;
        row.true_dice = *truth;
        row.group = group;
        for (const FeatureInfo& info : image_features())
            if (const auto value = cell(rows[r], info.name)) row.features[info.name] = *value;
        result.push_back(std::move(row));
    }
    return result;
}

void run_calibrate(const CalibrateCommandOptions& o) {
    std::vector<CalibrationRow> rows;
    json runs = json::array();
    json context;
    std::string context_run;
    std::set<std::string> groups;
    for (const std::string& dir : o.runs) {
        const fs::path run = fs::weakly_canonical(fs::absolute(dir));
        const json summary = read_json(run / "summary.json");
        if (summary.value("n_with_ground_truth", 0) == 0)
            throw Error(run.string(), "this run had no ground truth, so it cannot teach the calibration the true "
                                      "Dice: score it again with --gt");
        const json this_context = calibration_context(summary);
        if (context.is_null()) {
            context = this_context;
            context_run = run.string();
        } else if (this_context != context) {
            throw Error(run.string(), "scored with another SAM model or scoring configuration than " + context_run +
                                          " (" + this_context.dump() + " vs " + context.dump() +
                                          "): a calibration holds for one of each");
        }
        // Each run is one group (dataset): the intervals are cross-validated across them.
        std::string group = run.filename().string();
        while (!groups.insert(group).second) group += "'";
        std::vector<CalibrationRow> run_rows = read_run_rows(run, group);
        json models = json::array();
        for (const auto& model : summary.at("config").value("models", json::array())) models.push_back(model);
        runs.push_back({{"path", run.string()},
                        {"group", group},
                        {"images_folder", summary.at("config").value("images", "")},
                        {"models", models},
                        {"rows", run_rows.size()}});
        rows.insert(rows.end(), std::make_move_iterator(run_rows.begin()), std::make_move_iterator(run_rows.end()));
    }
    json provenance = context;
    provenance["runs"] = runs;
    provenance["rows"] = rows.size();

    CalibrationOptions options;
    options.coverage = o.coverage;
    const Calibration calibration = Calibration::fit(rows, provenance, options);
    calibration.save(o.out);
    std::cout << "sqasam calibrate: " << rows.size() << " scored images with a true Dice from " << o.runs.size()
              << " run" << (o.runs.size() == 1 ? "" : "s") << "; " << calibration.feature_sets().size()
              << " models (feature sets):\n";
    for (const auto& features : calibration.feature_sets()) std::cout << "  " << features.size() << " features\n";
    std::cout << "wrote " << o.out << "\n";
}

}  // namespace

void add_calibrate_command(CLI::App& app) {
    auto o = std::make_shared<CalibrateCommandOptions>();
    CLI::App* cmd = app.add_subcommand(
        "calibrate",
        "Fit a calibrated Dice estimate (XGBoost, with conformal intervals) on finished `sqasam score` runs that had "
        "--gt; use it with `sqasam score --calibration FILE`");
    cmd->add_option("--runs", o->runs, "--out folders of finished score runs (each run counts as one dataset)")
        ->required()
        ->expected(1, -1);
    cmd->add_option("--out", o->out, "the calibration file to write (JSON)")->required();
    cmd->add_option("--coverage", o->coverage, "share of images the intervals should cover")
        ->check(CLI::Range(0.5, 0.99))
        ->capture_default_str();
    cmd->callback([o] { run_calibrate(*o); });
}

}  // namespace sqasam::cli
