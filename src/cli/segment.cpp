// sqasam segment: one image, explicit prompts -> masks.npy, logits.npy, low_res_logits.npy, scores.json.
#include <charconv>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "io/npy.hpp"
#include "sam/sam_model.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sam.hpp"

namespace sqasam::cli {
namespace {

struct SegmentOptions {
    ModelOptions model;
    std::string image, out;
    std::vector<std::string> points;
    std::string box;
    bool single_mask = false;
};

// "1.5,20" -> {1.5, 20}: exactly `count` finite numbers separated by commas, else an Error naming the option.
std::vector<float> parse_numbers(const std::string& text, size_t count, const std::string& option,
                                 const std::string& form) {
    std::vector<float> values;
    const char* p = text.data();
    const char* end = text.data() + text.size();
    while (true) {
        float value = 0;
        auto [next, ec] = std::from_chars(p, end, value);
        if (ec != std::errc() || !std::isfinite(value) || values.size() == count) break;
        values.push_back(value);
        if (next == end) {
            if (values.size() == count) return values;
            break;
        }
        if (*next != ',') break;
        p = next + 1;
    }
    throw Error(option, "expected " + form + " (" + std::to_string(count) + " numbers separated by commas), got '" +
                            text + "'");
}

Prompt parse_prompt(const SegmentOptions& options) {
    Prompt prompt;
    for (const std::string& text : options.points) {
        const std::vector<float> xy = parse_numbers(text, 2, "--point", "X,Y");
        prompt.points.push_back({xy[0], xy[1], 1});
    }
    if (!options.box.empty()) {
        const std::vector<float> b = parse_numbers(options.box, 4, "--box", "X0,Y0,X1,Y1");
        if (b[2] < b[0] || b[3] < b[1])
            throw Error("--box", "expected X0 <= X1 and Y0 <= Y1, got '" + options.box + "'");
        prompt.box = BoxPrompt{b[0], b[1], b[2], b[3]};
    }
    if (prompt.points.empty() && !prompt.box) throw Error("", "give at least one --point or a --box");
    return prompt;
}

void run_segment(const SegmentOptions& options) {
    // Everything that can be wrong with the input is checked before anything is written.
    const Prompt prompt = parse_prompt(options);
    const cv::Mat image = read_rgb_image(options.image);
    const Sam sam = load_model(options.model);
    SamPredictor predictor(sam);
    predictor.set_image(image);
    const MaskPrediction result = predictor.predict(
        prompt, {.output = options.single_mask ? MaskOutput::Single : MaskOutput::Multimask,
                 .return_logits = true,
                 .return_low_res_logits = true});

    const int64_t k = result.num_masks, h = result.height, w = result.width;
    const int64_t low_res = sam.model().hyper_params().low_res_size();
    // All file contents exist before the first file is written; each file is written atomically.
    const nlohmann::json scores = {{"iou_predictions", result.iou_predictions},
                                   {"stability_scores", result.stability_scores}};
    const std::vector<std::pair<std::string, std::string>> files = {
        {"masks.npy", npy_bytes(result.masks.data(), {k, h, w})},
        {"logits.npy", npy_bytes(result.logits.data(), {k, h, w})},
        {"low_res_logits.npy", npy_bytes(result.low_res_logits.data(), {k, low_res, low_res})},
        {"scores.json", scores.dump(2) + "\n"},
    };
    const std::filesystem::path out(options.out);
    std::error_code error;
    std::filesystem::create_directories(out, error);
    if (error) throw Error(options.out, "cannot create the output folder: " + error.message());
    for (const auto& [name, contents] : files) write_file_atomically(out / name, contents);
    std::cout << "sqasam segment: " << sam.info().describe() << "\n"
              << "wrote " << k << (k == 1 ? " mask" : " masks") << " of " << w << "x" << h << " to " << options.out
              << " (masks.npy, logits.npy, low_res_logits.npy, scores.json)\n";
}

}  // namespace

void add_segment_command(CLI::App& app) {
    auto options = std::make_shared<SegmentOptions>();
    CLI::App* cmd = app.add_subcommand(
        "segment", "Segment one image with SAM from explicit prompts; writes masks.npy (uint8 K x H x W), "
                   "logits.npy (float32 K x H x W), low_res_logits.npy (float32 K x 256 x 256) and scores.json");
    add_model_options(*cmd, options->model);
    cmd->add_option("--image", options->image, "image file (PNG, JPEG, TIFF, BMP; gray, RGB, 8 or 16-bit)")
        ->required();
    cmd->add_option("--point", options->points, "foreground point X,Y in image pixels (repeatable)");
    cmd->add_option("--box", options->box, "box X0,Y0,X1,Y1 in image pixels");
    cmd->add_flag("--single-mask", options->single_mask,
                  "one mask instead of SAM's three (MedSAM's own inference uses one)");
    cmd->add_option("--out", options->out, "output folder (created if needed)")->required();
    cmd->callback([options] { run_segment(*options); });
}

}  // namespace sqasam::cli
