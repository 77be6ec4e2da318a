#pragma once
// The journal behind --resume, one implementation for the batch commands (score: one line per image; score-volumes:
// one line per case): every finished item is on disk in <out>/.partial before the next one starts, so a killed run
// loses none of them, and a resumed run recomputes only what is missing or whose input files changed.
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sqasam/io.hpp"

namespace sqasam {

// <out>/.partial holds config.json (the run's configuration), journal.jsonl (one JSON object per finished item,
// appended and flushed as the item finishes, with the stamps of the item's input files under "inputs") and the
// files records need beside them (side_file: written atomically before their record's line). Reading it back:
// a torn last line (a run killed mid-write: no newline after it) is dropped; any other line that is not a record is
// an Error naming the file and line; a later line for an item replaces an earlier one (the item was recomputed
// because its inputs changed). The journal holds the output folder's FolderLock while it lives: a second run into
// the folder is refused.
class RunJournal {
public:
    // Checks one parsed line (throws any exception when it is not a record of this journal's kind) and returns
    // the name of its item.
    using RecordName = std::function<std::string(const nlohmann::json& record)>;

    // Creates out_dir if needed and locks it. With resume and a config.json there, continues that journal, or
    // throws an Error naming the settings that differ when it was written under another configuration. Otherwise
    // starts afresh (an earlier journal and its side files are removed).
    RunJournal(const std::filesystem::path& out_dir, const nlohmann::json& config, bool resume,
               RecordName record_name);
    ~RunJournal();

    // The records earlier runs finished (read when the journal was opened), the latest per item, in the order the
    // items were first journaled.
    const std::vector<nlohmann::json>& finished() const { return finished_; }
    bool contains(const std::string& name) const { return inputs_.count(name) > 0; }
    // Whether the item is journaled with these input stamps (see path_stamp), i.e. scored from its files as they
    // are now.
    bool up_to_date(const std::string& name, const nlohmann::json& inputs) const;
    // Where the journal keeps a file of an item: <.partial>/<folder>/<name><suffix>, with a hash for a name over
    // 200 bytes (NAME_MAX is 255). write_side_file creates the folder.
    std::filesystem::path side_file(const std::filesystem::path& folder, const std::string& name,
                                    const std::string& suffix) const;
    void write_side_file(const std::filesystem::path& path, const std::string& bytes) const;
    // Records a finished item (record["inputs"] = inputs, the stamps its files had before it was scored): on disk
    // once this returns; finished() does not change, contains() and up_to_date() know the item.
    void append(const std::string& name, nlohmann::json record, const nlohmann::json& inputs);

private:
    std::unique_ptr<FolderLock> lock_;
    std::filesystem::path dir_;
    std::vector<nlohmann::json> finished_;
    std::map<std::string, nlohmann::json> inputs_;  // by item name
};

// One journal line as JSON with its item's name. Throws an Error naming file and line (and suggesting a fresh start)
// when it is not a record: not JSON, nested deeper than any record is, or refused by record_name.
struct NamedRecord {
    std::string name;
    nlohmann::json record;
};
NamedRecord parse_journal_record(const std::string& line, const std::string& file, std::size_t line_number,
                                 const RunJournal::RecordName& record_name);
// A record as one journal line (with its newline); text that is not UTF-8 is replaced.
std::string journal_record_line(const nlohmann::json& record);

// A stamp of an input file or DICOM folder as it is now, for RunJournal's inputs: path (escape_non_utf8'd), size and
// modification time; for a folder, the number of its files, their total size and the latest modification time
// among them (a file added, removed or rewritten changes it); size and time null when the path is empty or missing.
nlohmann::json path_stamp(const std::string& path);

// Refuses (an Error naming the folder and the settings that differ) to start a run in an output folder that holds
// the results of a run with another configuration, so that they are never replaced silently: the caller skips the
// check only when told to overwrite. The earlier run is known by its journal's config.json; without one, any of the
// command's output files (`outputs`: images.csv, ... for score) there counts as another run. Nothing is touched.
void check_output_folder(const std::filesystem::path& out_dir, const nlohmann::json& config,
                         const std::vector<std::string>& outputs);

}  // namespace sqasam
