// libFuzzer entry: arbitrary bytes as one line of the run journal (out/.partial/journal.jsonl), through its reader;
// a record that parses must write back to a line that parses to the same record. Every rejection must be a
// sqasam::Error; any other exception, a crash or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "sqa/journal_records.hpp"
#include "sqasam/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string line(reinterpret_cast<const char*>(data), size);
    sqasam::JournalEntry entry;
    try {
        entry = sqasam::parse_journal_line(line, "fuzz-input", 1);
    } catch (const sqasam::Error&) {
        return 0;
    }
    std::string written = sqasam::journal_line(entry.outcomes, entry.inputs);
    written.pop_back();  // the newline
    const sqasam::JournalEntry again = sqasam::parse_journal_line(written, "fuzz-rewritten", 1);
    if (sqasam::journal_line(again.outcomes, again.inputs) != written + "\n") std::abort();
    return 0;
}
