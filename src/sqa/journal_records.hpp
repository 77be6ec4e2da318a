#pragma once
// One line of the run journal (out/.partial/journal.jsonl): an image's outcomes, one per model, and the stamps of its
// inputs when it was scored. Kept apart from Journal so the fuzzer can read lines without a run folder. The records of
// results and objects, and the checked reads of their fields, serve score-volumes' journal too.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sqasam/sqa.hpp"

namespace sqasam {

// Fields of journal records. JSON has no NaN or infinity (SAM's IoU predictions come from a network and could be
// NaN): a non-finite number is written as null and read back as NaN; an empty optional is null too. Reads check
// type and range: a value of the wrong type or out of range is an Error, never a cast that overflows.
namespace journal_fields {
nlohmann::json number(double value);
nlohmann::json optional_number(const std::optional<double>& value);
double real_from(const nlohmann::json& value);
double number_from(const nlohmann::json& value);  // null: NaN
std::optional<double> optional_from(const nlohmann::json& value);
int64_t integer_from(const nlohmann::json& value, int64_t low, int64_t high);
int int_from(const nlohmann::json& value);
float coordinate_from(const nlohmann::json& value);
}  // namespace journal_fields

// An ImageResult as a record (without its estimate, which is recomputed) and back.
nlohmann::json image_result_record(const ImageResult& result);
ImageResult image_result_from(const nlohmann::json& record);
// An ObjectResult as a record without its image and model (the line names them) and back.
nlohmann::json object_record(const ObjectResult& object);
ObjectResult object_from(const nlohmann::json& record, const std::string& image, const std::string& model);

struct JournalEntry {
    std::vector<ImageOutcome> outcomes;  // one per model, without masks
    nlohmann::json inputs;  // input_stamps() of the item when it was scored; null in lines that have none
};

// Throws sqasam::Error naming `file` and the line number when the line is not a record.
JournalEntry parse_journal_line(const std::string& line, const std::string& file, std::size_t line_number);
// The line (with its newline) that parse_journal_line reads back.
std::string journal_line(const std::vector<ImageOutcome>& outcomes, const nlohmann::json& inputs);

}  // namespace sqasam
