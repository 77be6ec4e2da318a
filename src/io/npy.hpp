#pragma once
// NumPy .npy files (format version 1.0, C order, little-endian), the array format sqasam's outputs use so that
// they load with a plain numpy.load().
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace sqasam {

// The complete file contents for an array of the given shape ("<f4" / "|u1"); data holds prod(shape) values.
std::string npy_bytes(const float* data, const std::vector<int64_t>& shape);
std::string npy_bytes(const uint8_t* data, const std::vector<int64_t>& shape);

// Writes the file atomically (write_file_atomically): a reader never sees half of it.
void write_npy(const std::filesystem::path& path, const float* data, const std::vector<int64_t>& shape);
void write_npy(const std::filesystem::path& path, const uint8_t* data, const std::vector<int64_t>& shape);

}  // namespace sqasam
