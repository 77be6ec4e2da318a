#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <tuple>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "io/image_decoding.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
using io_detail::DecodedFile;
namespace {

// A file's bytes, after checking that it is a regular file no larger than an image within the pixel limit could be.
std::vector<uint8_t> read_bytes(const std::string& path, int64_t max_pixels) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) throw Error(path, std::string("cannot read: ") + std::strerror(errno));
    if (!S_ISREG(info.st_mode)) throw Error(path, "not a regular file");
    // An uncompressed 4-channel 32-bit float image takes 16 bytes a pixel; headers and metadata fit in 1 MiB.
    const int64_t max_bytes = max_pixels > (int64_t{1} << 58) ? INT64_MAX : max_pixels * 16 + (int64_t{1} << 20);
    if (info.st_size > max_bytes)
        throw ImageTooLarge(path, "the file holds " + std::to_string(info.st_size) +
                                      " bytes, more than an image within the pixel limit (--max-pixels " +
                                      std::to_string(max_pixels) + ") could");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw Error(path, "cannot read the file");
    return bytes;
}

}  // namespace

namespace io_detail {

DecodedFile decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& path, int64_t max_pixels) {
    const ImageHeader header = read_image_header(bytes, path);
    if (header.width > max_pixels / header.height)
        throw ImageTooLarge(path, std::to_string(header.width) + "x" + std::to_string(header.height) +
                                      " pixels, more than the limit of " + std::to_string(max_pixels) +
                                      " (--max-pixels)");
    DecodedFile decoded;
    if (header.format == ImageFormat::Jpeg) {
        const JpegCheck check = check_jpeg_data(bytes);
        if (check.data_missing)
            throw Error(path, "damaged or truncated JPEG (libjpeg: " + check.warning +
                                  "); its missing pixels would be read as grey");
        if (!check.warning.empty())
            decoded.notes.push_back({"jpeg_warning", path + ": libjpeg warns: " + check.warning});
    }
    if (header.orientation != 1)
        decoded.notes.push_back({"exif_orientation", path + ": EXIF orientation " +
                                                         std::to_string(header.orientation) + " applied (" +
                                                         orientation_text(header.orientation) + ")"});
    try {
        // ANYDEPTH | ANYCOLOR rather than UNCHANGED: OpenCV then applies the EXIF orientation of every format (it
        // applies a TIFF's always), and drops alpha.
        decoded.pixels = cv::imdecode(bytes, cv::IMREAD_ANYDEPTH | cv::IMREAD_ANYCOLOR);
    } catch (const cv::Exception& e) {
        throw Error(path, "cannot decode image: " + e.msg);
    }
    if (decoded.pixels.empty()) throw Error(path, "cannot decode image (corrupt or not a PNG/JPEG/TIFF/BMP file)");
    if (decoded.pixels.total() != static_cast<size_t>(header.width * header.height))
        throw Error(path, "decoded " + std::to_string(decoded.pixels.cols) + "x" +
                              std::to_string(decoded.pixels.rows) + " pixels where the header says " +
                              std::to_string(header.width) + "x" + std::to_string(header.height));
    return decoded;
}

}  // namespace io_detail

namespace {

DecodedFile decode(const std::string& path, int64_t max_pixels) {
    return io_detail::decode_image_bytes(read_bytes(path, max_pixels), path, max_pixels);
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

// Foreground label 1 where mask (0/255) is set.
cv::Mat foreground_labels(const cv::Mat& mask) {
    cv::Mat labels;
    mask.convertTo(labels, CV_32S, 1.0 / 255.0);
    return labels;
}

std::string value_text(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.10g", value);
    return text;
}

std::string values_text(const std::set<double>& values) {
    std::string text;
    for (double v : values) text += (text.empty() ? "" : ", ") + value_text(v);
    return "{" + text + "}";
}

// The automatic rule of io.hpp: the kind, and why it is a guess ("" when the values allow one reading only).
std::pair<MapKind, std::string> automatic_kind(const ValueSummary& summary, double full, double threshold) {
    std::set<double> nonzero = summary.distinct;
    nonzero.erase(0.0);
    const std::string values = values_text(nonzero);
    if (!summary.all_integer) return {MapKind::Soft, ""};
    if (nonzero.empty() || (nonzero.size() == 1 && (*nonzero.begin() == full || *nonzero.begin() == 1.0)))
        return {MapKind::Binary, ""};
    if (nonzero.size() == 1)
        return {MapKind::Binary, "the only nonzero value " + values + " was read as a binary mask's foreground; "
                                 "it could be one class of a label map (--pred-kind labels keeps it)"};
    const bool full_beside_others = summary.distinct.count(full) > 0;  // with two or more nonzero values
    if (nonzero.size() <= static_cast<size_t>(kMaxLabels) && !full_beside_others) {
        const bool soft_possible = summary.max <= full && summary.max > threshold * full;
        return {MapKind::Labels, soft_possible ? "the values " + values + " were read as class labels; they could "
                                                 "be the levels of a soft map (--pred-kind soft thresholds them)"
                                               : ""};
    }
    if (summary.max > full) return {MapKind::Labels, ""};
    return {MapKind::Soft, (full_beside_others && nonzero.size() <= static_cast<size_t>(kMaxLabels)
                                ? "the values " + values + " include full scale beside others and"
                                : "more than " + std::to_string(kMaxLabels) + " distinct integer values") +
                               " were read as a soft map; they could be the classes of a label map (--pred-kind "
                               "labels keeps them)"};
}

}  // namespace

bool is_supported_image_file(const std::filesystem::path& path) {
    static const std::array<std::string, 6> extensions{".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"};
    std::string ext = path.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
}

namespace io_detail {

ImageFile image_from_pixels(DecodedFile decoded, const std::string& path) {
    ImageFile image;
    image.notes = std::move(decoded.notes);
    const cv::Mat& raw = decoded.pixels;
    cv::Mat eight_bit;
    switch (raw.depth()) {
        case CV_8U: eight_bit = raw; break;
        case CV_16U: {
            double largest = 0;
            cv::minMaxLoc(raw.reshape(1), nullptr, &largest);
            int bits = 8;
            while (bits < 16 && largest > (1 << bits) - 1) ++bits;
            raw.convertTo(eight_bit, CV_8U, 255.0 / ((1 << bits) - 1));
            break;
        }
        case CV_32F:
        case CV_64F: {
            cv::Mat values = raw;
            const cv::Mat nonfinite = values.reshape(1) != values.reshape(1);  // NaN
            cv::Mat magnitude = cv::abs(values.reshape(1));
            const cv::Mat bad = nonfinite | (magnitude == std::numeric_limits<double>::infinity());
            if (const int count = cv::countNonZero(bad)) {
                values = values.clone();
                values.reshape(1).setTo(0, bad);
                image.notes.push_back({"nonfinite_pixels", path + ": " + std::to_string(count) +
                                                               " NaN or infinite pixel values read as 0"});
            }
            values.convertTo(eight_bit, CV_8U, 255.0);  // saturates outside [0,1]
            break;
        }
        default: throw Error(path, depth_name(raw.depth()) + " pixels are not supported for images");
    }
    switch (eight_bit.channels()) {
        case 1: cv::cvtColor(eight_bit, image.rgb, cv::COLOR_GRAY2RGB); break;
        case 3: cv::cvtColor(eight_bit, image.rgb, cv::COLOR_BGR2RGB); break;
        case 4: cv::cvtColor(eight_bit, image.rgb, cv::COLOR_BGRA2RGB); break;
        default: throw Error(path, "image has " + std::to_string(eight_bit.channels()) + " channels");
    }
    return image;
}

LabelMap label_map_from_pixels(DecodedFile decoded, const MaskReading& reading, const std::string& path) {
    LabelMap map = label_map_from_values(single_channel(decoded.pixels, path), reading, path);
    map.notes.insert(map.notes.begin(), decoded.notes.begin(), decoded.notes.end());
    return map;
}

cv::Mat probability_from_pixels(const cv::Mat& pixels, const std::string& path) {
    cv::Mat values = single_channel(pixels, path);
    require_finite_non_negative(values, path);
    cv::Mat probability;
    values.convertTo(probability, CV_32F, 1.0 / full_scale(values.depth()));
    double max = 0;
    cv::minMaxLoc(probability, nullptr, &max);
    if (max > 1.0) throw Error(path, "probability map has values above 1");
    return probability;
}

}  // namespace io_detail

ImageFile read_image(const std::string& path, int64_t max_pixels) {
    return io_detail::image_from_pixels(decode(path, max_pixels), path);
}

cv::Mat read_rgb_image(const std::string& path, int64_t max_pixels) { return read_image(path, max_pixels).rgb; }

std::string to_string(MapKind kind) {
    switch (kind) {
        case MapKind::Binary: return "binary";
        case MapKind::Labels: return "labels";
        case MapKind::Soft: return "soft";
    }
    return "?";
}

MapKind map_kind_from_string(const std::string& name) {
    for (MapKind kind : {MapKind::Binary, MapKind::Labels, MapKind::Soft})
        if (name == to_string(kind)) return kind;
    throw Error("", "unknown mask kind '" + name + "' (choose one of auto, binary, labels, soft)");
}

LabelMap label_map_from_values(const cv::Mat& values, const MaskReading& reading, const std::string& file) {
    if (values.channels() != 1) throw Error(file, "mask must have one channel");
    const double full = full_scale(values.depth());
    if (full == 0.0) throw Error(file, depth_name(values.depth()) + " pixels are not supported for masks");
    require_finite_non_negative(values, file);

    const ValueSummary summary = summarise(values, kMaxLabels + 1);  // 0 and more than kMaxLabels others
    const double threshold = reading.soft_threshold.value_or(0.5);
    LabelMap map;
    if (reading.kind) {
        map.kind = *reading.kind;
    } else {
        std::string guess;
        std::tie(map.kind, guess) = automatic_kind(summary, full, threshold);
        if (!guess.empty()) map.notes.push_back({"kind_guessed", file + ": " + guess});
    }
    switch (map.kind) {
        case MapKind::Binary: map.labels = foreground_labels(values != 0); break;
        case MapKind::Labels:
            if (!summary.all_integer)
                throw Error(file, "not a label map: it has non-integer values (a soft map?)");
            if (summary.max > std::numeric_limits<int32_t>::max())
                throw Error(file, "label " + value_text(summary.max) + " is too large");
            values.convertTo(map.labels, CV_32S);
            break;
        case MapKind::Soft:
            if (summary.max > full)
                throw Error(file, "soft mask has values above " + value_text(full) +
                                      "; expected probabilities in [0,1] or an integer label map");
            map.labels = foreground_labels(as_float(values) > threshold * full);
            break;
    }
    return map;
}

LabelMap read_label_map(const std::string& path, const MaskReading& reading) {
    return io_detail::label_map_from_pixels(decode(path, reading.max_pixels), reading, path);
}

cv::Mat read_probability_map(const std::string& path, int64_t max_pixels) {
    return io_detail::probability_from_pixels(decode(path, max_pixels).pixels, path);
}

}  // namespace sqasam
