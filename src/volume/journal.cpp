// score-volumes' journal behind --resume (see VolumeJournal in volume.hpp), on the shared RunJournal, and the run of
// cases around it. Results and objects use the 2D journal's records and checked reads.
#include <chrono>
#include <limits>

#include <opencv2/imgcodecs.hpp>

#include "sqa/journal_records.hpp"
#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"

namespace sqasam {
namespace fs = std::filesystem;
using nlohmann::json;
using namespace journal_fields;
namespace {

long long_from(const json& value) {
    return static_cast<long>(integer_from(value, std::numeric_limits<long>::min(), std::numeric_limits<long>::max()));
}

json class_record(const ClassResult& c) {
    return {{"class_label", c.class_label},
            {"n_objects", c.n_objects},
            {"voxels", c.voxels},
            {"score", optional_number(c.score)},
            {"true_dice", optional_number(c.true_dice)}};
}

ClassResult class_from(const json& record) {
    ClassResult c;
    c.class_label = int_from(record.at("class_label"));
    c.n_objects = int_from(record.at("n_objects"));
    c.voxels = long_from(record.at("voxels"));
    c.score = optional_from(record.at("score"));
    c.true_dice = optional_from(record.at("true_dice"));
    return c;
}

json volume_record(const VolumeResult& v) {
    json classes = json::array();
    for (const ClassResult& c : v.classes) classes.push_back(class_record(c));
    return {{"result", image_result_record(v.volume)},
            {"slices_encoded", v.slices_encoded},
            {"agreement", optional_number(v.agreement)},
            {"model_agreement", optional_number(v.model_agreement)},
            {"classes", classes},
            {"modality", v.modality ? json(to_string(*v.modality)) : json(nullptr)}};
}

VolumeResult volume_from(const json& record) {
    VolumeResult v;
    v.volume = image_result_from(record.at("result"));
    v.model = v.volume.model;
    v.slices_encoded = int_from(record.at("slices_encoded"));
    v.agreement = optional_from(record.at("agreement"));
    v.model_agreement = optional_from(record.at("model_agreement"));
    for (const json& c : record.at("classes")) v.classes.push_back(class_from(c));
    if (!record.at("modality").is_null()) v.modality = modality_from_string(record.at("modality").get<std::string>());
    return v;
}

json volume_object_record(const VolumeObjectResult& o) {
    json slices = json::array();
    for (const SliceScore& s : o.slices)
        slices.push_back({{"slice", s.slice}, {"cross_section", object_record(s.cross_section)}});
    return {{"class_label", o.class_label},
            {"component", o.component},
            {"voxels", o.voxels},
            {"volume_ml", number(o.volume_ml)},
            {"bounds", o.bounds},
            {"n_slices", o.n_slices},
            {"slices", slices},
            {"score", number(o.score)}};
}

VolumeObjectResult volume_object_from(const json& record, const std::string& case_name, const std::string& model) {
    VolumeObjectResult o;
    o.case_name = case_name;
    o.model = model;
    o.class_label = int_from(record.at("class_label"));
    o.component = int_from(record.at("component"));
    o.voxels = long_from(record.at("voxels"));
    o.volume_ml = number_from(record.at("volume_ml"));
    for (size_t b = 0; b < o.bounds.size(); ++b) o.bounds[b] = long_from(record.at("bounds").at(b));
    o.n_slices = int_from(record.at("n_slices"));
    for (const json& s : record.at("slices"))
        o.slices.push_back({long_from(s.at("slice")), object_from(s.at("cross_section"), case_name, model)});
    o.score = number_from(record.at("score"));
    return o;
}

// One line: the case, and per model its row, objects and worst slice (without pictures).
json case_record(const CaseOutcome& outcome) {
    json models = json::array();
    for (const VolumeResult& volume : outcome.volumes) {
        json objects = json::array();
        for (const VolumeObjectResult& object : outcome.objects)
            if (object.model == volume.model) objects.push_back(volume_object_record(object));
        json worst = nullptr;
        for (const CaseOutcome::WorstSlice& slice : outcome.worst_slices)
            if (slice.model == volume.model) {
                json sections = json::array();
                for (const ObjectResult& section : slice.cross_sections) sections.push_back(object_record(section));
                worst = {{"slice", slice.slice}, {"axis", slice.axis}, {"cross_sections", sections}};
            }
        models.push_back({{"volume", volume_record(volume)}, {"objects", objects}, {"worst_slice", worst}});
    }
    return {{"case", outcome.name}, {"models", models}};
}

CaseOutcome case_from(const json& record) {
    CaseOutcome outcome;
    outcome.name = record.at("case").get<std::string>();
    for (const json& entry : record.at("models")) {
        outcome.volumes.push_back(volume_from(entry.at("volume")));
        const std::string& model = outcome.volumes.back().model;
        for (const json& object : entry.at("objects")) outcome.objects.push_back(volume_object_from(object, outcome.name, model));
        const json& worst = entry.at("worst_slice");
        if (worst.is_null()) continue;
        CaseOutcome::WorstSlice slice;
        slice.model = model;
        slice.slice = long_from(worst.at("slice"));
        slice.axis = static_cast<int>(integer_from(worst.at("axis"), 0, 2));
        for (const json& section : worst.at("cross_sections"))
            slice.cross_sections.push_back(object_from(section, outcome.name, model));
        outcome.worst_slices.push_back(std::move(slice));
    }
    return outcome;
}

std::string case_name(const json& record) { return case_from(record).name; }

// The case's rows when scoring it failed unexpectedly.
CaseOutcome failed_case(const VolumeCase& item, const VolumeDataset& dataset, const std::string& problem) {
    CaseOutcome outcome;
    outcome.name = item.name;
    for (const VolumeModel& model : dataset.models) {
        VolumeResult row;
        row.volume.image = item.name;
        row.volume.model = row.model = model.name;
        row.volume.flags.push_back("processing_error");
        row.volume.error = escape_non_utf8(item.name + ": " + problem);
        outcome.volumes.push_back(std::move(row));
    }
    return outcome;
}

CaseOutcome score_case_guarded(const VolumeCase& item, const VolumeDataset& dataset, const Segmenter& segmenter,
                               const VolumeRunOptions& options) {
    try {
        return score_case(item, dataset, segmenter, options);
    } catch (...) {
        return failed_case(item, dataset, current_exception_message());
    }
}

}  // namespace

json input_stamps(const VolumeCase& item) {
    json stamps = {{"image", path_stamp(item.image)}, {"gt", path_stamp(item.gt)}, {"predictions", json::array()}};
    for (size_t m = 0; m < item.pred.size(); ++m)
        stamps["predictions"].push_back(
            {{"pred", path_stamp(item.pred[m])}, {"prob", path_stamp(m < item.prob.size() ? item.prob[m] : "")}});
    return stamps;
}

VolumeJournal::VolumeJournal(const fs::path& out_dir, const json& config, bool resume)
    : journal_(out_dir, config, resume, case_name) {
    for (const json& record : journal_.finished()) finished_.push_back(case_from(record));
}

bool VolumeJournal::up_to_date(const VolumeCase& item) const {
    return journal_.up_to_date(item.name, input_stamps(item));
}

fs::path VolumeJournal::picture_path(const std::string& case_name, size_t model) const {
    return journal_.side_file(fs::path("slices") / std::to_string(model), case_name, ".png");
}

void VolumeJournal::append(const CaseOutcome& outcome, const json& inputs) {
    for (size_t m = 0; m < outcome.volumes.size(); ++m)
        for (const CaseOutcome::WorstSlice& slice : outcome.worst_slices) {
            if (slice.model != outcome.volumes[m].model || slice.gray.empty()) continue;
            const cv::Mat masks = slice.sam_point_mask + slice.sam_box_mask * 2 + (slice.prediction != 0) / 255 * 4;
            cv::Mat picture;
            cv::merge(std::vector<cv::Mat>{slice.gray, masks, cv::Mat::zeros(slice.gray.size(), CV_8U)}, picture);
            std::vector<uint8_t> png;
            cv::imencode(".png", picture, png);
            journal_.write_side_file(picture_path(outcome.name, m), std::string(png.begin(), png.end()));
        }
    journal_.append(outcome.name, case_record(outcome), inputs);
}

void VolumeJournal::load_pictures(CaseOutcome& outcome) const {
    for (CaseOutcome::WorstSlice& slice : outcome.worst_slices)
        for (size_t m = 0; m < outcome.volumes.size(); ++m) {
            if (outcome.volumes[m].model != slice.model) continue;
            const cv::Mat picture = cv::imread(picture_path(outcome.name, m).string(), cv::IMREAD_UNCHANGED);
            if (picture.type() != CV_8UC3) continue;
            std::vector<cv::Mat> planes;
            cv::split(picture, planes);
            slice.gray = planes[0];
            slice.sam_point_mask = planes[1] & 1;
            slice.sam_box_mask = (planes[1] & 2) / 2;
            slice.prediction = (planes[1] & 4) / 4;
        }
}

void score_volume_cases(const VolumeDataset& dataset, const Segmenter& segmenter, const VolumeRunOptions& options,
                        VolumeJournal& journal, const std::function<void(const VolumeRunProgress&)>& on_case) {
    std::map<std::string, const CaseOutcome*> journaled;
    for (const CaseOutcome& outcome : journal.finished()) journaled[outcome.name] = &outcome;
    VolumeRunProgress progress;
    progress.total = dataset.cases.size();
    for (const VolumeCase& item : dataset.cases) {
        CaseOutcome outcome;
        const auto found = journaled.find(item.name);
        progress.from_journal = found != journaled.end() && journal.up_to_date(item);
        const auto start = std::chrono::steady_clock::now();
        if (progress.from_journal) {
            outcome = *found->second;
            journal.load_pictures(outcome);
        } else {
            const json inputs = input_stamps(item);  // before reading: a change while scoring shows
            outcome = score_case_guarded(item, dataset, segmenter, options);
            journal.append(outcome, inputs);
        }
        progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        ++progress.finished;
        progress.outcome = &outcome;
        if (on_case) on_case(progress);
    }
}

}  // namespace sqasam
