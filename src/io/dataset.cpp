#include <algorithm>
#include <cctype>
#include <fstream>
#include <limits>
#include <map>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
namespace fs = std::filesystem;
namespace {

// Base name -> the supported files with that base name in one folder (more than one is an ambiguity).
using FolderIndex = std::map<std::string, std::vector<fs::path>>;

FolderIndex index_folder(const std::string& dir, const std::string& role) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error(dir, "no such folder (" + role + ")");
    FolderIndex index;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        const fs::path& path = entry.path();
        if (path.filename().string().starts_with(".") || !is_supported_image_file(path)) continue;
        // A symlink loop (or another entry whose type cannot be read) is kept: reading it flags the item with the
        // reason, where skipping it would hide the file and throwing would end the whole run.
        std::error_code type_error;
        if (!entry.is_regular_file(type_error) && !type_error) continue;
        index[escape_non_utf8(path.stem().string())].push_back(path);
    }
    if (ec) throw Error(dir, "cannot list folder: " + ec.message());
    if (index.empty()) throw Error(dir, "no PNG, JPEG, TIFF or BMP files in the " + role + " folder");
    for (auto& [name, paths] : index) std::sort(paths.begin(), paths.end());
    return index;
}

// The one file named `name` in the folder, or "" with a problem noted when there is none or several.
std::string pick(const FolderIndex& index, const std::string& name, std::string& problem) {
    auto found = index.find(name);
    if (found == index.end()) return "";
    if (found->second.size() == 1) return found->second.front().string();
    std::string listed;
    for (const auto& path : found->second) listed += (listed.empty() ? "" : ", ") + path.filename().string();
    if (!problem.empty()) problem += "; ";
    problem += "several files share the base name '" + name + "' in " + found->second.front().parent_path().string() +
               ": " + listed;
    return "";
}

// Levenshtein distance: the fewest single-character insertions, deletions and substitutions from a to b.
size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t above = row[j];
            row[j] = std::min({above + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string trimmed(const std::string& text) {
    auto first = text.find_first_not_of(" \t");
    if (first == std::string::npos) return "";
    return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

}  // namespace

std::pair<std::string, std::string> split_named_folder(const std::string& text) {
    const auto equals = text.find('=');
    std::error_code ec;
    if (equals == std::string::npos || equals == 0 || text.substr(0, equals).find('/') != std::string::npos ||
        fs::is_directory(text, ec))
        return {"", text};
    return {text.substr(0, equals), text.substr(equals + 1)};
}

std::string model_name(const std::string& name, const std::string& folder) {
    auto own_name = [](fs::path path) {
        path = path.lexically_normal();
        return (path.has_filename() ? path : path.parent_path()).filename().string();  // "dir/" names dir
    };
    std::string chosen = name.empty() ? own_name(folder) : name;
    if (chosen.empty() || chosen == "." || chosen == "..") chosen = own_name(fs::weakly_canonical(fs::absolute(folder)));
    return escape_non_utf8(chosen);  // a folder name that is not UTF-8 would not fit the JSON outputs
}

Dataset match_folders(const DatasetFolders& folders) {
    if (folders.predictions.empty()) throw Error("", "no prediction folder given");
    FolderIndex images = index_folder(folders.images, "images");
    std::optional<FolderIndex> gts;
    if (!folders.gt.empty()) gts = index_folder(folders.gt, "ground truth");

    Dataset dataset;
    dataset.has_gt = gts.has_value();
    std::vector<FolderIndex> preds;
    std::vector<std::optional<FolderIndex>> probs;
    for (const PredictionFolder& folder : folders.predictions) {
        const std::string name = model_name(folder.model, folder.pred);
        for (const SegmentationModel& model : dataset.models)
            if (model.name == name)
                throw Error(folder.pred, "two prediction folders are both named '" + name +
                                             "'; name them with --pred NAME=DIR");
        SegmentationModel model{name, !folder.prob.empty(), {}};
        preds.push_back(index_folder(folder.pred, "predictions of " + name));
        for (const auto& [base, paths] : preds.back())
            if (!images.count(base))
                for (const fs::path& path : paths) model.unmatched_predictions.push_back(path.string());
        dataset.models.push_back(std::move(model));
        probs.push_back(folder.prob.empty() ? std::nullopt
                                            : std::optional(index_folder(folder.prob, "probability maps of " + name)));
    }

    for (const auto& [name, paths] : images) {
        DatasetItem item;
        item.name = name;
        item.image = pick(images, name, item.problem);
        if (gts) item.gt = pick(*gts, name, item.problem);
        for (size_t m = 0; m < preds.size(); ++m) {
            PredictionFiles files;
            files.pred = pick(preds[m], name, item.problem);
            if (probs[m]) files.prob = pick(*probs[m], name, item.problem);
            item.predictions.push_back(std::move(files));
        }
        dataset.items.push_back(std::move(item));
    }
    return dataset;
}

std::vector<std::string> unmatched_name_hints(const Dataset& dataset, std::size_t model, std::size_t limit) {
    std::vector<std::string> hints;
    for (const DatasetItem& item : dataset.items) {
        if (hints.size() == limit) break;
        if (!item.predictions.at(model).pred.empty() || !item.problem.empty() || item.image.empty()) continue;
        std::string hint = "image " + fs::path(item.image).filename().string() + ": no prediction named " + item.name +
                           ".*";
        const std::string* closest = nullptr;
        size_t fewest = std::numeric_limits<size_t>::max();
        for (const std::string& path : dataset.models.at(model).unmatched_predictions) {
            const size_t edits = edit_distance(item.name, fs::path(path).stem().string());
            if (edits < fewest) {
                fewest = edits;
                closest = &path;
            }
        }
        if (closest) hint += ", closest " + fs::path(*closest).filename().string();
        hints.push_back(std::move(hint));
    }
    return hints;
}

Dataset read_manifest(const std::string& csv_path) {
    const std::vector<CsvRow> rows = read_csv(csv_path);
    if (rows.empty()) throw Error(csv_path, "manifest is empty");
    fs::path base = fs::path(csv_path).parent_path();
    const std::vector<std::string>& header = rows.front().fields;
    std::map<std::string, size_t> column;
    std::vector<std::string> model_names;  // in the header's order
    for (size_t i = 0; i < header.size(); ++i) {
        std::string name = trimmed(header[i]);
        // Column kinds are case-insensitive; model names after "pred:" / "prob:" are kept as written.
        const auto kind_end = std::min(name.find(':'), name.size());
        std::transform(name.begin(), name.begin() + static_cast<long>(kind_end), name.begin(),
                       [](unsigned char c) { return std::tolower(c); });
        if (!column.emplace(name, i).second) throw Error(csv_path, "two columns are named '" + name + "'");
        // Prediction columns: "pred" (model "pred") and "pred:NAME"; "prob" / "prob:NAME" go with them.
        if (name == "pred" || (name.starts_with("pred:") && name.size() > 5))
            model_names.push_back(name == "pred" ? "pred" : name.substr(5));
    }
    if (!column.count("image") || model_names.empty())
        throw Error(csv_path, "manifest needs an 'image' column and at least one 'pred' or 'pred:NAME' column "
                              "(expected a header like image,pred[,prob][,gt])");
    auto column_name = [](const char* kind, const std::string& model) {
        return model == "pred" ? std::string(kind) : std::string(kind) + ":" + model;
    };
    for (const auto& entry : column) {
        const std::string& name = entry.first;  // a named reference: clang 14 lambdas cannot capture bindings
        if (name.starts_with("prob") &&
            std::none_of(model_names.begin(), model_names.end(),
                         [&](const std::string& model) { return column_name("prob", model) == name; }))
            throw Error(csv_path, "column '" + name + "' has no prediction column of the same model");
    }

    Dataset dataset;
    dataset.has_gt = column.count("gt") > 0;
    for (const std::string& model : model_names)
        dataset.models.push_back({escape_non_utf8(model), column.count(column_name("prob", model)) > 0, {}});
    std::map<std::string, int> line_of_name;
    for (std::size_t r = 1; r < rows.size(); ++r) {
        const std::vector<std::string>& fields = rows[r].fields;
        const int line_number = rows[r].line;
        auto cell = [&](const std::string& name) -> std::string {
            auto found = column.find(name);
            if (found == column.end() || found->second >= fields.size()) return "";
            std::string value = trimmed(fields[found->second]);
            if (value.empty()) return "";
            fs::path path(value);
            return (path.is_absolute() ? path : base / path).lexically_normal().string();
        };
        DatasetItem item;
        item.image = cell("image");
        item.gt = cell("gt");
        for (const std::string& model : model_names)
            item.predictions.push_back({cell(column_name("pred", model)), cell(column_name("prob", model))});
        const std::string& named = item.image.empty() ? item.predictions.front().pred : item.image;
        if (named.empty())
            throw Error(csv_path, "line " + std::to_string(line_number) + " names neither an image nor a prediction");
        item.name = escape_non_utf8(fs::path(named).stem().string());
        auto [previous, inserted] = line_of_name.emplace(item.name, line_number);
        if (!inserted)
            throw Error(csv_path, "lines " + std::to_string(previous->second) + " and " + std::to_string(line_number) +
                                      " both have the image name '" + item.name + "'; names must be unique");
        dataset.items.push_back(std::move(item));
    }
    if (dataset.items.empty()) throw Error(csv_path, "manifest lists no images");
    std::sort(dataset.items.begin(), dataset.items.end(),
              [](const DatasetItem& a, const DatasetItem& b) { return a.name < b.name; });
    return dataset;
}

}  // namespace sqasam
