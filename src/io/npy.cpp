#include "io/npy.hpp"

#include <bit>
#include <cstring>

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

}  // namespace sqasam
