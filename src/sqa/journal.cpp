// The run journal behind --resume (see Journal in sqa.hpp).
#include <array>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <opencv2/imgcodecs.hpp>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

// SAM's IoU predictions come from a network and could be NaN, which JSON cannot hold.
json number(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }
double number_from(const json& value) {
    return value.is_null() ? std::numeric_limits<double>::quiet_NaN() : value.get<double>();
}

// PromptAgreement's arrays by their journal names.
constexpr std::pair<const char*, std::array<double, 3> PromptAgreement::*> kAgreementArrays[] = {
    {"dice", &PromptAgreement::dice},
    {"iou", &PromptAgreement::iou},
    {"predicted_iou", &PromptAgreement::predicted_iou},
    {"stability", &PromptAgreement::stability},
    {"boundary_iou", &PromptAgreement::boundary_iou}};

json agreement_record(const PromptAgreement& agreement) {
    json record = json::object();
    for (const auto& [name, member] : kAgreementArrays) {
        json& values = record[name] = json::array();
        for (double value : agreement.*member) values.push_back(number(value));
    }
    return record;
}

PromptAgreement agreement_from(const json& record) {
    PromptAgreement agreement;
    for (const auto& [name, member] : kAgreementArrays)
        for (size_t i = 0; i < (agreement.*member).size(); ++i)
            (agreement.*member)[i] = number_from(record.at(name).at(i));
    return agreement;
}

json features_record(const Features& features) {
    json record = json::object();
    for (const auto& [name, value] : features) record[name] = number(value);
    return record;
}

Features features_from(const json& record) {
    Features features;
    for (const auto& [name, value] : record.items()) features[name] = number_from(value);
    return features;
}

json optional_number(const std::optional<double>& value) { return value ? number(*value) : json(nullptr); }
std::optional<double> optional_from(const json& value) {
    if (value.is_null()) return std::nullopt;
    return value.get<double>();
}

json outcome_record(const ImageOutcome& outcome) {
    const ImageResult& image = outcome.image;
    json record;
    record["image"] = {{"image", image.image},
                       {"model", image.model},
                       {"score", optional_number(image.score)},
                       {"n_objects", image.n_objects},
                       {"flags", image.flags},
                       {"error", image.error},
                       {"true_dice", optional_number(image.true_dice)},
                       {"class_dice", image.class_dice},
                       {"model_confidence", optional_number(image.model_confidence)},
                       {"features", features_record(image.features)}};
    record["objects"] = json::array();
    for (const ObjectResult& object : outcome.objects)
        record["objects"].push_back({{"class_label", object.class_label},
                                     {"component", object.component},
                                     {"area", object.area},
                                     {"box", object.box},
                                     {"point", object.point},
                                     {"point_prompt", agreement_record(object.point_prompt)},
                                     {"box_prompt", agreement_record(object.box_prompt)},
                                     {"point_box_dice", number(object.point_box_dice)},
                                     {"compactness", number(object.compactness)},
                                     {"score", number(object.score)}});
    return record;
}

ImageOutcome outcome_from(const json& record) {
    ImageOutcome outcome;
    const json& image = record.at("image");
    ImageResult& result = outcome.image;
    result.image = image.at("image").get<std::string>();
    result.model = image.at("model").get<std::string>();
    result.score = optional_from(image.at("score"));
    result.n_objects = image.at("n_objects").get<int>();
    result.flags = image.at("flags").get<std::vector<std::string>>();
    result.error = image.at("error").get<std::string>();
    result.true_dice = optional_from(image.at("true_dice"));
    result.class_dice = image.at("class_dice").get<std::vector<std::pair<int, double>>>();
    result.model_confidence = optional_from(image.at("model_confidence"));
    result.features = features_from(image.at("features"));
    for (const json& entry : record.at("objects")) {
        ObjectResult object;
        object.image = result.image;
        object.model = result.model;
        object.class_label = entry.at("class_label").get<int>();
        object.component = entry.at("component").get<int>();
        object.area = entry.at("area").get<long>();
        for (int c = 0; c < 4; ++c) object.box[c] = entry.at("box").at(c).get<int>();
        for (int c = 0; c < 2; ++c) object.point[c] = entry.at("point").at(c).get<float>();
        object.point_prompt = agreement_from(entry.at("point_prompt"));
        object.box_prompt = agreement_from(entry.at("box_prompt"));
        object.point_box_dice = number_from(entry.at("point_box_dice"));
        object.compactness = number_from(entry.at("compactness"));
        object.score = number_from(entry.at("score"));
        outcome.objects.push_back(std::move(object));
    }
    return outcome;
}

// One journal line: an image with every model's outcome.
json item_record(const std::vector<ImageOutcome>& outcomes) {
    json record = {{"image", outcomes.empty() ? "" : outcomes.front().image.image}, {"models", json::array()}};
    for (const ImageOutcome& outcome : outcomes) record["models"].push_back(outcome_record(outcome));
    return record;
}

std::vector<ImageOutcome> item_from(const json& record) {
    std::vector<ImageOutcome> outcomes;
    for (const json& entry : record.at("models")) outcomes.push_back(outcome_from(entry));
    return outcomes;
}

fs::path mask_path(const fs::path& dir, const std::string& image, std::size_t model) {
    return dir / "masks" / std::to_string(model) / (image + ".png");
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// The top-level settings that differ between an earlier and this run's configuration, with both values.
std::string differences(const json& earlier, const json& now) {
    std::string text;
    std::set<std::string> seen;
    auto consider = [&](const std::string& key) {
        const json before = earlier.value(key, json()), after = now.value(key, json());
        if (before == after || !seen.insert(key).second) return;
        text += (text.empty() ? "" : "; ") + key + " was " + before.dump() + ", now " + after.dump();
    };
    for (const auto& [key, value] : earlier.items()) consider(key);
    for (const auto& [key, value] : now.items()) consider(key);
    return text;
}

}  // namespace

Journal::Journal(const fs::path& out_dir, const json& config, bool resume) : dir_(out_dir / ".partial") {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error(out_dir.string(), "cannot create output folder: " + ec.message());
    const fs::path config_path = dir_ / "config.json", journal_path = dir_ / "journal.jsonl";

    bool continuing = resume && fs::exists(config_path);
    if (continuing) {
        json stored = json::parse(read_text(config_path), nullptr, false);
        if (stored.is_discarded()) throw Error(config_path.string(), "unreadable; rerun without --resume");
        if (stored != config)
            throw Error(config_path.string(), "the unfinished run used other settings (" + differences(stored, config) +
                                                  "); rerun with the same settings, or without --resume to start over");
    } else {
        fs::remove_all(dir_, ec);
    }
    fs::create_directories(dir_ / "masks", ec);
    if (ec) throw Error(dir_.string(), "cannot create journal folder: " + ec.message());
    if (!continuing) write_file_atomically(config_path, config.dump(2) + "\n");

    // Keep the complete lines; a run killed mid-write leaves a torn last line, which is dropped here so the next
    // append starts on a fresh line.
    std::string kept;
    std::istringstream lines(continuing ? read_text(journal_path) : "");
    std::string line;
    while (std::getline(lines, line)) {
        if (lines.eof()) break;  // no newline after it: torn
        json record = json::parse(line, nullptr, false);
        if (record.is_discarded()) continue;
        std::vector<ImageOutcome> outcomes = item_from(record);
        if (outcomes.empty() || !names_.insert(outcomes.front().image.image).second) continue;
        finished_.push_back(std::move(outcomes));
        kept += line + "\n";
    }
    write_file_atomically(journal_path, kept);
}

void Journal::append(const std::vector<ImageOutcome>& outcomes) {
    if (outcomes.empty()) return;
    const std::string& name = outcomes.front().image.image;
    for (std::size_t m = 0; m < outcomes.size(); ++m) {
        const ImageOutcome& outcome = outcomes[m];
        if (outcome.sam_point_mask.empty()) continue;
        cv::Mat both = outcome.sam_point_mask + outcome.sam_box_mask * 2;
        std::vector<uint8_t> png;
        cv::imencode(".png", both, png);
        const fs::path path = mask_path(dir_, name, m);
        fs::create_directories(path.parent_path());
        write_file_atomically(path, std::string(png.begin(), png.end()));
    }
    append_durably(dir_ / "journal.jsonl", item_record(outcomes).dump() + "\n");
    names_.insert(name);
}

std::pair<cv::Mat, cv::Mat> Journal::masks(const std::string& image, std::size_t model) const {
    const fs::path path = mask_path(dir_, image, model);
    if (!fs::exists(path)) return {};
    cv::Mat both = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
    if (both.empty()) return {};
    cv::Mat point = both & 1, box = (both & 2) / 2;
    return {point, box};
}

void check_output_folder(const fs::path& out_dir, const json& config) {
    const fs::path config_path = out_dir / ".partial" / "config.json";
    std::error_code ec;
    if (fs::exists(config_path, ec)) {
        const json earlier = json::parse(read_text(config_path), nullptr, false);
        if (earlier == config) return;
        throw Error(out_dir.string(),
                    "holds the results of another run (" +
                        (earlier.is_discarded() ? config_path.string() + " is unreadable" : differences(earlier, config)) +
                        "); give --overwrite to replace them, or choose another --out");
    }
    for (const char* output : {"images.csv", "objects.csv", "summary.json", "report.html"})
        if (fs::exists(out_dir / output, ec))
            throw Error(out_dir.string(), std::string("holds sqasam results (") + output +
                                              ") of a run whose settings are unknown (no .partial/config.json); "
                                              "give --overwrite to replace them, or choose another --out");
}

}  // namespace sqasam
