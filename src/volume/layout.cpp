// nnU-Net's folder layout: images CASE_0000.nii.gz (a channel suffix), predictions and labels CASE.nii.gz,
// dataset.json with the class names.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"

namespace sqasam {
namespace fs = std::filesystem;
namespace {

// Volume files (and, for images, DICOM folders) of a folder by stem; a stem held by two entries is a clash.
struct FolderIndex {
    std::map<std::string, std::string> by_stem;
    std::map<std::string, std::string> clashes;  // stem -> message
};

FolderIndex index_folder(const std::string& folder, bool folders_too, const char* what) {
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) throw Error(folder, std::string("the ") + what + " folder does not exist");
    FolderIndex index;
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
        const bool is_folder = entry.is_directory(ec);
        if (is_folder ? !folders_too : !is_volume_path(entry.path())) continue;
        if (entry.path().filename().string().front() == '.') continue;
        const std::string stem = volume_stem(entry.path());
        auto [it, inserted] = index.by_stem.try_emplace(stem, entry.path().string());
        if (!inserted)
            index.clashes[stem] = "two " + std::string(what) + " entries for one case: " +
                                  fs::path(it->second).filename().string() + " and " +
                                  entry.path().filename().string();
    }
    if (ec) throw Error(folder, "cannot list the folder: " + ec.message());
    return index;
}

std::string channel_suffix(const std::string& channel) {
    const bool digits = !channel.empty() && std::all_of(channel.begin(), channel.end(), ::isdigit);
    if (!digits) return "_" + channel;
    char text[16];
    std::snprintf(text, sizeof text, "_%04d", std::stoi(channel));
    return text;
}

bool ends_with(const std::string& text, const std::string& tail) {
    return text.size() > tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

std::string find_dataset_json(const VolumeFolders& folders) {
    if (!folders.dataset_json.empty()) return folders.dataset_json;
    std::vector<fs::path> candidates{fs::path(folders.images).parent_path() / "dataset.json",
                                     fs::path(folders.images) / "dataset.json"};
    for (const VolumeModel& model : folders.preds) candidates.push_back(fs::path(model.folder) / "dataset.json");
    std::error_code ec;
    for (const fs::path& candidate : candidates)
        if (fs::is_regular_file(candidate, ec)) return candidate.string();
    return "";
}

}  // namespace

std::map<int, std::string> read_class_names(const std::string& dataset_json) {
    std::ifstream in(dataset_json);
    if (!in) throw Error(dataset_json, "cannot read the file");
    const nlohmann::json document = nlohmann::json::parse(in, nullptr, false);
    if (document.is_discarded() || !document.is_object()) throw Error(dataset_json, "not a JSON object");
    std::map<int, std::string> names;
    const auto labels = document.find("labels");
    if (labels == document.end() || !labels->is_object()) return names;
    for (const auto& [key, value] : labels->items()) {
        int label = 0;
        std::string name;
        if (value.is_number_integer()) {  // nnU-Net v2: "liver": 1
            label = value.get<int>();
            name = key;
        } else if (value.is_string() && !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit)) {  // v1
            label = std::stoi(key);
            name = value.get<std::string>();
        } else {
            continue;  // region-based labels ("tumor": [1, 2]) name no single label
        }
        if (label != 0) names[label] = name;
    }
    return names;
}

VolumeDataset match_volume_folders(const VolumeFolders& folders) {
    if (folders.preds.empty()) throw Error("", "give at least one --pred folder");
    VolumeDataset dataset;
    dataset.models = folders.preds;
    std::set<std::string> model_names;
    for (const VolumeModel& model : dataset.models)
        if (!model_names.insert(model.name).second)
            throw Error(model.folder, "two --pred folders named '" + model.name + "'; name them with --pred NAME=DIR");
    dataset.has_gt = !folders.gt.empty();
    dataset.has_prob = folders.prob;

    const FolderIndex images = index_folder(folders.images, true, "image");
    std::vector<FolderIndex> preds;
    for (const VolumeModel& model : dataset.models) preds.push_back(index_folder(model.folder, false, "prediction"));
    const FolderIndex gt = dataset.has_gt ? index_folder(folders.gt, false, "ground-truth") : FolderIndex{};

    // Cases: every prediction's stem, and every image with the channel's suffix. An image without the suffix is a
    // case of its own only when it is not another channel of a known case.
    const std::string suffix = channel_suffix(folders.channel);
    std::set<std::string> names;
    for (const FolderIndex& pred : preds)
        for (const auto& [stem, path] : pred.by_stem) names.insert(stem);
    for (const auto& [stem, path] : images.by_stem)
        if (ends_with(stem, suffix)) names.insert(stem.substr(0, stem.size() - suffix.size()));
    for (const auto& [stem, path] : images.by_stem) {
        if (ends_with(stem, suffix)) continue;
        const size_t cut = stem.rfind('_');
        if (cut != std::string::npos && names.count(stem.substr(0, cut))) continue;
        names.insert(stem);
    }

    auto lookup = [](const FolderIndex& index, const std::string& stem, std::string& problem) -> std::string {
        if (auto clash = index.clashes.find(stem); clash != index.clashes.end())
            problem += (problem.empty() ? "" : "; ") + clash->second;
        auto found = index.by_stem.find(stem);
        return found == index.by_stem.end() ? "" : found->second;
    };
    for (const std::string& name : names) {
        VolumeCase item;
        item.name = name;
        item.image = lookup(images, name + suffix, item.problem);
        if (item.image.empty()) item.image = lookup(images, name, item.problem);
        for (size_t m = 0; m < preds.size(); ++m) {
            item.pred.push_back(lookup(preds[m], name, item.problem));
            std::string prob;
            if (dataset.has_prob) {
                const fs::path npz = fs::path(dataset.models[m].folder) / (name + ".npz");
                if (fs::exists(npz)) prob = npz.string();
            }
            item.prob.push_back(prob);
        }
        if (dataset.has_gt) item.gt = lookup(gt, name, item.problem);
        dataset.cases.push_back(std::move(item));
    }

    dataset.dataset_json = find_dataset_json(folders);
    if (!dataset.dataset_json.empty()) dataset.class_names = read_class_names(dataset.dataset_json);
    return dataset;
}

}  // namespace sqasam
