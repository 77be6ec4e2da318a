#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw Error(path, "cannot read the file");
    return bytes;
}

// libjpeg decodes a JPEG cut short with only a warning, filling the missing rows with gray; the end-of-image marker
// (FF D9, which entropy-coded data cannot contain) then is missing from the file's tail.
bool truncated_jpeg(const std::vector<uint8_t>& bytes) {
    if (bytes.size() < 3 || bytes[0] != 0xFF || bytes[1] != 0xD8 || bytes[2] != 0xFF) return false;
    constexpr size_t kTailAllowed = 64;  // encoders may pad after the marker
    const size_t from = bytes.size() > kTailAllowed ? bytes.size() - kTailAllowed : 0;
    for (size_t i = bytes.size() - 1; i > from; --i)
        if (bytes[i - 1] == 0xFF && bytes[i] == 0xD9) return false;
    return true;
}

cv::Mat decode(const std::string& path) {
    if (!std::filesystem::is_regular_file(path)) throw Error(path, "no such file");
    const std::vector<uint8_t> bytes = read_bytes(path);
    if (truncated_jpeg(bytes)) throw Error(path, "truncated JPEG (the file ends before its end-of-image marker)");
    cv::Mat raw;
    try {
        raw = cv::imdecode(bytes, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
        throw Error(path, "cannot decode image: " + e.msg);
    }
    if (raw.empty()) throw Error(path, "cannot decode image (corrupt or not a PNG/JPEG/TIFF/BMP file)");
    return raw;
}

double full_scale(int depth) {
    switch (depth) {
        case CV_8U: return 255.0;
        case CV_16U: return 65535.0;
        case CV_32F:
        case CV_64F: return 1.0;
        default: return 0.0;
    }
}

std::string depth_name(int depth) {
    switch (depth) {
        case CV_8S: return "8-bit signed";
        case CV_16S: return "16-bit signed";
        case CV_32S: return "32-bit integer";
        default: return "depth " + std::to_string(depth);
    }
}

// One channel of a mask file: gray as is; colour only when its colour channels are equal (alpha is ignored).
cv::Mat single_channel(const cv::Mat& raw, const std::string& path) {
    if (full_scale(raw.depth()) == 0.0)
        throw Error(path, depth_name(raw.depth()) + " pixels are not supported (use 8/16-bit or float)");
    if (raw.channels() == 1) return raw;
    std::vector<cv::Mat> channels;
    cv::split(raw, channels);
    int colour_channels = std::min(raw.channels(), 3);
    for (int c = 1; c < colour_channels; ++c) {
        if (cv::norm(channels[0], channels[c], cv::NORM_INF) != 0)
            throw Error(path, "mask has " + std::to_string(raw.channels()) +
                                  " channels with different values; expected a single-channel mask, label map or "
                                  "probability map");
    }
    return channels[0];
}

cv::Mat as_float(const cv::Mat& values) {
    if (values.depth() == CV_32F) return values;
    cv::Mat converted;
    values.convertTo(converted, CV_32F);
    return converted;
}

void require_finite_non_negative(const cv::Mat& values, const std::string& file) {
    if (values.depth() != CV_32F && values.depth() != CV_64F) return;
    cv::Mat as32 = as_float(values);
    if (!cv::checkRange(as32, true, nullptr, 0.0, std::numeric_limits<float>::max()))
        throw Error(file, "mask has negative, NaN or infinite values");
}

// Distinct values, up to limit + 1 of them (enough to know there are more than limit), and whether all are integers.
struct ValueSummary {
    std::set<double> distinct;
    bool all_integer = true;
    double max = 0;
};

ValueSummary summarise(const cv::Mat& values, size_t limit) {
    ValueSummary summary;
    if (values.depth() == CV_8U || values.depth() == CV_16U) {
        int bins = values.depth() == CV_8U ? 256 : 65536;
        std::vector<uint8_t> seen(bins, 0);
        for (int r = 0; r < values.rows; ++r) {
            if (values.depth() == CV_8U) {
                const uint8_t* row = values.ptr<uint8_t>(r);
                for (int c = 0; c < values.cols; ++c) seen[row[c]] = 1;
            } else {
                const uint16_t* row = values.ptr<uint16_t>(r);
                for (int c = 0; c < values.cols; ++c) seen[row[c]] = 1;
            }
        }
        for (int v = 0; v < bins; ++v) {
            if (!seen[v]) continue;
            summary.max = v;
            if (summary.distinct.size() <= limit) summary.distinct.insert(v);
        }
        return summary;
    }
    cv::Mat floats = as_float(values);
    summary.max = -1;
    for (int r = 0; r < floats.rows; ++r) {
        const float* row = floats.ptr<float>(r);
        for (int c = 0; c < floats.cols; ++c) {
            float v = row[c];
            summary.max = std::max<double>(summary.max, v);
            if (v != std::floor(v)) summary.all_integer = false;
            if (summary.distinct.size() <= limit) summary.distinct.insert(v);
        }
    }
    return summary;
}

}  // namespace

bool is_supported_image_file(const std::filesystem::path& path) {
    static const std::array<std::string, 6> extensions{".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"};
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
}

cv::Mat read_rgb_image(const std::string& path) {
    cv::Mat raw = decode(path);
    cv::Mat eight_bit;
    switch (raw.depth()) {
        case CV_8U: eight_bit = raw; break;
        case CV_16U: raw.convertTo(eight_bit, CV_8U, 1.0 / 257.0); break;
        case CV_32F:
        case CV_64F: raw.convertTo(eight_bit, CV_8U, 255.0); break;  // saturates outside [0,1]
        default: throw Error(path, depth_name(raw.depth()) + " pixels are not supported for images");
    }
    cv::Mat rgb;
    switch (eight_bit.channels()) {
        case 1: cv::cvtColor(eight_bit, rgb, cv::COLOR_GRAY2RGB); break;
        case 3: cv::cvtColor(eight_bit, rgb, cv::COLOR_BGR2RGB); break;
        case 4: cv::cvtColor(eight_bit, rgb, cv::COLOR_BGRA2RGB); break;
        default: throw Error(path, "image has " + std::to_string(eight_bit.channels()) + " channels");
    }
    return rgb;
}

std::string to_string(MapKind kind) {
    switch (kind) {
        case MapKind::Binary: return "binary";
        case MapKind::Labels: return "labels";
        case MapKind::Soft: return "soft";
    }
    return "?";
}

LabelMap label_map_from_values(const cv::Mat& values, std::optional<double> soft_threshold, const std::string& file) {
    if (values.channels() != 1) throw Error(file, "mask must have one channel");
    double full = full_scale(values.depth());
    if (full == 0.0) throw Error(file, depth_name(values.depth()) + " pixels are not supported for masks");
    require_finite_non_negative(values, file);

    ValueSummary summary = summarise(values, kMaxLabels);
    bool only_zero_and_full = std::all_of(summary.distinct.begin(), summary.distinct.end(),
                                          [&](double v) { return v == 0.0 || v == full; });
    bool integer_depth = values.depth() == CV_8U || values.depth() == CV_16U;
    bool full_beside_others = integer_depth && summary.distinct.count(full) && !only_zero_and_full;

    LabelMap map;
    if (!summary.all_integer || summary.distinct.size() > static_cast<size_t>(kMaxLabels) || full_beside_others) {
        if (summary.max > full)
            throw Error(file, "soft mask has values above " + std::to_string(full) +
                                  "; expected probabilities in [0,1] or an integer label map");
        double threshold = soft_threshold.value_or(0.5) * full;
        cv::Mat foreground = as_float(values) > threshold;  // 0/255
        foreground.convertTo(map.labels, CV_32S, 1.0 / 255.0);
        map.kind = MapKind::Soft;
    } else if (only_zero_and_full) {
        cv::Mat foreground = values == full;
        foreground.convertTo(map.labels, CV_32S, 1.0 / 255.0);
        map.kind = MapKind::Binary;
    } else {
        values.convertTo(map.labels, CV_32S);
        map.kind = MapKind::Labels;
    }
    return map;
}

LabelMap read_label_map(const std::string& path, std::optional<double> soft_threshold) {
    cv::Mat raw = decode(path);
    return label_map_from_values(single_channel(raw, path), soft_threshold, path);
}

cv::Mat read_probability_map(const std::string& path) {
    cv::Mat values = single_channel(decode(path), path);
    require_finite_non_negative(values, path);
    cv::Mat probability;
    values.convertTo(probability, CV_32F, 1.0 / full_scale(values.depth()));
    double max = 0;
    cv::minMaxLoc(probability, nullptr, &max);
    if (max > 1.0) throw Error(path, "probability map has values above 1");
    return probability;
}

}  // namespace sqasam
