#pragma once
// NumPy .npy files (format version 1.0, C order, little-endian), the array format sqasam's outputs use so that
// they load with a plain numpy.load(); and the header of .npy arrays it reads (nnU-Net's probabilities in .npz).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace sqasam {

// The complete file contents for an array of the given shape ("<f4" / "|u1"); data holds prod(shape) values.
std::string npy_bytes(const float* data, const std::vector<int64_t>& shape);
std::string npy_bytes(const uint8_t* data, const std::vector<int64_t>& shape);

// Writes the file atomically (write_file_atomically): a reader never sees half of it.
void write_npy(const std::filesystem::path& path, const float* data, const std::vector<int64_t>& shape);
void write_npy(const std::filesystem::path& path, const uint8_t* data, const std::vector<int64_t>& shape);

// An .npy header (versions 1-3): the array's dtype ("<f4", "<f2", "|u1", ...), order and shape.
struct NpyHeader {
    std::string descr;
    bool fortran_order = false;
    std::vector<int64_t> shape;
    int64_t count() const;  // product of the shape
};
// Reads the header through `read` (which must deliver exactly the bytes asked for, or throw), leaving the source
// at the first data byte. A malformed header is an sqasam::Error naming `file`.
NpyHeader read_npy_header(const std::function<void(char*, size_t)>& read, const std::string& file);

}  // namespace sqasam
