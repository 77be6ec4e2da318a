#pragma once
// Decoding an image file's bytes. The header comes first: its format, size and EXIF orientation, so that an oversized
// image is refused before it takes memory and only the four formats sqasam documents reach a decoder.
#include <cstdint>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "sqasam/io.hpp"

namespace sqasam::io_detail {

enum class ImageFormat { Png, Jpeg, Tiff, Bmp };

struct ImageHeader {
    ImageFormat format = ImageFormat::Png;
    int64_t width = 0, height = 0;
    int orientation = 1;  // EXIF orientation 1..8 (1: as stored): JPEG's APP1 Exif, PNG's eXIf, TIFF's own tag
};

// Throws sqasam::Error naming `file` when the bytes are not a PNG, JPEG, TIFF (classic, not BigTIFF) or BMP file
// or their header is cut short or malformed.
ImageHeader read_image_header(const std::vector<uint8_t>& bytes, const std::string& file);

// libjpeg's verdict on the whole entropy-coded data (decoded at 1/8 scale, which reads every byte of it).
struct JpegCheck {
    bool data_missing = false;  // the file ends, or hits a marker, before all its pixels: libjpeg fills them grey
    std::string warning;        // libjpeg's first warning, "" when none
};
JpegCheck check_jpeg_data(const std::vector<uint8_t>& bytes);

// "rotated 90 degrees clockwise", ... for EXIF orientations 2..8.
std::string orientation_text(int orientation);

struct DecodedFile {
    cv::Mat pixels;               // as OpenCV decodes them, EXIF orientation applied, alpha dropped
    std::vector<ReadNote> notes;  // exif_orientation, jpeg_warning
};
// Header, size limit (ImageTooLarge), JPEG data check, then OpenCV's decoder; Errors name `path`.
DecodedFile decode_image_bytes(const std::vector<uint8_t>& bytes, const std::string& path, int64_t max_pixels);

// The readers behind read_image, read_label_map and read_probability_map, over decoded pixels.
ImageFile image_from_pixels(DecodedFile decoded, const std::string& path);
LabelMap label_map_from_pixels(DecodedFile decoded, const MaskReading& reading, const std::string& path);
cv::Mat probability_from_pixels(const cv::Mat& pixels, const std::string& path);

}  // namespace sqasam::io_detail
