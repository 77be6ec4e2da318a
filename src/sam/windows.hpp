#pragma once
// Window partitioning shared by SAM's ViT and TinyViT: a square grid of tokens cut into w x w windows.
#include <cstdint>

namespace sqasam::sam {

// Gathers a grid (size x size tokens of dim) into windows of w x w tokens (window-major, row-major inside),
// padding the grid to a multiple of w with copies of pad_row (dim floats): zeros as the official code pads, or
// what a zero token becomes after a layer already applied (SAM's ViT partitions its qkv rows).
void window_partition(const float* grid, float* windows, int64_t size, int64_t dim, int64_t w, const float* pad_row);
// The inverse, dropping the padding.
void window_unpartition(const float* windows, float* grid, int64_t size, int64_t dim, int64_t w);

}  // namespace sqasam::sam
