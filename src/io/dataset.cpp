#include <algorithm>
#include <cctype>
#include <fstream>
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
        if (path.filename().string().starts_with(".") || !entry.is_regular_file() || !is_supported_image_file(path))
            continue;
        index[path.stem().string()].push_back(path);
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

std::vector<std::string> parse_csv_line(const std::string& line, const std::string& file, int line_number) {
    std::vector<std::string> fields(1);
    bool quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
        char c = line[i];
        if (quoted) {
            if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
                fields.back() += '"';
                ++i;
            } else if (c == '"') {
                quoted = false;
            } else {
                fields.back() += c;
            }
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            fields.emplace_back();
        } else if (c != '\r') {
            fields.back() += c;
        }
    }
    if (quoted) throw Error(file, "line " + std::to_string(line_number) + ": unterminated quoted field");
    return fields;
}

std::string trimmed(const std::string& text) {
    auto first = text.find_first_not_of(" \t");
    if (first == std::string::npos) return "";
    return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

}  // namespace

Dataset match_folders(const DatasetFolders& folders) {
    FolderIndex images = index_folder(folders.images, "images");
    FolderIndex preds = index_folder(folders.pred, "predictions");
    std::optional<FolderIndex> probs, gts;
    if (!folders.prob.empty()) probs = index_folder(folders.prob, "probability maps");
    if (!folders.gt.empty()) gts = index_folder(folders.gt, "ground truth");

    std::map<std::string, DatasetItem> by_name;
    for (const FolderIndex* index : {&images, &preds})
        for (const auto& entry : *index) by_name[entry.first].name = entry.first;

    Dataset dataset;
    dataset.has_prob = probs.has_value();
    dataset.has_gt = gts.has_value();
    for (auto& [name, item] : by_name) {
        item.image = pick(images, name, item.problem);
        item.pred = pick(preds, name, item.problem);
        if (probs) item.prob = pick(*probs, name, item.problem);
        if (gts) item.gt = pick(*gts, name, item.problem);
        dataset.items.push_back(std::move(item));
    }
    return dataset;
}

Dataset read_manifest(const std::string& csv_path) {
    std::ifstream in(csv_path);
    if (!in) throw Error(csv_path, "cannot open manifest");
    fs::path base = fs::path(csv_path).parent_path();

    std::string line;
    int line_number = 0;
    std::vector<std::string> header;
    while (header.empty() && std::getline(in, line)) {
        ++line_number;
        if (!trimmed(line).empty()) header = parse_csv_line(line, csv_path, line_number);
    }
    std::map<std::string, size_t> column;
    for (size_t i = 0; i < header.size(); ++i) {
        std::string name = trimmed(header[i]);
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        column[name] = i;
    }
    for (const char* required : {"image", "pred"})
        if (!column.count(required))
            throw Error(csv_path, std::string("manifest has no '") + required +
                                      "' column (expected a header with image,pred[,prob][,gt])");

    Dataset dataset;
    dataset.has_prob = column.count("prob") > 0;
    dataset.has_gt = column.count("gt") > 0;
    std::map<std::string, int> line_of_name;
    while (std::getline(in, line)) {
        ++line_number;
        if (trimmed(line).empty()) continue;
        std::vector<std::string> fields = parse_csv_line(line, csv_path, line_number);
        auto cell = [&](const char* name) -> std::string {
            auto found = column.find(name);
            if (found == column.end() || found->second >= fields.size()) return "";
            std::string value = trimmed(fields[found->second]);
            if (value.empty()) return "";
            fs::path path(value);
            return (path.is_absolute() ? path : base / path).lexically_normal().string();
        };
        DatasetItem item;
        item.image = cell("image");
        item.pred = cell("pred");
        item.prob = cell("prob");
        item.gt = cell("gt");
        const std::string& named = item.image.empty() ? item.pred : item.image;
        if (named.empty())
            throw Error(csv_path, "line " + std::to_string(line_number) + " names neither an image nor a prediction");
        item.name = fs::path(named).stem().string();
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
