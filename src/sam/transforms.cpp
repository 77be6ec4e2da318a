#include "sam/transforms.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include <opencv2/imgproc.hpp>

#include "sam/image_resize.hpp"
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

// ResizeLongestSide.get_preprocess_shape: the longest side becomes frame_size, int(x * scale + 0.5) for both.
cv::Size resized_longest_side(cv::Size size, int frame_size) {
    const double scale = static_cast<double>(frame_size) / std::max(size.width, size.height);
    return {static_cast<int>(size.width * scale + 0.5), static_cast<int>(size.height * scale + 0.5)};
}

void require_finite(float value, const char* what) {
    if (!std::isfinite(value)) throw Error("", std::string(what) + " coordinate is not a finite number");
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

float stability_score(const float* logits, size_t count) {
    size_t above_plus_one = 0, above_minus_one = 0;
    for (size_t i = 0; i < count; ++i) {
        above_plus_one += logits[i] > 1.0f;
        above_minus_one += logits[i] > -1.0f;
    }
    return above_minus_one == 0 ? 0.0f : static_cast<float>(double(above_plus_one) / double(above_minus_one));
}

MaskPrediction postprocess(DecoderOutput decoded, int low_res, const ImageFrame& frame, Processing processing) {
    MaskPrediction out;
    out.num_masks = static_cast<int>(decoded.iou_predictions.size());
    out.height = frame.original_size.height;
    out.width = frame.original_size.width;
    const size_t low_plane = static_cast<size_t>(low_res) * low_res;
    const size_t plane = static_cast<size_t>(out.height) * out.width;
    out.logits.resize(out.num_masks * plane);
    out.masks.resize(out.num_masks * plane);
    const cv::Size low_size(low_res, low_res);
    std::vector<float> scratch;
    for (int k = 0; k < out.num_masks; ++k) {
        const float* low = decoded.low_res_logits.data() + k * low_plane;
        float* logits = out.logits.data() + k * plane;
        uint8_t* masks = out.masks.data() + k * plane;
        if (processing != Processing::MedSam) {  // SAM's postprocess_masks; LiteMedSAM's is the same at 256
            const cv::Size frame_size(frame.frame_size, frame.frame_size);
            scratch.resize(static_cast<size_t>(frame.input_size.area()));
            interpolate_bilinear(low, low_size, scratch.data(), frame_size, frame.input_size);
            interpolate_bilinear(scratch.data(), frame.input_size, logits, frame.original_size, frame.original_size);
            for (size_t i = 0; i < plane; ++i) masks[i] = logits[i] > 0.0f;
        } else {
            scratch.resize(low_plane);
            for (size_t i = 0; i < low_plane; ++i) scratch[i] = 1.0f / (1.0f + std::exp(-low[i]));
            interpolate_bilinear(scratch.data(), low_size, logits, frame.original_size, frame.original_size);
            for (size_t i = 0; i < plane; ++i) {
                const float p = logits[i];
                masks[i] = p > 0.5f;
                const double log_odds = std::log(double(p)) - std::log1p(-double(p));
                logits[i] = static_cast<float>(std::clamp(log_odds, double(-kMaxLogOdds), double(kMaxLogOdds)));
            }
        }
        out.stability_scores.push_back(stability_score(logits, plane));
    }
    out.low_res_logits = std::move(decoded.low_res_logits);
    out.iou_predictions = std::move(decoded.iou_predictions);
    return out;
}

MaskPrediction predict_masks(const SamModel& model, Processing processing, const ImageFrame& frame,
                             const float* embedding, const Prompt& prompt, bool multimask_output) {
    return postprocess(model.decode(embedding, to_frame_prompt(prompt, frame, processing), multimask_output),
                       model.hyper_params().low_res_size(), frame, processing);
}

}  // namespace sqasam::sam
