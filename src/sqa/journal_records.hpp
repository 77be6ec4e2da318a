#pragma once
// One line of the run journal (out/.partial/journal.jsonl): an image's outcomes, one per model, and the stamps of its
// inputs when it was scored. Kept apart from Journal so the fuzzer can read lines without a run folder.
#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sqasam/sqa.hpp"

namespace sqasam {

struct JournalEntry {
    std::vector<ImageOutcome> outcomes;  // one per model, without masks
    nlohmann::json inputs;  // input_stamps() of the item when it was scored; null in lines that have none
};

// Throws sqasam::Error naming `file` and the line number when the line is not a record.
JournalEntry parse_journal_line(const std::string& line, const std::string& file, std::size_t line_number);
// The line (with its newline) that parse_journal_line reads back.
std::string journal_line(const std::vector<ImageOutcome>& outcomes, const nlohmann::json& inputs);

}  // namespace sqasam
