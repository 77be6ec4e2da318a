// sqasam bench: times our SAM engine the way bench/peer_pytorch.py times the official one (same prompts, same
// repeats, medians) and prints one JSON line last, for bench/run.sh to put beside the peer's.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include "cli/commands.hpp"
#include "ops/ops.hpp"
#include "sam/sam_model.hpp"
#include "sam/transforms.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sam.hpp"

namespace sqasam::cli {
namespace {

struct BenchOptions {
    ModelOptions model;
    std::string image;
    int prompts = 8, repeat = 3;
    bool profile = false;
    bool low_res_logits = false;  // predict() also returns the low-res logits
};

// Prompt i of count: a foreground point spread along the image's diagonal band, with a box a quarter of the image
// wide and high around it, clipped to the image. Mirrors bench_prompts() in bench/peer_pytorch.py.
std::vector<Prompt> bench_prompts(int count, int width, int height) {
    std::vector<Prompt> prompts;
    for (int i = 0; i < count; ++i) {
        const double fraction = double(i + 1) / (count + 1);
        const double cx = fraction * width, cy = (0.25 + 0.5 * fraction) * height;
        Prompt prompt;
        prompt.points.push_back({float(cx), float(cy), 1});
        prompt.box = BoxPrompt{float(std::max(0.0, cx - width / 8.0)), float(std::max(0.0, cy - height / 8.0)),
                               float(std::min(width - 1.0, cx + width / 8.0)),
                               float(std::min(height - 1.0, cy + height / 8.0))};
        prompts.push_back(prompt);
    }
    return prompts;
}

// Without --image: a fixed-seed noise image of a typical colonoscopy frame's size. Timing does not depend on the
// pixels, only on the size (the encoder input is always 1024 x 1024; postprocessing scales with the image).
cv::Mat synthetic_image() {
    cv::Mat image(1080, 1920, CV_8UC3);
    cv::RNG rng(0);
    rng.fill(image, cv::RNG::UNIFORM, 0, 256);
    return image;
}

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    const size_t n = values.size();
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double peak_rss_mb() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss / 1024.0;  // ru_maxrss is KiB on Linux
}

using Clock = std::chrono::steady_clock;
double elapsed_ms(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double rounded(double value, int decimals) {
    const double scale = std::pow(10.0, decimals);
    return std::round(value * scale) / scale;
}

// The rate of the op layer's matrix products on this machine and precision: a Linear at the shape of ViT-B's qkv
// (4096 rows, 768 -> 2304), as bench_ops' BM_Linear measures it, over at least half a second.
double reference_product_gflops(Precision precision) {
    constexpr int64_t kRows = 4096, kIn = 768, kOut = 2304;
    std::mt19937 rng(0);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(kRows * kIn), weight(kOut * kIn), y(kRows * kOut);
    for (float& v : x) v = normal(rng);
    for (float& v : weight) v = 0.02f * normal(rng);
    const ops::Linear layer(weight.data(), nullptr, kOut, kIn, precision);
    layer.forward(x.data(), y.data(), kRows);  // warm-up: primitive creation, first touches
    int calls = 0;
    const auto start = Clock::now();
    for (; calls < 3 || elapsed_ms(start) < 500; ++calls) layer.forward(x.data(), y.data(), kRows);
    return 2.0 * kRows * kIn * kOut * calls / (elapsed_ms(start) * 1e6);
}

// One op profile's report, printed and as JSON: per op class, the time per unit (an encoder pass or a prompt) in
// thread-seconds over the thread count (the wall time the class would take alone), its share of the unit's wall
// time, and for the product classes the rate achieved, against `reference` (a lone Linear's rate here). What no op
// accounts for (the model's own loops, threads waiting at barriers) is the difference to the measured wall time.
nlohmann::ordered_json profile_report(const std::string& what, const ops::OpProfile& profile, int units,
                                     double wall_ms, double reference, Precision precision) {
    const double threads = ops::num_threads();
    double accounted_ms = 0, product_ms = 0, product_flops = 0;
    nlohmann::ordered_json classes = nlohmann::ordered_json::array();
    std::cout << what << " profile (" << units << " calls, " << to_string(precision) << ", " << threads
              << " threads): " << rounded(wall_ms, 2) << " ms per call\n";
    for (int i = 0; i < ops::kOpClassCount; ++i) {
        if (profile.calls[i] == 0) continue;
        const auto op = ops::OpClass(i);
        const double ms = profile.thread_seconds[i] * 1e3 / threads / units;
        accounted_ms += ms;
        nlohmann::ordered_json row = {{"class", ops::to_string(op)}, {"ms", rounded(ms, 3)},
                                      {"share", rounded(ms / wall_ms, 4)},
                                      {"calls_per_unit", rounded(double(profile.calls[i]) / units, 1)}};
        std::cout << "  " << ops::to_string(op) << ": " << rounded(ms, 2) << " ms (" << rounded(100 * ms / wall_ms, 1)
                  << " %)";
        if (ops::is_product(op)) {
            product_ms += ms;
            product_flops += profile.flops[i] / units;
            const double gflops = profile.flops[i] / units / (ms * 1e6);
            row["gflop_per_unit"] = rounded(profile.flops[i] / units / 1e9, 3);
            row["gflops"] = rounded(gflops, 1);
            std::cout << ", " << rounded(gflops, 1) << " GFLOP/s";
        }
        std::cout << ", " << rounded(double(profile.calls[i]) / units, 1) << " calls\n";
        classes.push_back(row);
    }
    const double other_ms = wall_ms - accounted_ms;
    const double product_rate = product_flops / (product_ms * 1e6);
    std::cout << "  not in any op (model loops, waits at barriers): " << rounded(other_ms, 2) << " ms ("
              << rounded(100 * other_ms / wall_ms, 1) << " %)\n"
              << "  products " << rounded(product_ms, 2) << " ms (" << rounded(100 * product_ms / wall_ms, 1)
              << " %) at " << rounded(product_rate, 1) << " GFLOP/s = " << rounded(100 * product_rate / reference, 1)
              << " % of a lone Linear here (" << rounded(reference, 1) << " GFLOP/s); everything else "
              << rounded(wall_ms - product_ms, 2) << " ms (" << rounded(100 * (1 - product_ms / wall_ms), 1) << " %)\n";
    return {{"calls", units},
            {"ms_per_call", rounded(wall_ms, 3)},
            {"product_ms", rounded(product_ms, 3)},
            {"non_product_share", rounded(1 - product_ms / wall_ms, 4)},
            {"product_gflop_per_call", rounded(product_flops / 1e9, 3)},
            {"product_gflops", rounded(product_rate, 1)},
            {"reference_linear_gflops", rounded(reference, 1)},
            {"product_share_of_reference", rounded(product_rate / reference, 4)},
            {"unattributed_ms", rounded(other_ms, 3)},
            {"classes", classes}};
}

// Runs call() `units` times under the op profile (after one unprofiled call: warm-up) and reports it.
template <class Call>
nlohmann::ordered_json profile_calls(const std::string& what, int units, double reference, Precision precision,
                                     const Call& call) {
    call(0);
    ops::start_profile();
    const auto start = Clock::now();
    for (int unit = 0; unit < units; ++unit) call(unit);
    const double wall_ms = elapsed_ms(start) / units;
    return profile_report(what, ops::stop_profile(), units, wall_ms, reference, precision);
}

void run_bench(const BenchOptions& options) {
    const cv::Mat image = options.image.empty() ? synthetic_image() : read_rgb_image(options.image);
    const std::vector<Prompt> prompts = bench_prompts(options.prompts, image.cols, image.rows);

    auto start = Clock::now();
    const Sam sam = load_model(options.model);
    const double load_ms = elapsed_ms(start);
    SamPredictor predictor(sam);
    const PredictOptions predict_options{.return_low_res_logits = options.low_res_logits};
    // The network alone (prompt encoder + mask decoder, all 256 x 256 low-res rows, no postprocessing to the image's
    // size), as the peer times the official prompt_encoder and mask_decoder calls: prompts already in the network's
    // input frame.
    const sam::SamModel& model = sam.model();
    const sam::Processing processing = sam::processing_for(sam.info().type);
    const sam::ImageFrame frame = sam::model_input(image, model.hyper_params().image_size, processing).frame;
    std::vector<sam::FramePrompt> frame_prompts;
    for (const Prompt& prompt : prompts) frame_prompts.push_back(sam::to_frame_prompt(prompt, frame, processing));

    // Pass 0 warms up (oneDNN primitive creation, first-touch allocations) and is not counted.
    std::vector<double> encoder_ms, decoder_ms, batched_ms_per_prompt, network_ms;
    for (int pass = 0; pass <= options.repeat; ++pass) {
        const bool warm_up = pass == 0;
        start = Clock::now();
        predictor.set_image(image);
        if (!warm_up) encoder_ms.push_back(elapsed_ms(start));
        for (const Prompt& prompt : prompts) {
            start = Clock::now();
            predictor.predict(prompt, predict_options);
            if (!warm_up) decoder_ms.push_back(elapsed_ms(start));
        }
        start = Clock::now();
        predictor.predict(prompts, predict_options);
        if (!warm_up) batched_ms_per_prompt.push_back(elapsed_ms(start) / double(prompts.size()));
        // Last, and its own copy of the decoder's image data gone before the next pass: peak RSS stays the
        // predictor's.
        const sam::DecoderImage decoder_image = model.prepare_decoder(predictor.image_embedding().data());
        for (const sam::FramePrompt& prompt : frame_prompts) {
            start = Clock::now();
            model.decode(decoder_image, {prompt});
            if (!warm_up) network_ms.push_back(elapsed_ms(start));
        }
    }

    std::vector<double> encoder_rounded;
    for (double ms : encoder_ms) encoder_rounded.push_back(rounded(ms, 2));
    nlohmann::ordered_json result = {  // ordered: the line reads like the peer's
        {"implementation", "sqasam"},
        {"model_type", to_string(sam.info().type)},
        {"image", options.image.empty() ? "synthetic" : options.image},
        {"image_size", {image.cols, image.rows}},
        {"prompts", options.prompts},
        {"repeat", options.repeat},
        {"low_res_logits", options.low_res_logits},
        {"load_ms", rounded(load_ms, 1)},
        {"encoder_ms", rounded(median(encoder_ms), 2)},
        {"decoder_ms_per_prompt", rounded(median(decoder_ms), 3)},
        {"decoder_ms_per_prompt_batched", rounded(median(batched_ms_per_prompt), 3)},
        {"decoder_network_ms_per_prompt", rounded(median(network_ms), 3)},
        {"encoder_ms_all", encoder_rounded},
        {"peak_rss_mb", rounded(peak_rss_mb(), 1)},
        {"threads", ops::num_threads()},
        {"precision", to_string(sam.model().encoder_precision())},  // after any fallback to fp32
        {"isa", ops::product_implementation(sam.model().encoder_precision())},
        {"bf16_speedup", rounded(bf16_speedup(), 2)},  // whether bf16 pays on this CPU, whatever ran
    };
    std::cout << "sqasam bench: " << sam.info().describe() << "\n"
              << "encoder " << result["encoder_ms"] << " ms, decoder " << result["decoder_ms_per_prompt"]
              << " ms/prompt (" << result["decoder_ms_per_prompt_batched"] << " batched; network alone "
              << result["decoder_network_ms_per_prompt"] << "), peak RSS "
              << result["peak_rss_mb"] << " MB, " << result["threads"] << " threads, "
              << result["precision"].get<std::string>() << " encoder\n"
              << (options.profile ? "" : result.dump() + "\n");
    if (!options.profile) return;
    // --repeat encoder passes on the preprocessed image, then --repeat predict() calls of each prompt (as timed
    // above: decoder, postprocessing to the image's size), each under the op profile.
    const Precision precision = model.encoder_precision();
    const double reference = reference_product_gflops(precision);
    const int size = model.hyper_params().image_size, embed = model.hyper_params().embedding_size();
    const std::vector<float> input = sam::model_input(image, size, processing).tensor;
    std::vector<float> embedding(int64_t(model.hyper_params().prompt_embed_dim) * embed * embed);
    result["profile"] = profile_calls("encoder", options.repeat, reference, precision,
                                      [&](int) { model.encode_image(input.data(), embedding.data()); });
    result["decoder_profile"] =
        profile_calls("decoder (predict, one prompt)", options.repeat * options.prompts, reference, precision,
                      [&](int unit) { predictor.predict(prompts[unit % prompts.size()], predict_options); });
    std::cout << result.dump() << "\n";
}

}  // namespace

void add_bench_command(CLI::App& app) {
    auto options = std::make_shared<BenchOptions>();
    CLI::App* cmd = app.add_subcommand(
        "bench", "Time the SAM engine: image encoder (set_image), mask decoder (predict, and the network alone) "
                 "medians and peak RSS; "
                 "the last line printed is JSON");
    add_model_options(*cmd, options->model);
    cmd->add_option("--image", options->image, "image file (default: a 1920x1080 noise image)");
    cmd->add_option("--prompts", options->prompts, "point + box prompts per image")
        ->check(CLI::Range(1, 10000))
        ->capture_default_str();
    cmd->add_option("--repeat", options->repeat, "timed passes after one warm-up pass")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->add_flag("--low-res-logits", options->low_res_logits,
                  "predict() also returns the 256 x 256 low-res logits, as the official predict does (without it, as "
                  "the scorer calls it, the decoder skips the low-res rows under the frame's padding)");
    cmd->add_flag("--profile", options->profile,
                  "then time --repeat more encoder passes and --repeat predict() calls of each prompt per op class "
                  "(matrix products and everything else), with the products' rate against a lone Linear's on this "
                  "machine; adds \"profile\" (encoder) and \"decoder_profile\" to the JSON");
    cmd->callback([options] { run_bench(*options); });
}

}  // namespace sqasam::cli
