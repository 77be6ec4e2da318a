#include "sam/transforms.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <opencv2/imgproc.hpp>

#include "ops/ops.hpp"
#include "sam/image_resize.hpp"
#include "sam/workspace.hpp"
#include "sqasam/error.hpp"

namespace sqasam::sam {
namespace {

cv::Mat as_rgb(const cv::Mat& image) {
    if (image.empty()) throw Error("", "empty image");
    if (image.type() == CV_8UC3) return image;
    if (image.type() == CV_8UC1) {
        cv::Mat rgb;
        cv::cvtColor(image, rgb, cv::COLOR_GRAY2RGB);
        return rgb;
    }
    throw Error("", "SAM takes an 8-bit RGB or gray image; got " + std::to_string(image.channels()) +
                        " channels of OpenCV depth " + std::to_string(image.depth()));
}

// ResizeLongestSide.get_preprocess_shape: the longest side becomes frame_size, int(x * scale + 0.5) for both. An
// image so thin that its short side rounds to 0 (more than 2 x frame_size : 1) cannot be shown to the network; the
// official code fails on it too.
cv::Size resized_longest_side(cv::Size size, int frame_size) {
    const double scale = static_cast<double>(frame_size) / std::max(size.width, size.height);
    const cv::Size resized(static_cast<int>(size.width * scale + 0.5), static_cast<int>(size.height * scale + 0.5));
    if (resized.empty())
        throw Error("", "the image is " + std::to_string(size.width) + "x" + std::to_string(size.height) +
                            " pixels: too thin for the model's " + std::to_string(frame_size) + "-pixel input, where " +
                            "its short side would be 0 pixels");
    return resized;
}

void require_finite(float value, const char* what) {
    if (!std::isfinite(value)) throw Error("", std::string(what) + " coordinate is not a finite number");
}

// The bands of logit values postprocess() tells apart: its outputs are logit > 0 (mask), > 1 and > -1 (stability
// counts). Both resamplings are convex combinations (non-negative weights summing to 1 up to rounding, relative
// error far below kBandMargin over both), so output pixels whose every source value lies inside one band land in
// it too. Values within kBandMargin of -1 or 1, of magnitude below kTinyLogit (0, -0, denormals: a product could
// round to zero) or above kHugeLogit (a sum could overflow; inf times a zero weight is NaN) and NaN are Mixed.
enum class LogitBand : uint8_t { Mixed, BelowMinusOne, MinusOneToZero, ZeroToOne, AboveOne };
constexpr float kBandMargin = 1e-4f, kTinyLogit = 1e-30f, kHugeLogit = 1e30f;

LogitBand band_of(float v) {
    if (v > 1.0f + kBandMargin && v < kHugeLogit) return LogitBand::AboveOne;
    if (v > kTinyLogit && v < 1.0f - kBandMargin) return LogitBand::ZeroToOne;
    if (v < -kTinyLogit && v > -1.0f + kBandMargin) return LogitBand::MinusOneToZero;
    if (v < -1.0f - kBandMargin && v > -kHugeLogit) return LogitBand::BelowMinusOne;
    return LogitBand::Mixed;  // NaN too: every comparison above is false
}

// The lowest and highest value of a row, and whether it holds a NaN (the lowest and highest of the others then).
struct RowRange {
    float lowest, highest;
    bool has_nan;
};
RowRange row_range(const float* row, int n) {
    RowRange range{row[0], row[0], false};
    int x = 0;
#ifdef __AVX512F__
    // Vector lanes: the compiler keeps this loop scalar (min and max are not associative where NaNs may occur).
    if (n >= 16) {
        __m512 lowest = _mm512_loadu_ps(row), highest = lowest;
        __mmask16 nan = 0;
        for (; x + 16 <= n; x += 16) {
            const __m512 v = _mm512_loadu_ps(row + x);
            // (the maskz forms: GCC 12 warns of an uninitialised value inside _mm512_min_ps / _mm512_max_ps)
            lowest = _mm512_maskz_min_ps(0xFFFF, lowest, v);
            highest = _mm512_maskz_max_ps(0xFFFF, highest, v);
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        }
        alignas(64) float lowest_lanes[16], highest_lanes[16];
        _mm512_store_ps(lowest_lanes, lowest);
        _mm512_store_ps(highest_lanes, highest);
        range = {*std::min_element(lowest_lanes, lowest_lanes + 16),
                 *std::max_element(highest_lanes, highest_lanes + 16), nan != 0};
    }
#endif
    for (; x < n; ++x) {
        range.lowest = std::min(range.lowest, row[x]);
        range.highest = std::max(range.highest, row[x]);
        range.has_nan = range.has_nan || std::isnan(row[x]);
    }
    return range;
}

// A row's pixels with logit > 1 and with logit > -1 (the stability score's counts).
struct RowCounts {
    int above_plus_one = 0, above_minus_one = 0;
};

// One output row of SAM's pipeline from the x passes of its two source rows: logit = blend(first, second, w0, w1),
// mask = logit > 0, counted for the stability score; the logits stored too where `logits` is given. With AVX-512
// the comparisons' bit masks are stored and counted as they come (the vectorised loop below widens each comparison
// to a vector of counts, and took more time than both resamplings' x passes together).
RowCounts threshold_row(const float* first, const float* second, float w0, float w1, int width, uint8_t* masks,
                        float* logits) {
    RowCounts counts;
    int x = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    const __m512 weight0 = _mm512_set1_ps(w0), weight1 = _mm512_set1_ps(w1);
    const __m512 zero = _mm512_setzero_ps(), plus_one = _mm512_set1_ps(1.0f), minus_one = _mm512_set1_ps(-1.0f);
    const __m128i ones = _mm_set1_epi8(1);
    for (; x + 16 <= width; x += 16) {
        const __m512 logit =
            _mm512_fmadd_ps(_mm512_loadu_ps(second + x), weight1, _mm512_mul_ps(_mm512_loadu_ps(first + x), weight0));
        if (logits) _mm512_storeu_ps(logits + x, logit);
        // ordered comparisons: false for NaN, as the scalar > is
        _mm_storeu_si128(reinterpret_cast<__m128i*>(masks + x),
                         _mm_maskz_mov_epi8(_mm512_cmp_ps_mask(logit, zero, _CMP_GT_OQ), ones));
        counts.above_plus_one += std::popcount(unsigned(_mm512_cmp_ps_mask(logit, plus_one, _CMP_GT_OQ)));
        counts.above_minus_one += std::popcount(unsigned(_mm512_cmp_ps_mask(logit, minus_one, _CMP_GT_OQ)));
    }
#endif
    int plus = 0, minus = 0;
#pragma omp simd reduction(+ : plus, minus)
    for (int i = x; i < width; ++i) {
        const float logit = blend(first[i], second[i], w0, w1);
        if (logits) logits[i] = logit;
        masks[i] = logit > 0.0f;
        plus += logit > 1.0f;
        minus += logit > -1.0f;
    }
    counts.above_plus_one += plus;
    counts.above_minus_one += minus;
    return counts;
}

// Per row of a rows x low logit image, the band all its values share, or Mixed. Bands are intervals: a row lies in
// one when its lowest and highest values do and it holds no NaN.
std::vector<LogitBand> row_bands(const float* logits, int rows, int low) {
    std::vector<LogitBand> bands(rows);
    for (int r = 0; r < rows; ++r) {
        const RowRange range = row_range(logits + size_t(r) * low, low);
        const LogitBand band = band_of(range.lowest);
        bands[r] = !range.has_nan && band_of(range.highest) == band ? band : LogitBand::Mixed;
    }
    return bands;
}

}  // namespace

Processing processing_for(ModelType type) {
    if (type == ModelType::MedSam) return Processing::MedSam;
    if (type == ModelType::LiteMedSam) return Processing::LiteMedSam;
    return Processing::Sam;
}

ModelInput sam_model_input(const cv::Mat& image, int frame_size) {
    const cv::Mat rgb = as_rgb(image);
    ModelInput input;
    input.frame = {rgb.size(), resized_longest_side(rgb.size(), frame_size), frame_size};
    const cv::Mat resized = pillow_resize_bilinear(rgb, input.frame.input_size);
    // Sam.pixel_mean / pixel_std, as float32 tensors; (x - mean) / std in float like the uint8 - float32 tensor op.
    const float mean[3] = {123.675f, 116.28f, 103.53f};
    const float stddev[3] = {58.395f, 57.12f, 57.375f};
    const size_t plane = static_cast<size_t>(frame_size) * frame_size;
    input.tensor.assign(3 * plane, 0.0f);  // zero padding right and below
    for (int y = 0; y < resized.rows; ++y) {
        const uint8_t* row = resized.ptr<uint8_t>(y);
        for (int x = 0; x < resized.cols; ++x)
            for (int c = 0; c < 3; ++c)
                input.tensor[c * plane + static_cast<size_t>(y) * frame_size + x] =
                    (static_cast<float>(row[3 * x + c]) - mean[c]) / stddev[c];
    }
    return input;
}

namespace {

// (x - min) / max(max - min, 1e-8) over all pixels and channels of an 8-bit RGB image, in double, then float;
// placed at the top-left of a zero frame_size x frame_size planar tensor.
std::vector<float> min_max_scaled(const cv::Mat& rgb, int frame_size) {
    double lowest = 0, highest = 0;
    cv::minMaxLoc(rgb.reshape(1), &lowest, &highest);
    const double range = std::max(highest - lowest, 1e-8);
    const size_t plane = static_cast<size_t>(frame_size) * frame_size;
    std::vector<float> tensor(3 * plane, 0.0f);
    for (int y = 0; y < rgb.rows; ++y) {
        const uint8_t* row = rgb.ptr<uint8_t>(y);
        for (int x = 0; x < rgb.cols; ++x)
            for (int c = 0; c < 3; ++c)
                tensor[c * plane + static_cast<size_t>(y) * frame_size + x] =
                    static_cast<float>((row[3 * x + c] - lowest) / range);
    }
    return tensor;
}

}  // namespace

std::vector<float> medsam_tensor(const cv::Mat& resized_rgb) {
    if (resized_rgb.type() != CV_8UC3 || resized_rgb.rows != resized_rgb.cols)
        throw Error("", "medsam_tensor expects a square 8-bit RGB image");
    return min_max_scaled(resized_rgb, resized_rgb.rows);
}

ModelInput medsam_model_input(const cv::Mat& image, int frame_size) {
    const cv::Mat rgb = as_rgb(image);
    ModelInput input;
    input.frame = {rgb.size(), {frame_size, frame_size}, frame_size};
    input.tensor = medsam_tensor(skimage_resize_cubic(rgb, {frame_size, frame_size}));
    return input;
}

ModelInput lite_medsam_model_input(const cv::Mat& image, int frame_size) {
    const cv::Mat rgb = as_rgb(image);
    ModelInput input;
    input.frame = {rgb.size(), resized_longest_side(rgb.size(), frame_size), frame_size};
    cv::Mat resized;
    cv::resize(rgb, resized, input.frame.input_size, 0, 0, cv::INTER_AREA);  // the official cv2.resize
    input.tensor = min_max_scaled(resized, frame_size);
    return input;
}

ModelInput model_input(const cv::Mat& image, int frame_size, Processing processing) {
    switch (processing) {
        case Processing::MedSam: return medsam_model_input(image, frame_size);
        case Processing::LiteMedSam: return lite_medsam_model_input(image, frame_size);
        case Processing::Sam: break;
    }
    return sam_model_input(image, frame_size);
}

FramePrompt to_frame_prompt(const Prompt& prompt, const ImageFrame& frame, Processing processing) {
    const double old_w = frame.original_size.width, old_h = frame.original_size.height;
    const double lite_ratio = frame.frame_size / std::max(old_w, old_h);  // resize_box_to_256
    auto to_x = [&](float x) {
        if (processing == Processing::LiteMedSam) return static_cast<float>(static_cast<int>(x * lite_ratio));
        return processing == Processing::Sam ? static_cast<float>(x * (frame.input_size.width / old_w))
                                             : static_cast<float>(x / old_w * frame.frame_size);
    };
    auto to_y = [&](float y) {
        if (processing == Processing::LiteMedSam) return static_cast<float>(static_cast<int>(y * lite_ratio));
        return processing == Processing::Sam ? static_cast<float>(y * (frame.input_size.height / old_h))
                                             : static_cast<float>(y / old_h * frame.frame_size);
    };
    FramePrompt out;
    for (const PointPrompt& p : prompt.points) {
        require_finite(p.x, "point");
        require_finite(p.y, "point");
        if (p.label != 0 && p.label != 1)
            throw Error("", "point label must be 1 (foreground) or 0 (background), got " + std::to_string(p.label));
        out.point_xy.push_back(to_x(p.x));
        out.point_xy.push_back(to_y(p.y));
        out.point_labels.push_back(p.label);
    }
    if (prompt.box) {
        const BoxPrompt& b = *prompt.box;
        for (float v : {b.x0, b.y0, b.x1, b.y1}) require_finite(v, "box");
        if (b.x1 < b.x0 || b.y1 < b.y0) throw Error("", "box must have x0 <= x1 and y0 <= y1");
        out.has_box = true;
        out.box[0] = to_x(b.x0);
        out.box[1] = to_y(b.y0);
        out.box[2] = to_x(b.x1);
        out.box[3] = to_y(b.y1);
    }
    if (out.point_labels.empty() && !out.has_box) throw Error("", "a prompt needs at least one point or a box");
    return out;
}

MaskRange mask_range(MaskOutput output, int decoder_masks) {
    switch (output) {
        case MaskOutput::Single: return {0, 1};
        case MaskOutput::All: return {0, decoder_masks};
        case MaskOutput::Multimask: break;
    }
    return {1, decoder_masks - 1};
}

MaskUpsampling::MaskUpsampling(const ImageFrame& frame, int low_res, Processing processing)
    : frame_(frame),
      processing_(processing),
      low_res_(low_res),
      to_frame_({low_res, low_res}, {frame.frame_size, frame.frame_size}, frame.input_size),
      to_original_(processing == Processing::MedSam ? cv::Size(low_res, low_res) : frame.input_size,
                   frame.original_size, frame.original_size),
      rows_read_(processing == Processing::MedSam ? low_res : to_frame_.source_rows()) {}

MaskPrediction postprocess(const DecoderOutput& decoded, const MaskUpsampling& upsampling,
                           const PredictOptions& options) {
    ops::ProfileScope scope(ops::OpClass::resampling);
    const int low_res = upsampling.low_res();
    const ImageFrame& frame = upsampling.frame();
    const int decoder_masks = static_cast<int>(decoded.iou_predictions.size());
    const MaskRange range = mask_range(options.output, decoder_masks);
    const bool return_logits = options.return_logits;
    MaskPrediction out;
    out.num_masks = range.count;
    out.height = frame.original_size.height;
    out.width = frame.original_size.width;
    const int width = out.width;
    // The decoder's planes hold their top low_rows rows (all low_res, or those this needs).
    const size_t low_plane = decoded.low_res_logits.size() / decoder_masks;
    const int low_rows = static_cast<int>(low_plane / low_res);
    if (low_rows < (options.return_low_res_logits ? low_res : upsampling.rows_read()))
        throw std::logic_error("postprocess: the decoder's output lacks low-res rows it reads");
    const size_t plane = static_cast<size_t>(out.height) * width;
    if (return_logits) out.logits.resize(range.count * plane);
    out.masks.resize(range.count * plane);
    // SAM's postprocess_masks (LiteMedSAM's is the same, its frame being the low-res size): low res -> frame,
    // cropped to the resized image, -> original size. MedSAM: sigmoid at low res -> original size.
    const bool medsam = upsampling.processing() == Processing::MedSam;
    const BilinearResampler& to_frame = upsampling.to_frame();
    const BilinearResampler& to_original = upsampling.to_original();
    std::vector<float> probabilities;  // MedSAM: sigmoid of the low-res logits of the kept masks
    if (medsam) {
        const float* low = decoded.low_res_logits.data() + range.first * low_plane;
        probabilities.resize(range.count * low_plane);
        for (size_t i = 0; i < probabilities.size(); ++i) probabilities[i] = 1.0f / (1.0f + std::exp(-low[i]));
    }
    // SAM's pipeline without full-size logits: output rows whose low-res rows share one band (row_bands) are filled
    // without resampling (real masks are smooth: most rows lie wholly outside or inside the object). The bands
    // cover whole low-res rows, more than the crop reads, which can only leave rows to the resampling.
    const bool fill_uniform_rows = !medsam && !return_logits;
    std::vector<std::vector<LogitBand>> bands(fill_uniform_rows ? range.count : 0);
    for (size_t k = 0; k < bands.size(); ++k)
        bands[k] = row_bands(decoded.low_res_logits.data() + (range.first + k) * low_plane, low_rows, low_res);
    // The band of output row y, from its low-res rows first(first(y)) .. second(second(y)) (both resamplers' source
    // rows are non-decreasing in y); Mixed if they differ.
    auto output_row_band = [&](int k, int y) {
        const int first = to_frame.first_source_row(to_original.first_source_row(y));
        const int last = to_frame.second_source_row(to_original.second_source_row(y));
        const LogitBand band = bands[k][first];
        for (int r = first + 1; r <= last; ++r)
            if (bands[k][r] != band) return LogitBand::Mixed;
        return band;
    };
    std::vector<int64_t> above_plus_one(range.count), above_minus_one(range.count);
    // Each thread streams its share of the output rows through both resamplers (a few rows of cache instead of
    // full-size intermediate images), then thresholds each row and counts it for the stability score.
#pragma omp parallel
    {
        const int threads = omp_get_num_threads(), thread = omp_get_thread_num();
        const int first_y = out.height * thread / threads, end_y = out.height * (thread + 1) / threads;
        // row_buffer: MedSAM's probabilities of a row when no logits are kept
        std::vector<float> frame_row(frame.input_size.width), row_buffer(medsam && !return_logits ? width : 0);
        for (int k = 0; k < range.count; ++k) {
            const float* low = decoded.low_res_logits.data() + (range.first + k) * low_plane;
            BilinearRowStream frame_rows(to_frame), original_rows(to_original);
            auto low_row = [&](int r) { return low + r * low_res; };
            auto frame_row_at = [&](int r) {
                frame_rows.row(r, low_row, frame_row.data());
                return static_cast<const float*>(frame_row.data());
            };
            auto probability_row = [&](int r) { return probabilities.data() + k * low_plane + r * low_res; };
            int64_t plus = 0, minus = 0;
            for (int y = first_y; y < end_y; ++y) {
                const size_t offset = k * plane + static_cast<size_t>(y) * width;
                float* logits = return_logits ? out.logits.data() + offset : row_buffer.data();
                uint8_t* masks = out.masks.data() + offset;
                const LogitBand band = fill_uniform_rows ? output_row_band(k, y) : LogitBand::Mixed;
                if (band != LogitBand::Mixed) {
                    const bool positive = band == LogitBand::ZeroToOne || band == LogitBand::AboveOne;
                    std::fill_n(masks, width, uint8_t(positive));
                    plus += band == LogitBand::AboveOne ? width : 0;
                    minus += band == LogitBand::BelowMinusOne ? 0 : width;
                    continue;
                }
                int row_plus = 0, row_minus = 0;
                if (medsam) {
                    original_rows.row(y, probability_row, logits);
                    for (int x = 0; x < width; ++x) {
                        const double p = logits[x];
                        masks[x] = logits[x] > 0.5f;
                        const double log_odds = std::log(p) - std::log1p(-p);
                        logits[x] = static_cast<float>(std::clamp(log_odds, double(-kMaxLogOdds), double(kMaxLogOdds)));
                    }
#pragma omp simd reduction(+ : row_plus, row_minus)
                    for (int x = 0; x < width; ++x) {
                        row_plus += logits[x] > 1.0f;
                        row_minus += logits[x] > -1.0f;
                    }
                } else {
                    const auto [first, second] = original_rows.source_rows(y, frame_row_at);
                    const auto [w0, w1] = to_original.y_weights(y);
                    const RowCounts counts =
                        threshold_row(first, second, w0, w1, width, masks, return_logits ? logits : nullptr);
                    row_plus = counts.above_plus_one;
                    row_minus = counts.above_minus_one;
                }
                plus += row_plus;
                minus += row_minus;
            }
#pragma omp atomic
            above_plus_one[k] += plus;
#pragma omp atomic
            above_minus_one[k] += minus;
        }
    }
    for (int k = 0; k < range.count; ++k)
        out.stability_scores.push_back(above_minus_one[k] == 0
                                           ? 0.0f
                                           : static_cast<float>(double(above_plus_one[k]) / double(above_minus_one[k])));
    if (options.return_low_res_logits) {
        const auto low_first = decoded.low_res_logits.begin() + range.first * low_plane;
        out.low_res_logits.assign(low_first, low_first + range.count * low_plane);
    }
    const auto iou_first = decoded.iou_predictions.begin() + range.first;
    out.iou_predictions.assign(iou_first, iou_first + range.count);
    return out;
}

std::vector<MaskPrediction> predict_masks(const SamModel& model, const MaskUpsampling& upsampling,
                                          const DecoderImage& image, const std::vector<Prompt>& prompts,
                                          const PredictOptions& options) {
    std::vector<FramePrompt> frame_prompts;
    for (const Prompt& prompt : prompts)
        frame_prompts.push_back(to_frame_prompt(prompt, upsampling.frame(), upsampling.processing()));
    // Without the low-res logits, the decoder leaves out the rows postprocessing does not read.
    const int rows_needed = options.return_low_res_logits ? upsampling.low_res() : upsampling.rows_read();
    const std::vector<DecoderOutput> decoded = model.decode(image, frame_prompts, rows_needed);
    std::vector<MaskPrediction> out(decoded.size());
    for_each_side_by_side(decoded.size(), [&](size_t i) { out[i] = postprocess(decoded[i], upsampling, options); });
    return out;
}

}  // namespace sqasam::sam
