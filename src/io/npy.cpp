#include "io/npy.hpp"

#include <bit>
#include <cstring>
#include <regex>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
namespace {

static_assert(std::endian::native == std::endian::little, "the .npy writer assumes a little-endian host");

std::string npy_file(const void* data, size_t element_size, const char* descr, const std::vector<int64_t>& shape) {
    std::string dims;
    int64_t count = 1;
    for (int64_t d : shape) {
        dims += std::to_string(d) + ", ";
        count *= d;
    }
    if (shape.size() > 1) dims.resize(dims.size() - 2);  // "(3, 4)"; a 1-D shape keeps its comma: "(3,)"
    if (shape.size() == 1) dims.resize(dims.size() - 1);
    std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple of 64, ending in '\n'.
    const size_t unpadded = 10 + header.size() + 1;
    header.append((64 - unpadded % 64) % 64, ' ');
    header += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    const uint16_t header_len = static_cast<uint16_t>(header.size());
    out.append(reinterpret_cast<const char*>(&header_len), 2);
    out += header;
    out.append(static_cast<const char*>(data), static_cast<size_t>(count) * element_size);
    return out;
}

}  // namespace

std::string npy_bytes(const float* data, const std::vector<int64_t>& shape) {
    return npy_file(data, sizeof(float), "<f4", shape);
}

std::string npy_bytes(const uint8_t* data, const std::vector<int64_t>& shape) {
    return npy_file(data, 1, "|u1", shape);
}

void write_npy(const std::filesystem::path& path, const float* data, const std::vector<int64_t>& shape) {
    write_file_atomically(path, npy_bytes(data, shape));
}

void write_npy(const std::filesystem::path& path, const uint8_t* data, const std::vector<int64_t>& shape) {
    write_file_atomically(path, npy_bytes(data, shape));
}

int64_t NpyHeader::count() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

NpyHeader read_npy_header(const std::function<void(char*, size_t)>& read, const std::string& file) {
    char prefix[8];
    read(prefix, sizeof prefix);
    if (std::memcmp(prefix, "\x93NUMPY", 6) != 0) throw Error(file, "not a .npy array (no \\x93NUMPY magic)");
    const int major = static_cast<unsigned char>(prefix[6]);
    if (major < 1 || major > 3) throw Error(file, "unknown .npy format version " + std::to_string(major));
    // Version 1 has a 2-byte header length, versions 2 and 3 a 4-byte one (little-endian).
    unsigned char length_bytes[4] = {0, 0, 0, 0};
    read(reinterpret_cast<char*>(length_bytes), major == 1 ? 2 : 4);
    const uint32_t length = length_bytes[0] | length_bytes[1] << 8 | length_bytes[2] << 16 |
                            static_cast<uint32_t>(length_bytes[3]) << 24;
    constexpr uint32_t kMaxHeader = 1 << 20;
    if (length > kMaxHeader) throw Error(file, ".npy header of " + std::to_string(length) + " bytes");
    std::string header(length, '\0');
    read(header.data(), length);

    static const std::regex descr_pattern(R"('descr'\s*:\s*'([^']*)')");
    static const std::regex order_pattern(R"('fortran_order'\s*:\s*(True|False))");
    static const std::regex shape_pattern(R"('shape'\s*:\s*\(([^)]*)\))");
    std::smatch descr, order, shape;
    if (!std::regex_search(header, descr, descr_pattern) || !std::regex_search(header, order, order_pattern) ||
        !std::regex_search(header, shape, shape_pattern))
        throw Error(file, "malformed .npy header: " + header);
    NpyHeader result;
    result.descr = descr[1];
    result.fortran_order = order[1] == "True";
    const std::string dims = shape[1];
    static const std::regex dim_pattern(R"(\d+)");
    for (auto it = std::sregex_iterator(dims.begin(), dims.end(), dim_pattern); it != std::sregex_iterator(); ++it)
        result.shape.push_back(std::stoll(it->str()));
    return result;
}

}  // namespace sqasam
