// The run journal behind --resume (see Journal in sqa.hpp).
#include <array>
#include <cmath>
#include <limits>

#include <opencv2/imgcodecs.hpp>

#include "sqa/journal_records.hpp"
#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace fs = std::filesystem;
using nlohmann::json;

namespace journal_fields {

json number(double value) { return std::isfinite(value) ? json(value) : json(nullptr); }
json optional_number(const std::optional<double>& value) { return value ? number(*value) : json(nullptr); }

double real_from(const json& value) {
    if (!value.is_number()) throw Error("", std::string("a number was expected, not ") + value.type_name());
    return value.get<double>();
}

double number_from(const json& value) {
    return value.is_null() ? std::numeric_limits<double>::quiet_NaN() : real_from(value);
}

std::optional<double> optional_from(const json& value) {
    if (value.is_null()) return std::nullopt;
    return real_from(value);
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

}  // namespace journal_fields

using namespace journal_fields;
namespace {

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

}  // namespace

json image_result_record(const ImageResult& image) {
    return {{"image", image.image},
            {"model", image.model},
            {"score", optional_number(image.score)},
            {"n_objects", image.n_objects},
            {"flags", image.flags},
            {"error", image.error},
            {"true_dice", optional_number(image.true_dice)},
            {"class_dice", image.class_dice},
            {"model_confidence", optional_number(image.model_confidence)},
            {"features", features_record(image.features)}};
}

ImageResult image_result_from(const json& image) {
    ImageResult result;
    result.image = image.at("image").get<std::string>();
    result.model = image.at("model").get<std::string>();
    result.score = optional_from(image.at("score"));
    result.n_objects = int_from(image.at("n_objects"));
    result.flags = image.at("flags").get<std::vector<std::string>>();
    result.error = image.at("error").get<std::string>();
    result.true_dice = optional_from(image.at("true_dice"));
    for (const json& pair : image.at("class_dice"))
        result.class_dice.emplace_back(int_from(pair.at(0)), real_from(pair.at(1)));
    result.model_confidence = optional_from(image.at("model_confidence"));
    result.features = features_from(image.at("features"));
    return result;
}

json object_record(const ObjectResult& object) {
    return {{"class_label", object.class_label},
            {"component", object.component},
            {"area", object.area},
            {"box", object.box},
            {"point", object.point},
            {"point_prompt", agreement_record(object.point_prompt)},
            {"box_prompt", agreement_record(object.box_prompt)},
            {"point_box_dice", number(object.point_box_dice)},
            {"compactness", number(object.compactness)},
            {"score", number(object.score)}};
}

ObjectResult object_from(const json& entry, const std::string& image, const std::string& model) {
    ObjectResult object;
    object.image = image;
    object.model = model;
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
    return object;
}

namespace {

json outcome_record(const ImageOutcome& outcome) {
    json record = {{"image", image_result_record(outcome.image)}, {"objects", json::array()}};
    for (const ObjectResult& object : outcome.objects) record["objects"].push_back(object_record(object));
    return record;
}

ImageOutcome outcome_from(const json& record) {
    ImageOutcome outcome;
    outcome.image = image_result_from(record.at("image"));
    for (const json& entry : record.at("objects"))
        outcome.objects.push_back(object_from(entry, outcome.image.image, outcome.image.model));
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

// The item a 2D record is about: its first model's image (parsing the whole record checks it).
std::string item_name(const json& record) {
    const std::vector<ImageOutcome> outcomes = item_from(record);
    if (outcomes.empty()) throw Error("", "the record has no model's outcome");
    return outcomes.front().image.image;
}

}  // namespace

JournalEntry parse_journal_line(const std::string& line, const std::string& file, size_t line_number) {
    const json record = parse_journal_record(line, file, line_number, item_name).record;
    return {item_from(record), record.value("inputs", json())};
}

std::string journal_line(const std::vector<ImageOutcome>& outcomes, const json& inputs) {
    json record = item_record(outcomes);
    record["inputs"] = inputs;
    return journal_record_line(record);
}

json input_stamps(const DatasetItem& item) {
    json stamps = {{"image", path_stamp(item.image)}, {"gt", path_stamp(item.gt)}, {"predictions", json::array()}};
    for (const PredictionFiles& files : item.predictions)
        stamps["predictions"].push_back({{"pred", path_stamp(files.pred)}, {"prob", path_stamp(files.prob)}});
    return stamps;
}

Journal::Journal(const fs::path& out_dir, const json& config, bool resume)
    : journal_(out_dir, config, resume, item_name) {
    for (const json& record : journal_.finished()) finished_.push_back(item_from(record));
}

bool Journal::up_to_date(const DatasetItem& item) const { return journal_.up_to_date(item.name, input_stamps(item)); }

void Journal::append(const std::vector<ImageOutcome>& outcomes, const json& inputs) {
    if (outcomes.empty()) return;
    const std::string& name = outcomes.front().image.image;
    for (std::size_t m = 0; m < outcomes.size(); ++m) {
        const ImageOutcome& outcome = outcomes[m];
        if (outcome.sam_point_mask.empty()) continue;
        cv::Mat both = outcome.sam_point_mask + outcome.sam_box_mask * 2;
        std::vector<uint8_t> png;
        cv::imencode(".png", both, png);
        journal_.write_side_file(mask_path(name, m), std::string(png.begin(), png.end()));
    }
    journal_.append(name, item_record(outcomes), inputs);
}

fs::path Journal::mask_path(const std::string& image, std::size_t model) const {
    return journal_.side_file(fs::path("masks") / std::to_string(model), image, ".png");
}

std::pair<cv::Mat, cv::Mat> Journal::masks(const std::string& image, std::size_t model) const {
    const fs::path path = mask_path(image, model);
    if (!fs::exists(path)) return {};
    cv::Mat both = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
    if (both.empty()) return {};
    cv::Mat point = both & 1, box = (both & 2) / 2;
    return {point, box};
}

void check_output_folder(const fs::path& out_dir, const json& config) {
    check_output_folder(out_dir, config, {"images.csv", "objects.csv", "summary.json", "report.html"});
}

}  // namespace sqasam
