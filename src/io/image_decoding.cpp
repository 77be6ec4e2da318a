#include "io/image_decoding.hpp"

#include <array>
#include <csetjmp>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <optional>

#include <jpeglib.h>
#include <jerror.h>

#include "sqasam/error.hpp"

namespace sqasam::io_detail {
namespace {

// Bounds-checked reads of big- or little-endian integers from a byte span.
class Bytes {
public:
    Bytes(const uint8_t* data, size_t size, const std::string& file) : data_(data), size_(size), file_(file) {}
    size_t size() const { return size_; }
    bool has(size_t offset, size_t count) const { return offset <= size_ && count <= size_ - offset; }
    uint32_t uint(size_t offset, size_t width, bool big_endian) const {
        if (!has(offset, width)) throw Error(file_, "image header is cut short");
        uint32_t value = 0;
        for (size_t i = 0; i < width; ++i) {
            const uint32_t byte = data_[offset + (big_endian ? i : width - 1 - i)];
            value = value << 8 | byte;
        }
        return value;
    }
    bool matches(size_t offset, const char* text, size_t count) const {
        return has(offset, count) && std::memcmp(data_ + offset, text, count) == 0;
    }
    Bytes from(size_t offset) const {
        if (!has(offset, 0)) throw Error(file_, "image header is cut short");
        return Bytes(data_ + offset, size_ - offset, file_);
    }

private:
    const uint8_t* data_;
    size_t size_;
    const std::string& file_;
};

// The first image file directory of a TIFF structure (a TIFF file, or the payload of an Exif block): the values of
// the SHORT or LONG entries asked for, in `tags` order; missing ones stay unset.
template <size_t N>
std::array<std::optional<uint32_t>, N> tiff_tags(const Bytes& tiff, const std::array<uint16_t, N>& tags,
                                                 const std::string& file) {
    bool big_endian;
    if (tiff.matches(0, "II*\0", 4)) big_endian = false;
    else if (tiff.matches(0, "MM\0*", 4)) big_endian = true;
    else if (tiff.matches(0, "II+\0", 4) || tiff.matches(0, "MM\0+", 4)) throw Error(file, "BigTIFF is not supported");
    else throw Error(file, "malformed TIFF structure (no byte-order mark)");
    const size_t directory = tiff.uint(4, 4, big_endian);
    const size_t entries = tiff.uint(directory, 2, big_endian);
    std::array<std::optional<uint32_t>, N> values;
    for (size_t i = 0; i < entries; ++i) {
        const size_t entry = directory + 2 + 12 * i;
        const uint16_t tag = static_cast<uint16_t>(tiff.uint(entry, 2, big_endian));
        const uint32_t type = tiff.uint(entry + 2, 2, big_endian);
        const uint32_t count = tiff.uint(entry + 4, 4, big_endian);
        constexpr uint32_t kShort = 3, kLong = 4;
        if (count != 1 || (type != kShort && type != kLong)) continue;
        for (size_t t = 0; t < N; ++t)
            if (tags[t] == tag) values[t] = tiff.uint(entry + 8, type == kShort ? 2 : 4, big_endian);
    }
    return values;
}

constexpr uint16_t kOrientationTag = 274;

// An Orientation tag's value, 1 (as stored) where it is missing or outside 1..8.
int orientation_of(const std::optional<uint32_t>& tag) {
    return tag && *tag >= 1 && *tag <= 8 ? static_cast<int>(*tag) : 1;
}

int orientation_in(const Bytes& tiff, const std::string& file) {
    return orientation_of(tiff_tags(tiff, std::array<uint16_t, 1>{kOrientationTag}, file)[0]);
}

ImageHeader png_header(const Bytes& bytes, const std::string& file) {
    if (!bytes.matches(12, "IHDR", 4)) throw Error(file, "malformed PNG (no IHDR chunk first)");
    ImageHeader header{ImageFormat::Png, bytes.uint(16, 4, true), bytes.uint(20, 4, true), 1};
    // An eXIf chunk, if any, precedes the image data.
    for (size_t chunk = 8; bytes.has(chunk, 8) && !bytes.matches(chunk + 4, "IDAT", 4);) {
        const size_t length = bytes.uint(chunk, 4, true);
        if (bytes.matches(chunk + 4, "eXIf", 4) && bytes.has(chunk + 8, length))
            header.orientation = orientation_in(Bytes(bytes.from(chunk + 8)), file);
        if (!bytes.has(chunk + 12, length)) break;
        chunk += 12 + length;
    }
    return header;
}

bool is_start_of_frame(uint8_t marker) {  // SOF0..SOF15 less DHT (C4), JPG (C8) and DAC (CC)
    return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

ImageHeader jpeg_header(const Bytes& bytes, const std::string& file) {
    ImageHeader header{ImageFormat::Jpeg, 0, 0, 1};
    size_t at = 2;
    for (;;) {
        if (bytes.uint(at, 1, true) != 0xFF) throw Error(file, "malformed JPEG (no marker where one belongs)");
        while (bytes.uint(at, 1, true) == 0xFF) ++at;  // fill bytes
        const uint8_t marker = static_cast<uint8_t>(bytes.uint(at, 1, true));
        ++at;
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no payload
        if (marker == 0xD9 || marker == 0xDA) throw Error(file, "malformed JPEG (no frame header)");
        const size_t length = bytes.uint(at, 2, true);
        if (length < 2) throw Error(file, "malformed JPEG (a segment length below 2)");
        if (marker == 0xE1 && bytes.matches(at + 2, "Exif\0\0", 6) && bytes.has(at, length))
            header.orientation = orientation_in(bytes.from(at + 8), file);
        if (is_start_of_frame(marker)) {
            header.height = bytes.uint(at + 3, 2, true);
            header.width = bytes.uint(at + 5, 2, true);
            return header;
        }
        at += length;
    }
}

ImageHeader tiff_header(const Bytes& bytes, const std::string& file) {
    constexpr uint16_t kWidth = 256, kLength = 257;
    const auto tags = tiff_tags(bytes, std::array<uint16_t, 3>{kWidth, kLength, kOrientationTag}, file);
    if (!tags[0] || !tags[1]) throw Error(file, "malformed TIFF (no image width or length)");
    return {ImageFormat::Tiff, *tags[0], *tags[1], orientation_of(tags[2])};
}

ImageHeader bmp_header(const Bytes& bytes, const std::string& file) {
    const uint32_t info_size = bytes.uint(14, 4, false);
    if (info_size == 12)  // BITMAPCOREHEADER: 16-bit sizes
        return {ImageFormat::Bmp, bytes.uint(18, 2, false), bytes.uint(20, 2, false), 1};
    if (info_size < 16) throw Error(file, "malformed BMP (unknown info header)");
    const int32_t width = static_cast<int32_t>(bytes.uint(18, 4, false));
    const int32_t height = static_cast<int32_t>(bytes.uint(22, 4, false));  // negative: rows stored top-down
    return {ImageFormat::Bmp, width, height == INT32_MIN ? int64_t{1} << 31 : std::abs(int64_t{height}), 1};
}

// libjpeg reports errors through longjmp; warnings are kept, not printed.
struct JpegErrors {
    jpeg_error_mgr manager;
    std::jmp_buf jump;
    bool data_missing = false;
    char first_warning[JMSG_LENGTH_MAX] = "";
};

void jpeg_error_exit(j_common_ptr info) { std::longjmp(reinterpret_cast<JpegErrors*>(info->err)->jump, 1); }

void jpeg_emit_message(j_common_ptr info, int level) {
    if (level >= 0) return;  // trace messages
    auto* errors = reinterpret_cast<JpegErrors*>(info->err);
    const int code = errors->manager.msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER) errors->data_missing = true;
    if (errors->manager.num_warnings++ == 0) errors->manager.format_message(info, errors->first_warning);
}

}  // namespace

ImageHeader read_image_header(const std::vector<uint8_t>& data, const std::string& file) {
    const Bytes bytes(data.data(), data.size(), file);
    ImageHeader header;
    if (bytes.matches(0, "\x89PNG\r\n\x1a\n", 8)) header = png_header(bytes, file);
    else if (bytes.matches(0, "\xFF\xD8\xFF", 3)) header = jpeg_header(bytes, file);
    else if (bytes.matches(0, "II", 2) || bytes.matches(0, "MM", 2)) header = tiff_header(bytes, file);
    else if (bytes.matches(0, "BM", 2)) header = bmp_header(bytes, file);
    else throw Error(file, "not a PNG, JPEG, TIFF or BMP file");
    if (header.width <= 0 || header.height <= 0)
        throw Error(file, "image header gives an empty size (" + std::to_string(header.width) + "x" +
                              std::to_string(header.height) + ")");
    return header;
}

JpegCheck check_jpeg_data(const std::vector<uint8_t>& bytes) {
    jpeg_decompress_struct info;
    JpegErrors errors;
    info.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = jpeg_error_exit;
    errors.manager.emit_message = jpeg_emit_message;
    if (setjmp(errors.jump)) {  // a fatal error: the decoder that follows reports it in its own words
        jpeg_destroy_decompress(&info);
        return {errors.data_missing, errors.first_warning};
    }
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&info, TRUE);
    info.scale_num = 1;  // the entropy-coded data is read whole at any scale
    info.scale_denom = 8;
    jpeg_start_decompress(&info);
    JSAMPARRAY row = (*info.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&info), JPOOL_IMAGE,
                                    info.output_width * info.output_components, 1);
    while (info.output_scanline < info.output_height) jpeg_read_scanlines(&info, row, 1);
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    return {errors.data_missing, errors.first_warning};
}

std::string orientation_text(int orientation) {
    switch (orientation) {
        case 2: return "mirrored left to right";
        case 3: return "rotated 180 degrees";
        case 4: return "mirrored top to bottom";
        case 5: return "transposed (mirrored about the main diagonal)";
        case 6: return "rotated 90 degrees clockwise";
        case 7: return "transversed (mirrored about the anti-diagonal)";
        case 8: return "rotated 90 degrees counter-clockwise";
        default: return "as stored";
    }
}

}  // namespace sqasam::io_detail
