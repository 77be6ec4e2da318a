// The run journal behind --resume (see Journal in sqa.hpp).
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <opencv2/imgcodecs.hpp>

#include "sqa/journal_records.hpp"
#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

// SAM's IoU predictions come from a network and could be NaN, which JSON cannot hold.
json number(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }
// Checked reads of a record's fields: a value of the wrong type or out of range is an Error, never a cast that
// overflows.
double real_from(const json& value) {
    if (!value.is_number()) throw Error("", std::string("a number was expected, not ") + value.type_name());
    return value.get<double>();
}
double number_from(const json& value) {
    return value.is_null() ? std::numeric_limits<double>::quiet_NaN() : real_from(value);
}
int64_t integer_from(const json& value, int64_t low, int64_t high) {
    if (!value.is_number_integer()) throw Error("", std::string("an integer was expected, not ") + value.type_name());
    if (value.is_number_unsigned() ? value.get<uint64_t>() > static_cast<uint64_t>(high)
                                   : value.get<int64_t>() < low || value.get<int64_t>() > high)
        throw Error("", "the integer " + value.dump() + " is out of range");
    return value.get<int64_t>();
}
int int_from(const json& value) {
    return static_cast<int>(integer_from(value, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}
float coordinate_from(const json& value) {
    const double real = real_from(value);
    if (!(std::abs(real) <= std::numeric_limits<float>::max())) throw Error("", "a coordinate is out of range");
    return static_cast<float>(real);
}

// The journal's JSON (a record nests 6 deep, the configuration 3): deeper nesting is refused while parsing, before
// anything recursive (comparing, printing a differing value) could meet it. Throws on any parse error.
json parse_shallow(const std::string& text) {
    constexpr int kMaxDepth = 10;
    return json::parse(text, [](int depth, json::parse_event_t, json&) {
        if (depth > kMaxDepth) throw Error("", "nested deeper than " + std::to_string(kMaxDepth) + " levels");
        return true;
    });
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
    return real_from(value);
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
    result.n_objects = int_from(image.at("n_objects"));
    result.flags = image.at("flags").get<std::vector<std::string>>();
    result.error = image.at("error").get<std::string>();
    result.true_dice = optional_from(image.at("true_dice"));
    for (const json& pair : image.at("class_dice")) result.class_dice.emplace_back(int_from(pair.at(0)), real_from(pair.at(1)));
    result.model_confidence = optional_from(image.at("model_confidence"));
    result.features = features_from(image.at("features"));
    for (const json& entry : record.at("objects")) {
        ObjectResult object;
        object.image = result.image;
        object.model = result.model;
        object.class_label = int_from(entry.at("class_label"));
        object.component = int_from(entry.at("component"));
        object.area = integer_from(entry.at("area"), 0, std::numeric_limits<long>::max());
        for (int c = 0; c < 4; ++c) object.box[c] = int_from(entry.at("box").at(c));
        for (int c = 0; c < 2; ++c) object.point[c] = coordinate_from(entry.at("point").at(c));
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

}  // namespace

JournalEntry parse_journal_line(const std::string& line, const std::string& file, size_t line_number) {
    try {
        const json record = parse_shallow(line);
        JournalEntry entry{item_from(record), record.value("inputs", json())};
        if (entry.outcomes.empty() || entry.outcomes.front().image.image.empty())
            throw Error("", "the record names no image");
        return entry;
    } catch (const std::exception& e) {  // nlohmann's parse and type errors, or ours
        throw Error(file, "line " + std::to_string(line_number) + " is not a journal record (" +
                              std::string(e.what()).substr(0, 200) +
                              "); the journal is damaged: rerun without --resume to start over");
    }
}

std::string journal_line(const std::vector<ImageOutcome>& outcomes, const json& inputs) {
    json record = item_record(outcomes);
    record["inputs"] = inputs;
    return record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

namespace {

// Where an image's SAM masks for a model are kept: masks/<model index>/<name>.png, or a hash of the name where
// that would pass NAME_MAX.
fs::path mask_path(const fs::path& dir, const std::string& image, std::size_t model) {
    constexpr size_t kMaxNameBytes = 200;
    const fs::path folder = dir / "masks" / std::to_string(model);
    if (image.size() <= kMaxNameBytes) return folder / (image + ".png");
    uint64_t hash = 14695981039346656037ull;  // FNV-1a
    for (unsigned char c : image) hash = (hash ^ c) * 1099511628211ull;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
    return folder / (std::string(hex) + ".png");
}

std::string read_text(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// A run's config.json; discarded (is_discarded()) when it is not JSON or nests too deep.
json read_config(const fs::path& path) {
    try {
        return parse_shallow(read_text(path));
    } catch (const std::exception&) {
        return json(json::value_t::discarded);
    }
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

json input_stamps(const DatasetItem& item) {
    auto stamp_of = [](const std::string& path) {
        const std::optional<FileStamp> stamp = file_stamp(path);
        return json{{"path", escape_non_utf8(path)},
                    {"size", stamp ? json(stamp->size) : json()},
                    {"mtime_ns", stamp ? json(stamp->mtime_ns) : json()}};
    };
    json stamps = {{"image", stamp_of(item.image)}, {"gt", stamp_of(item.gt)}, {"predictions", json::array()}};
    for (const PredictionFiles& files : item.predictions)
        stamps["predictions"].push_back({{"pred", stamp_of(files.pred)}, {"prob", stamp_of(files.prob)}});
    return stamps;
}

Journal::Journal(const fs::path& out_dir, const json& config, bool resume) : dir_(out_dir / ".partial") {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error(out_dir.string(), "cannot create output folder: " + ec.message());
    lock_ = std::make_unique<FolderLock>(out_dir);
    const fs::path config_path = dir_ / "config.json", journal_path = dir_ / "journal.jsonl";

    bool continuing = resume && fs::exists(config_path);
    if (continuing) {
        const json stored = read_config(config_path);
        if (stored.is_discarded()) throw Error(config_path.string(), "unreadable; rerun without --resume");
        if (stored != config)
            throw Error(config_path.string(), "the unfinished run used other settings (" + differences(stored, config) +
                                                  "); rerun with the same settings, or without --resume to start over");
    } else {
        fs::remove_all(dir_, ec);
    }
    fs::create_directories(dir_ / "masks", ec);
    if (ec) throw Error(dir_.string(), "cannot create journal folder: " + ec.message());
    if (!continuing)
        write_file_atomically(config_path, config.dump(2, ' ', false, json::error_handler_t::replace) + "\n");

    // A run killed mid-write leaves a torn last line (no newline after it), which is dropped so the next append
    // starts on a fresh line; any other line that is not a record is an Error. An image recomputed because its
    // inputs changed has a later line, which replaces the earlier one.
    std::map<std::string, std::pair<JournalEntry, std::string>> latest;
    std::vector<std::string> order;
    std::istringstream lines(continuing ? read_text(journal_path) : "");
    std::string line;
    for (size_t number = 1; std::getline(lines, line); ++number) {
        if (lines.eof()) break;
        JournalEntry entry = parse_journal_line(line, journal_path.string(), number);
        const std::string name = entry.outcomes.front().image.image;
        if (!latest.count(name)) order.push_back(name);
        latest[name] = {std::move(entry), line};
    }
    std::string kept;
    for (const std::string& name : order) {
        auto& [entry, text] = latest.at(name);
        inputs_[name] = entry.inputs;
        finished_.push_back(std::move(entry.outcomes));
        kept += text + "\n";
    }
    write_file_atomically(journal_path, kept);
}

Journal::~Journal() = default;

bool Journal::up_to_date(const DatasetItem& item) const {
    const auto found = inputs_.find(item.name);
    return found != inputs_.end() && found->second == input_stamps(item);
}

void Journal::append(const std::vector<ImageOutcome>& outcomes, const json& inputs) {
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
    append_durably(dir_ / "journal.jsonl", journal_line(outcomes, inputs));
    inputs_[name] = inputs;
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
        const json earlier = read_config(config_path);
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
