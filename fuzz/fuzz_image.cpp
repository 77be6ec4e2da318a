// libFuzzer entry: arbitrary bytes as an image file through the header reader, the size limit, the JPEG check,
// OpenCV's decoders and every reading of the pixels: as an image, as a mask under the automatic rule and each forced
// kind, and as a probability map. Every rejection must be a sqasam::Error; any other exception, crash or
// sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "io/image_decoding.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace sqasam;
    constexpr int64_t kMaxPixels = int64_t{1} << 22;  // keeps each input's memory small under the sanitizers
    const std::vector<uint8_t> bytes(data, data + size);
    io_detail::DecodedFile decoded;
    try {
        decoded = io_detail::decode_image_bytes(bytes, "fuzz-input", kMaxPixels);
    } catch (const Error&) {
        return 0;
    }
    auto attempt = [](auto read) {
        try {
            read();
        } catch (const Error&) {
        }
    };
    attempt([&] { io_detail::image_from_pixels(decoded, "fuzz-input"); });
    for (const std::optional<MapKind> kind : {std::optional<MapKind>(), std::optional<MapKind>(MapKind::Binary),
                                              std::optional<MapKind>(MapKind::Labels),
                                              std::optional<MapKind>(MapKind::Soft)})
        attempt([&] { io_detail::label_map_from_pixels(decoded, MaskReading{kind, {}, kMaxPixels}, "fuzz-input"); });
    attempt([&] { io_detail::probability_from_pixels(decoded.pixels, "fuzz-input"); });
    return 0;
}
