// Our predictor against the official implementation (tests/reference/gen_predictor.py): the resamplers against
// Pillow and skimage, then whole cases (image -> input tensor -> embedding -> masks) for SAM and MedSAM.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <iterator>
#include <stdexcept>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sam/checkpoint.hpp"
#include "sam/image_resize.hpp"
#include "sam/sam_model.hpp"
#include "sam/transforms.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sam.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace sqasam;
using test::NpyArray;
using test::read_npy;

// Tolerances of the differential checks.
constexpr double kEmbeddingRelativeL2 = 1e-4;
constexpr double kMinMaskIou = 0.999;
constexpr double kLogitTolerance = 1e-3;  // x max |reference logit|
constexpr double kIouPredictionTolerance = 1e-4;
constexpr double kProbabilityTolerance = 1e-3;
constexpr double kStabilityTolerance = 2e-3;  // a ratio of pixel counts: a few boundary pixels may flip

fs::path reference(const fs::path& relative = {}) { return fs::path(test::ref_dir()) / "predictor" / relative; }

NpyArray read_array(const fs::path& path) { return read_npy(path.string()); }

json read_json(const fs::path& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("missing reference file " + path.string());
    return json::parse(in);
}

// An 8-bit H x W (gray) or H x W x C array as a cv::Mat.
cv::Mat image_from(const NpyArray& array) {
    const int channels = array.shape.size() == 3 ? static_cast<int>(array.shape[2]) : 1;
    cv::Mat image(static_cast<int>(array.shape[0]), static_cast<int>(array.shape[1]), CV_8UC(channels));
    std::copy(array.values.begin(), array.values.end(), image.data);
    return image;
}

size_t count_differences(const cv::Mat& ours, const NpyArray& expected, double* max_diff) {
    size_t differences = 0;
    *max_diff = 0;
    const cv::Mat flat = ours.isContinuous() ? ours : ours.clone();
    for (size_t i = 0; i < expected.values.size(); ++i) {
        const double diff = std::fabs(double(flat.data[i]) - expected.values[i]);
        differences += diff != 0;
        *max_diff = std::max(*max_diff, diff);
    }
    return differences;
}

Prompt prompt_from(const json& spec) {
    Prompt prompt;
    for (size_t i = 0; i < spec["points"].size(); ++i)
        prompt.points.push_back({spec["points"][i][0].get<float>(), spec["points"][i][1].get<float>(),
                                 spec["labels"][i].get<int>()});
    if (!spec["box"].is_null())
        prompt.box = BoxPrompt{spec["box"][0].get<float>(), spec["box"][1].get<float>(), spec["box"][2].get<float>(),
                               spec["box"][3].get<float>()};
    return prompt;
}

// The official predict(multimask_output=...), with the full-size logits the checks compare.
PredictOptions official(bool multimask_output) {
    return {.output = multimask_output ? MaskOutput::Multimask : MaskOutput::Single,
            .return_logits = true,
            .return_low_res_logits = true};
}

struct ReferenceCase {
    json spec;
    fs::path dir;
    cv::Mat image;
};

// nullopt when the case was not generated (the opt-in full-size models).
std::optional<ReferenceCase> find_case(const std::string& name) {
    for (const json& spec : read_json(reference("cases/index.json")))
        if (spec["name"] == name) {
            const fs::path dir = reference("cases") / name;
            return ReferenceCase{spec, dir, image_from(read_array(dir / "image.npy"))};
        }
    return std::nullopt;
}

ReferenceCase require_case(const std::string& name) {
    auto found = find_case(name);
    if (!found) throw std::runtime_error("case " + name + " missing from " + reference("cases/index.json").string());
    return *found;
}

// Compares one prompt's prediction with the official one; prints the measured differences.
void expect_matches(const MaskPrediction& ours, const ReferenceCase& c, const json& prompt) {
    const std::string name = prompt["name"];
    const std::string prefix = (c.dir / name).string() + "_";
    SCOPED_TRACE(c.spec["name"].get<std::string>() + "/" + name);
    const bool medsam = c.spec["processing"] == "medsam";
    const NpyArray masks = read_npy(prefix + "masks.npy");
    const NpyArray low_res = read_npy(prefix + "low_res_logits.npy");
    const NpyArray iou = read_npy(prefix + "iou_predictions.npy");
    ASSERT_EQ(ours.num_masks, static_cast<int>(iou.values.size()));
    ASSERT_EQ(ours.height, c.spec["height"].get<int>());
    ASSERT_EQ(ours.width, c.spec["width"].get<int>());
    ASSERT_EQ(ours.masks.size(), masks.values.size());

    const size_t plane = static_cast<size_t>(ours.height) * ours.width;
    double worst_iou = 1.0;
    for (int k = 0; k < ours.num_masks; ++k)
        worst_iou =
            std::min(worst_iou, test::mask_iou(ours.masks.data() + k * plane, masks.values.data() + k * plane, plane));
    EXPECT_GE(worst_iou, kMinMaskIou);

    const double low_res_diff = test::max_abs_diff(ours.low_res_logits, low_res.values);
    EXPECT_LE(low_res_diff, kLogitTolerance * test::max_abs(low_res.values));
    const double iou_diff = test::max_abs_diff(ours.iou_predictions, iou.values);
    EXPECT_LE(iou_diff, kIouPredictionTolerance);

    double full_diff = 0, full_bound = 0;
    if (medsam) {  // MedSAM's output is the upsampled probability; ours carries it as log-odds
        const NpyArray probabilities = read_npy(prefix + "probabilities.npy");
        std::vector<float> ours_p(ours.logits.size());
        for (size_t i = 0; i < ours_p.size(); ++i) ours_p[i] = 1.0f / (1.0f + std::exp(-ours.logits[i]));
        full_diff = test::max_abs_diff(ours_p, probabilities.values);
        full_bound = kProbabilityTolerance;
    } else {
        const NpyArray logits = read_npy(prefix + "logits.npy");
        full_diff = test::max_abs_diff(ours.logits, logits.values);
        full_bound = kLogitTolerance * test::max_abs(logits.values);
    }
    EXPECT_LE(full_diff, full_bound);

    const std::vector<float> stability = prompt["stability_scores"].get<std::vector<float>>();
    const double stability_diff = test::max_abs_diff(ours.stability_scores, stability);
    EXPECT_LE(stability_diff, kStabilityTolerance);

    std::cout << "[ measured ] " << c.spec["name"].get<std::string>() << "/" << name << ": K=" << ours.num_masks
              << " min mask IoU " << worst_iou << ", " << (medsam ? "probability" : "logit")
              << " max diff " << full_diff << " (bound " << full_bound << "), low-res max diff " << low_res_diff
              << ", IoU-prediction max diff " << iou_diff << ", stability max diff " << stability_diff << "\n";
}

void expect_embedding_matches(const std::vector<float>& ours, const ReferenceCase& c) {
    const double rel = test::relative_l2(ours, read_array(c.dir / "embedding.npy").values);
    EXPECT_LE(rel, kEmbeddingRelativeL2);
    std::cout << "[ measured ] " << c.spec["name"].get<std::string>() << ": embedding relative L2 " << rel << "\n";
}

// SAM: the input tensor must be the official one bit for bit, then the embedding and every prompt's outputs.
void check_sam_case(const ReferenceCase& c) {
    const Sam sam = Sam::load(reference(c.spec["model"].get<std::string>()).string(),
                              model_type_from_string(c.spec["model_type"]));
    const NpyArray expected_input = read_array(c.dir / "input.npy");
    const sam::ModelInput input = sam::sam_model_input(c.image, sam.model().hyper_params().image_size);
    EXPECT_EQ(test::max_abs_diff(input.tensor, expected_input.values), 0.0) << "input tensor not bit-exact";

    SamPredictor predictor(sam);
    predictor.set_image(c.image);
    EXPECT_EQ(predictor.original_size(), c.image.size());
    expect_embedding_matches(predictor.image_embedding(), c);
    for (const json& prompt : c.spec["prompts"])
        expect_matches(predictor.predict(prompt_from(prompt), official(prompt["multimask"].get<bool>())), c, prompt);
}

// ---- the resamplers ----

TEST(PillowResize, MatchesPillowBitForBit) {
    const json index = read_json(reference("pillow/index.json"));
    ASSERT_FALSE(index.empty());
    for (const json& entry : index) {
        const cv::Mat source = image_from(read_array(reference("pillow") / entry["source"].get<std::string>()));
        const NpyArray expected = read_array(reference("pillow") / entry["output"].get<std::string>());
        const cv::Size size(entry["width"].get<int>(), entry["height"].get<int>());
        const cv::Mat ours = sam::pillow_resize_bilinear(source, size);
        ASSERT_EQ(ours.size(), size);
        double max_diff = 0;
        EXPECT_EQ(count_differences(ours, expected, &max_diff), 0u)
            << entry["output"] << " (" << source.cols << "x" << source.rows << " -> " << size << "), max diff "
            << max_diff;
    }
}

TEST(SkimageResize, MatchesMedsamResize) {
    const json index = read_json(reference("skimage/index.json"));
    ASSERT_FALSE(index.empty());
    for (const json& entry : index) {
        const cv::Mat source = image_from(read_array(reference("skimage") / entry["source"].get<std::string>()));
        const NpyArray expected = read_array(reference("skimage") / entry["output"].get<std::string>());
        const cv::Mat ours = sam::skimage_resize_cubic(source, {1024, 1024});
        double max_diff = 0;
        const size_t differences = count_differences(ours, expected, &max_diff);
        std::cout << "[ measured ] skimage resize " << entry["output"] << ": " << differences << " of "
                  << expected.values.size() << " values differ, max diff " << max_diff << "\n";
        EXPECT_EQ(differences, 0u) << entry["output"];
    }
}

// upsample_bilinear2d's per-pixel formula, computed directly: the reference for the two-pass resampler.
std::vector<float> interpolate_per_pixel(const std::vector<float>& in, cv::Size in_size, cv::Size out_size) {
    auto taps = [](int in_n, int out_n, int o, int& i0, int& i1, float& lambda) {
        double source = in_n == out_n ? o : std::max(0.0, double(float(in_n) / out_n) * (o + 0.5) - 0.5);
        i0 = static_cast<int>(source);
        i1 = i0 + (i0 < in_n - 1 && in_n != out_n ? 1 : 0);
        lambda = static_cast<float>(source - i0);
    };
    std::vector<float> out(out_size.area());
    for (int y = 0; y < out_size.height; ++y)
        for (int x = 0; x < out_size.width; ++x) {
            int y0, y1, x0, x1;
            float ly, lx;
            taps(in_size.height, out_size.height, y, y0, y1, ly);
            taps(in_size.width, out_size.width, x, x0, x1, lx);
            const float* row0 = in.data() + y0 * in_size.width;
            const float* row1 = in.data() + y1 * in_size.width;
            // a (1 - l) + b l, each with its multiply-add fused as sam::blend writes it out
            const float t0 = std::fma(row0[x1], lx, row0[x0] * (1.0f - lx));
            const float t1 = std::fma(row1[x1], lx, row1[x0] * (1.0f - lx));
            out[y * out_size.width + x] = std::fma(t1, ly, t0 * (1.0f - ly));
        }
    return out;
}

// Sizes up and down, equal, SAM's 1024 x 576 -> 1920 x 1080, and a shrink by more than 2 along x (the x pass
// gathers instead of permuting).
TEST(Interpolate, TwoPassesEqualThePerPixelFormula) {
    std::vector<float> scratch;
    for (const auto& [in_size, out_size] :
         {std::pair{cv::Size(16, 12), cv::Size(64, 40)}, std::pair{cv::Size(16, 12), cv::Size(7, 5)},
          std::pair{cv::Size(16, 12), cv::Size(16, 12)}, std::pair{cv::Size(16, 12), cv::Size(51, 12)},
          std::pair{cv::Size(1024, 576), cv::Size(1920, 1080)}, std::pair{cv::Size(80, 12), cv::Size(21, 5)}}) {
        std::vector<float> low(in_size.area());
        for (size_t i = 0; i < low.size(); ++i) low[i] = std::sin(0.37f * i) * 5.0f;
        const sam::BilinearResampler resample(in_size, out_size, out_size);
        ASSERT_EQ(resample.out_size(), out_size);
        std::vector<float> ours(out_size.area());
        resample(low.data(), ours.data(), scratch);
        const std::vector<float> expected = interpolate_per_pixel(low, in_size, out_size);
        EXPECT_EQ(test::max_abs_diff(ours, expected), 0.0) << in_size << " -> " << out_size;
    }
}

TEST(Interpolate, CropIsTheTopLeftOfTheFullResize) {
    std::vector<float> low(16 * 16);
    for (size_t i = 0; i < low.size(); ++i) low[i] = std::sin(0.37f * i) * 5.0f;
    std::vector<float> full(64 * 64), crop(40 * 51), scratch;
    sam::BilinearResampler({16, 16}, {64, 64}, {64, 64})(low.data(), full.data(), scratch);
    const sam::BilinearResampler cropped({16, 16}, {64, 64}, {51, 40});
    EXPECT_EQ(cropped.source_rows(), 11);  // rows 0..10 of the input reach the first 40 output rows
    cropped(low.data(), crop.data(), scratch);
    for (int y = 0; y < 40; ++y)
        for (int x = 0; x < 51; ++x) ASSERT_EQ(crop[y * 51 + x], full[y * 64 + x]) << x << "," << y;
}

constexpr int kLowRes = 256;
constexpr size_t kLowPlane = size_t(kLowRes) * kLowRes;
// Values at and near the thresholds (0, +-1, denormals, and a tiny normal).
constexpr float kSpecialLogits[] = {0.0f, -0.0f, 1e-40f, -1e-40f, 1e-30f, 1.0f, -1.0f, 1.0000001f, -0.9999999f};

// Noise: hardly a low-res row lies in one band, so postprocess() resamples nearly every output row.
sam::DecoderOutput random_logits() {
    sam::DecoderOutput decoded;
    decoded.iou_predictions = {0.1f, 0.2f, 0.3f, 0.4f};
    decoded.low_res_logits.resize(4 * kLowPlane);
    cv::RNG rng(7);
    for (float& v : decoded.low_res_logits)
        v = rng.uniform(0, 8) == 0 ? kSpecialLogits[rng.uniform(0, 9)] : rng.uniform(-3.0f, 3.0f);
    return decoded;
}

// Smooth, as real masks are: many output rows whose low-res rows lie in one band, which postprocess() fills
// without resampling. Mask 1: bands of rows from -5 to 5 with a ripple along x, and one NaN in a row that lies
// above 1 otherwise (the row must be resampled: the NaN reaches the pixels around it); mask 2: a blob; mask 3:
// blocks of constant rows at the threshold values (each must be resampled, not filled) and just inside the bands.
sam::DecoderOutput smooth_logits() {
    sam::DecoderOutput decoded;
    decoded.iou_predictions = {0.1f, 0.2f, 0.3f, 0.4f};
    decoded.low_res_logits.resize(4 * kLowPlane);
    const float block_values[] = {0.0f, -0.0f, 1e-40f, -1e-40f, 1e-30f, 1.0f, -1.0f, 1.0000001f, -0.9999999f,
                                  1.001f, 0.999f, -0.999f, -1.001f, 2e-30f, -2e-30f, 3e29f, -3e29f, 5e30f, -5e30f};
    for (int y = 0; y < kLowRes; ++y)
        for (int x = 0; x < kLowRes; ++x) {
            float* plane = decoded.low_res_logits.data() + size_t(y) * kLowRes + x;
            plane[kLowPlane] = 5.0f * std::sin(0.04f * y) + 0.01f * std::sin(0.3f * x);
            plane[2 * kLowPlane] = 4.0f - (float((x - 120) * (x - 120)) + float((y - 60) * (y - 60))) / 400.0f;
            plane[3 * kLowPlane] = block_values[(y / 8) % std::size(block_values)];
        }
    decoded.low_res_logits[kLowPlane + 40 * kLowRes + 100] = std::numeric_limits<float>::quiet_NaN();
    return decoded;
}

// postprocess() streams rows through both resamplers and fills rows whose logits lie in one band; the whole-image
// passes are the reference. Masks, stability scores and logits must be the same bit for bit.
class Postprocess : public ::testing::TestWithParam<bool> {};

TEST_P(Postprocess, StreamedRowsEqualTheWholeImagePasses) {
    const size_t low_plane = kLowPlane;
    const sam::DecoderOutput decoded = GetParam() ? smooth_logits() : random_logits();
    const sam::MaskRange range{1, 3};  // MaskOutput::Multimask's
    for (const auto& [processing, original, input] :
         {std::tuple{sam::Processing::Sam, cv::Size(1920, 1080), cv::Size(1024, 576)},
          std::tuple{sam::Processing::Sam, cv::Size(333, 517), cv::Size(660, 1024)},
          std::tuple{sam::Processing::MedSam, cv::Size(301, 205), cv::Size(1024, 1024)}}) {
        const sam::ImageFrame frame{original, input, 1024};
        const sam::MaskUpsampling upsampling(frame, kLowRes, processing);
        const bool medsam = processing == sam::Processing::MedSam;
        const MaskPrediction with_logits = sam::postprocess(decoded, upsampling,
                                                            {.return_logits = true, .return_low_res_logits = true});
        const MaskPrediction masks_only = sam::postprocess(decoded, upsampling, {});
        // The top rows postprocessing reads, as the decoder leaves them without low-res logits: the same masks.
        // (SAM: the frame's last row of the image, input.height - 1, reads low-res rows up to
        // floor((input.height - 0.5) / 4 - 0.5) + 1.)
        const int rows_read = upsampling.rows_read();
        const int last_row_read = int(std::floor((input.height - 0.5) * kLowRes / 1024 - 0.5)) + 1;
        EXPECT_EQ(rows_read, medsam ? kLowRes : std::min(last_row_read + 1, kLowRes)) << original;
        auto top_rows = [&](int rows) {
            sam::DecoderOutput top{.low_res_logits = {}, .iou_predictions = decoded.iou_predictions};
            for (int k = 0; k < 4; ++k) {
                const auto plane = decoded.low_res_logits.begin() + k * low_plane;
                top.low_res_logits.insert(top.low_res_logits.end(), plane, plane + rows * kLowRes);
            }
            return top;
        };
        const MaskPrediction from_top_rows = sam::postprocess(top_rows(rows_read), upsampling, {});
        EXPECT_EQ(from_top_rows.masks, masks_only.masks) << original;
        EXPECT_EQ(from_top_rows.stability_scores, masks_only.stability_scores) << original;
        EXPECT_TRUE(from_top_rows.low_res_logits.empty() && masks_only.low_res_logits.empty());
        // the low-res logits as they came, bit for bit (NaN included)
        const std::vector<float>& low_res = with_logits.low_res_logits;
        ASSERT_EQ(low_res.size(), decoded.low_res_logits.size() - low_plane);
        EXPECT_EQ(std::memcmp(low_res.data(), decoded.low_res_logits.data() + low_plane, low_res.size() * 4), 0);
        EXPECT_THROW(sam::postprocess(top_rows(rows_read - 1), upsampling, {}), std::logic_error);
        const sam::BilinearResampler to_frame({kLowRes, kLowRes}, {1024, 1024}, input);
        const sam::BilinearResampler to_original(medsam ? cv::Size(kLowRes, kLowRes) : input, original, original);
        const size_t plane = size_t(original.area());
        std::vector<float> source(medsam ? low_plane : size_t(input.area())), full(plane), scratch;
        for (int k = 0; k < range.count; ++k) {
            const float* low = decoded.low_res_logits.data() + (range.first + k) * low_plane;
            if (medsam) {
                for (size_t i = 0; i < low_plane; ++i) source[i] = 1.0f / (1.0f + std::exp(-low[i]));
            } else {
                to_frame(low, source.data(), scratch);
            }
            to_original(source.data(), full.data(), scratch);
            const float threshold = medsam ? 0.5f : 0.0f;
            int64_t above_plus_one = 0, above_minus_one = 0, mask_differences = 0, logit_differences = 0;
            for (size_t i = 0; i < plane; ++i) {
                const uint8_t expected_mask = full[i] > threshold;
                mask_differences += with_logits.masks[k * plane + i] != expected_mask;
                mask_differences += masks_only.masks[k * plane + i] != expected_mask;
                if (!medsam) {
                    const float logit = with_logits.logits[k * plane + i];
                    logit_differences += logit != full[i] && !(std::isnan(logit) && std::isnan(full[i]));
                    above_plus_one += full[i] > 1.0f;
                    above_minus_one += full[i] > -1.0f;
                }
            }
            EXPECT_EQ(mask_differences, 0) << original << " mask " << k;
            EXPECT_EQ(logit_differences, 0) << original << " mask " << k;
            EXPECT_EQ(masks_only.stability_scores[k], with_logits.stability_scores[k]) << original << " mask " << k;
            if (!medsam)
                EXPECT_EQ(with_logits.stability_scores[k], float(double(above_plus_one) / double(above_minus_one)))
                    << original << " mask " << k;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Logits, Postprocess, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Smooth" : "Random"; });

// The cases feed both implementations the pixels Pillow decoded; the CLI reads files with OpenCV. Equal pixels make
// the differential results hold from the image file on.
TEST(ImageDecoding, OpenCvReadsTheCaseImagesAsPillowDoes) {
    for (const char* name : {"small_downscaled", "small_upscaled", "small_gray"}) {
        const ReferenceCase c = require_case(name);
        cv::Mat ours = read_rgb_image(c.spec["image_file"].get<std::string>());
        if (c.image.channels() == 1) cv::extractChannel(ours, ours, 0);
        ASSERT_EQ(ours.size(), c.image.size()) << name;
        EXPECT_EQ(cv::norm(ours, c.image, cv::NORM_INF), 0.0) << name;
    }
}

// ---- SAM, official SamPredictor ----

TEST(SamPredictorVsOfficial, SmallModelDownscaledRgb) { check_sam_case(require_case("small_downscaled")); }
TEST(SamPredictorVsOfficial, SmallModelUpscaledRgb) { check_sam_case(require_case("small_upscaled")); }
TEST(SamPredictorVsOfficial, SmallModelGray) { check_sam_case(require_case("small_gray")); }
TEST(SamPredictorVsOfficial, VitB) { check_sam_case(require_case("vit_b_downscaled")); }

void check_opt_in_case(const std::string& name) {
    auto found = find_case(name);
    if (!found) GTEST_SKIP() << name << " is generated only with SQASAM_FULL_MODELS=1 (gen_predictor.py)";
    check_sam_case(*found);
}
TEST(SamPredictorVsOfficial, VitLOptIn) { check_opt_in_case("vit_l_upscaled"); }
TEST(SamPredictorVsOfficial, VitHOptIn) { check_opt_in_case("vit_h_upscaled"); }

// ---- MedSAM, official MedSAM_Inference.py ----

// From MedSAM's own 1024x1024 uint8 image onward (min-max scaling, encoder, box prompt, sigmoid upsampling), on the
// small model through the internal steps SamPredictor uses.
void check_medsam_after_resize(const std::string& name) {
    const ReferenceCase c = require_case(name);
    const sam::Checkpoint checkpoint = sam::load_checkpoint(reference(c.spec["model"].get<std::string>()).string());
    const sam::SamHyperParams hp = sam::detect_hyper_params(checkpoint);
    const sam::SamModel model(checkpoint, hp);

    const cv::Mat resized = image_from(read_array(c.dir / "resized_1024.npy"));
    const std::vector<float> tensor = sam::medsam_tensor(resized);
    EXPECT_EQ(test::max_abs_diff(tensor, read_array(c.dir / "input.npy").values), 0.0)
        << "input tensor not bit-exact";
    std::vector<float> embedding(static_cast<size_t>(hp.prompt_embed_dim) * hp.embedding_size() * hp.embedding_size());
    model.encode_image(tensor.data(), embedding.data());
    expect_embedding_matches(embedding, c);

    const sam::ImageFrame frame{c.image.size(), {hp.image_size, hp.image_size}, hp.image_size};
    const sam::MaskUpsampling upsampling(frame, hp.low_res_size(), sam::Processing::MedSam);
    const sam::DecoderImage image = model.prepare_decoder(embedding.data());
    for (const json& prompt : c.spec["prompts"])
        expect_matches(sam::predict_masks(model, upsampling, image, {prompt_from(prompt)}, official(false)).front(), c,
                       prompt);
}
TEST(MedSamVsOfficial, SmallModelAfterResizeRgb) { check_medsam_after_resize("medsam_small_upscaled"); }
TEST(MedSamVsOfficial, SmallModelAfterResizeGray) { check_medsam_after_resize("medsam_small_gray"); }

// The whole MedSAM pipeline through the public API (ModelType::MedSam on the vit_b weights), resize included.
TEST(MedSamVsOfficial, VitBFullPipeline) {
    const ReferenceCase c = require_case("medsam_upscaled");
    const Sam sam = Sam::load(reference(c.spec["model"].get<std::string>()).string(), ModelType::MedSam);
    EXPECT_EQ(sam.info().type, ModelType::MedSam);
    const sam::ModelInput input = sam::medsam_model_input(c.image, sam.model().hyper_params().image_size);
    EXPECT_EQ(test::max_abs_diff(input.tensor, read_array(c.dir / "input.npy").values), 0.0)
        << "input tensor not bit-exact";
    SamPredictor predictor(sam);
    predictor.set_image(c.image);
    expect_embedding_matches(predictor.image_embedding(), c);
    for (const json& prompt : c.spec["prompts"])
        expect_matches(predictor.predict(prompt_from(prompt), official(false)), c, prompt);
}

// ---- the API itself, on the small model ----

class SmallSam : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        sam_ = new Sam(Sam::load(reference("models/small.pth").string()));
        predictor_ = new SamPredictor(*sam_);
        image_ = require_case("small_upscaled").image;
        predictor_->set_image(image_);
    }
    static void TearDownTestSuite() {
        delete predictor_;
        delete sam_;
    }
    static Sam* sam_;
    static SamPredictor* predictor_;
    static cv::Mat image_;
};
Sam* SmallSam::sam_ = nullptr;
SamPredictor* SmallSam::predictor_ = nullptr;
cv::Mat SmallSam::image_;

TEST(ModelTypes, NamesRoundTrip) {
    for (ModelType type : {ModelType::Auto, ModelType::VitB, ModelType::VitL, ModelType::VitH, ModelType::MedSam,
                           ModelType::VitT, ModelType::LiteMedSam})
        EXPECT_EQ(model_type_from_string(to_string(type)), type);
    EXPECT_THROW(model_type_from_string("vit_x"), Error);
}

TEST_F(SmallSam, ReadsTheArchitectureOffTheCheckpoint) {
    EXPECT_EQ(sam_->info().type, ModelType::Custom);
    EXPECT_EQ(sam_->info().encoder_embed_dim, 64);
    EXPECT_EQ(sam_->info().encoder_depth, 2);
    EXPECT_EQ(sam_->info().global_attn_indexes, std::vector<int>{1});
    EXPECT_NE(sam_->info().describe().find("custom: ViT encoder, embed 64, depth 2, 2 heads"), std::string::npos)
        << sam_->info().describe();
}

TEST_F(SmallSam, RefusesAModelTypeTheCheckpointIsNot) {
    const std::string path = reference("models/small.pth").string();
    try {
        Sam::load(path, ModelType::VitB);
        FAIL() << "expected sqasam::Error";
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), path);
        EXPECT_NE(e.problem().find("vit_b"), std::string::npos) << e.what();
    }
}

TEST_F(SmallSam, RejectsBadPrompts) {
    EXPECT_THROW(predictor_->predict(Prompt{}), Error);
    EXPECT_THROW(predictor_->predict(Prompt{{{10, 10, 2}}, std::nullopt}), Error);
    EXPECT_THROW(predictor_->predict(Prompt{{{NAN, 10, 1}}, std::nullopt}), Error);
    EXPECT_THROW(predictor_->predict(Prompt{{}, BoxPrompt{50, 50, 10, 60}}), Error);
    SamPredictor fresh(*sam_);
    EXPECT_FALSE(fresh.has_image());
    EXPECT_THROW(fresh.predict(Prompt{{{10, 10, 1}}, std::nullopt}), Error);
    EXPECT_THROW(fresh.set_image(cv::Mat(20, 20, CV_16UC1, cv::Scalar(0))), Error);
}

// Prompts of different kinds (so of different token counts) in one call, with repeats so that some are decoded in
// one pass together.
TEST_F(SmallSam, BatchEqualsOneByOne) {
    const std::vector<Prompt> kinds = {Prompt{{{300, 200, 1}}, std::nullopt}, Prompt{{}, BoxPrompt{100, 120, 400, 380}},
                                       Prompt{{{250, 260, 1}, {90, 80, 0}}, BoxPrompt{60, 40, 420, 400}}};
    std::vector<Prompt> prompts;
    for (int i = 0; i < 7; ++i) {
        Prompt prompt = kinds[i % kinds.size()];
        if (!prompt.points.empty()) prompt.points[0].x += 10.0f * i;
        prompts.push_back(prompt);
    }
    const PredictOptions options{.output = MaskOutput::All, .return_logits = true, .return_low_res_logits = true};
    const std::vector<MaskPrediction> batch = predictor_->predict(prompts, options);
    ASSERT_EQ(batch.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
        SCOPED_TRACE(i);
        const MaskPrediction single = predictor_->predict(prompts[i], options);
        EXPECT_EQ(batch[i].num_masks, 4);
        EXPECT_EQ(batch[i].masks, single.masks);
        EXPECT_LE(test::max_abs_diff(batch[i].low_res_logits, single.low_res_logits),
                  1e-5 * test::max_abs(single.low_res_logits));
        EXPECT_LE(test::max_abs_diff(batch[i].logits, single.logits), 1e-5 * test::max_abs(single.logits));
        EXPECT_LE(test::max_abs_diff(batch[i].iou_predictions, single.iou_predictions), 1e-6);
    }
}

// One decoder pass gives all 4 outputs: the single-mask output and the 3 multimask ones, as the official flag picks.
TEST_F(SmallSam, AllMasksAreTheSingleThenTheMultimaskOutputs) {
    const Prompt prompt{{{300, 200, 1}}, BoxPrompt{100, 120, 400, 380}};
    const MaskPrediction all =
        predictor_->predict(prompt, {.output = MaskOutput::All, .return_logits = true, .return_low_res_logits = true});
    const MaskPrediction single = predictor_->predict(prompt, official(false));
    const MaskPrediction multimask = predictor_->predict(prompt, official(true));
    ASSERT_EQ(all.num_masks, 4);
    ASSERT_EQ(single.num_masks, 1);
    ASSERT_EQ(multimask.num_masks, 3);
    auto concatenated = [](const auto& first, const auto& rest) {
        auto out = first;
        out.insert(out.end(), rest.begin(), rest.end());
        return out;
    };
    EXPECT_EQ(all.masks, concatenated(single.masks, multimask.masks));
    EXPECT_EQ(all.logits, concatenated(single.logits, multimask.logits));
    EXPECT_EQ(all.low_res_logits, concatenated(single.low_res_logits, multimask.low_res_logits));
    EXPECT_EQ(all.iou_predictions, concatenated(single.iou_predictions, multimask.iou_predictions));
    EXPECT_EQ(all.stability_scores, concatenated(single.stability_scores, multimask.stability_scores));
}

// Full-size and low-res logits are opt-in; masks and scores do not depend on them being kept (without low-res
// logits the decoder leaves out the rows under the frame's padding: this image is wider than high).
TEST_F(SmallSam, LogitsOnlyWhenAskedFor) {
    ASSERT_GT(image_.cols, image_.rows);
    const Prompt prompt{{{300, 200, 1}}, std::nullopt};
    const MaskPrediction lean = predictor_->predict(prompt);
    const MaskPrediction full = predictor_->predict(prompt, official(true));
    EXPECT_TRUE(lean.logits.empty());
    EXPECT_TRUE(lean.low_res_logits.empty());
    EXPECT_EQ(full.logits.size(), full.masks.size());
    EXPECT_EQ(full.low_res_logits.size(), size_t(full.num_masks) * 256 * 256);
    EXPECT_EQ(lean.masks, full.masks);
    EXPECT_EQ(lean.stability_scores, full.stability_scores);
    EXPECT_EQ(lean.iou_predictions, full.iou_predictions);
}

TEST_F(SmallSam, MaskIsACopyOfOnePlane) {
    const MaskPrediction p = predictor_->predict(Prompt{{{300, 200, 1}}, std::nullopt});
    ASSERT_EQ(p.num_masks, 3);
    ASSERT_EQ(cv::Size(p.width, p.height), image_.size());
    const cv::Mat second = p.mask(1);
    ASSERT_EQ(second.type(), CV_8U);
    EXPECT_TRUE(std::equal(second.datastart, second.dataend, p.masks.begin() + p.height * p.width));
    EXPECT_THROW(p.mask(3), Error);
}

}  // namespace
