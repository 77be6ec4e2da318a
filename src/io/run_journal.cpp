// The run journal behind --resume (see RunJournal in run_journal.hpp).
#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/run_journal.hpp"

namespace sqasam {
namespace fs = std::filesystem;
using nlohmann::json;
namespace {

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

// The journal's JSON (a volume case's record nests 10 deep, the configuration 3): deeper nesting is refused while
// parsing, before anything recursive (comparing, printing a differing value) could meet it. Throws on any parse
// error.
json parse_shallow(const std::string& text) {
    constexpr int kMaxDepth = 12;
    return json::parse(text, [](int depth, json::parse_event_t, json&) {
        if (depth > kMaxDepth) throw Error("", "nested deeper than " + std::to_string(kMaxDepth) + " levels");
        return true;
    });
}

// A run's config.json; discarded (is_discarded()) when it is not JSON or nests too deep.
json read_config(const fs::path& path) {
    try {
        return parse_shallow(read_file(path).value_or(""));
    } catch (const std::exception&) {
        return json(json::value_t::discarded);
    }
}

}  // namespace

NamedRecord parse_journal_record(const std::string& line, const std::string& file, std::size_t line_number,
                                 const RunJournal::RecordName& record_name) {
    try {
        json record = parse_shallow(line);
        std::string name = record_name(record);
        if (name.empty()) throw Error("", "the record names no item");
        return {std::move(name), std::move(record)};
    } catch (const std::exception& e) {  // nlohmann's parse and type errors, or ours
        throw Error(file, "line " + std::to_string(line_number) + " is not a journal record (" +
                              std::string(e.what()).substr(0, 200) +
                              "); the journal is damaged: rerun without --resume to start over");
    }
}

std::string journal_record_line(const json& record) {
    return record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

json path_stamp(const std::string& path) {
    json stamp = {{"path", escape_non_utf8(path)}, {"size", nullptr}, {"mtime_ns", nullptr}};
    std::error_code ec;
    if (!path.empty() && fs::is_directory(path, ec)) {
        int64_t files = 0, size = 0, latest = 0;
        for (const fs::directory_entry& entry : fs::directory_iterator(path, ec))
            if (const std::optional<FileStamp> file = file_stamp(entry.path().string());
                file && entry.is_regular_file(ec)) {
                ++files;
                size += file->size;
                latest = std::max(latest, file->mtime_ns);
            }
        stamp["files"] = files;
        stamp["size"] = size;
        stamp["mtime_ns"] = latest;
    } else if (const std::optional<FileStamp> file = file_stamp(path)) {
        stamp["size"] = file->size;
        stamp["mtime_ns"] = file->mtime_ns;
    }
    return stamp;
}

RunJournal::RunJournal(const fs::path& out_dir, const json& config, bool resume, RecordName record_name)
    : dir_(out_dir / ".partial") {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) throw Error(out_dir.string(), "cannot create output folder: " + ec.message());
    lock_ = std::make_unique<FolderLock>(out_dir);
    const fs::path config_path = dir_ / "config.json", journal_path = dir_ / "journal.jsonl";

    const bool continuing = resume && fs::exists(config_path);
    if (continuing) {
        const json stored = read_config(config_path);
        if (stored.is_discarded()) throw Error(config_path.string(), "unreadable; rerun without --resume");
        if (stored != config)
            throw Error(config_path.string(), "the unfinished run used other settings (" + differences(stored, config) +
                                                  "); rerun with the same settings, or without --resume to start over");
    } else {
        fs::remove_all(dir_, ec);
    }
    fs::create_directories(dir_, ec);
    if (ec) throw Error(dir_.string(), "cannot create journal folder: " + ec.message());
    if (!continuing)
        write_file_atomically(config_path, config.dump(2, ' ', false, json::error_handler_t::replace) + "\n");

    std::map<std::string, std::pair<json, std::string>> latest;  // name -> record, its line
    std::vector<std::string> order;
    std::istringstream lines(continuing ? read_file(journal_path).value_or("") : "");
    std::string line;
    for (size_t number = 1; std::getline(lines, line); ++number) {
        if (lines.eof()) break;  // no newline after it: torn
        auto [name, record] = parse_journal_record(line, journal_path.string(), number, record_name);
        if (!latest.count(name)) order.push_back(name);
        latest[name] = {std::move(record), line};
    }
    std::string kept;  // the journal without torn or replaced lines, so the next append starts on a fresh line
    for (const std::string& name : order) {
        auto& [record, text] = latest.at(name);
        inputs_[name] = record.value("inputs", json());
        finished_.push_back(std::move(record));
        kept += text + "\n";
    }
    write_file_atomically(journal_path, kept);
}

RunJournal::~RunJournal() = default;

bool RunJournal::up_to_date(const std::string& name, const json& inputs) const {
    const auto found = inputs_.find(name);
    return found != inputs_.end() && found->second == inputs;
}

fs::path RunJournal::side_file(const fs::path& folder, const std::string& name, const std::string& suffix) const {
    constexpr size_t kMaxNameBytes = 200;
    if (name.size() <= kMaxNameBytes) return dir_ / folder / (name + suffix);
    uint64_t hash = 14695981039346656037ull;  // FNV-1a
    for (unsigned char c : name) hash = (hash ^ c) * 1099511628211ull;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
    return dir_ / folder / (std::string(hex) + suffix);
}

void RunJournal::write_side_file(const fs::path& path, const std::string& bytes) const {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) throw Error(path.parent_path().string(), "cannot create journal folder: " + ec.message());
    write_file_atomically(path, bytes);
}

void RunJournal::append(const std::string& name, json record, const json& inputs) {
    record["inputs"] = inputs;
    append_durably(dir_ / "journal.jsonl", journal_record_line(record));
    inputs_[name] = inputs;
}

void check_output_folder(const fs::path& out_dir, const json& config, const std::vector<std::string>& outputs) {
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
    for (const std::string& output : outputs)
        if (fs::exists(out_dir / output, ec))
            throw Error(out_dir.string(), "holds sqasam results (" + output +
                                              ") of a run whose settings are unknown (no .partial/config.json); "
                                              "give --overwrite to replace them, or choose another --out");
}

}  // namespace sqasam
