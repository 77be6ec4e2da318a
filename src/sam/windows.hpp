#pragma once
// Window partitioning shared by SAM's ViT and TinyViT: a square grid of tokens cut into w x w windows.
#include <cstdint>

namespace sqasam::sam {

// The number of w x w windows that cover a size x size grid (padded to a multiple of w).
int64_t window_count(int64_t size, int64_t w);

// Gathers windows [first, first + count) of a grid (size x size tokens of dim; windows numbered row-major) into
// count windows of w x w tokens (window-major, row-major inside), padding the grid to a multiple of w with copies of
// pad_row (dim floats): zeros as the official code pads, or what a zero token becomes after a layer already
// applied (SAM's ViT partitions its qkv rows).
void window_partition(const float* grid, float* windows, int64_t size, int64_t dim, int64_t w, const float* pad_row,
                      int64_t first, int64_t count);
// The inverse for those windows, dropping the padding; with accumulate, the windows' tokens are added to the grid's.
void window_unpartition(const float* windows, float* grid, int64_t size, int64_t dim, int64_t w, int64_t first,
                        int64_t count, bool accumulate = false);

// Every window of the grid.
inline void window_partition(const float* grid, float* windows, int64_t size, int64_t dim, int64_t w,
                             const float* pad_row) {
    window_partition(grid, windows, size, dim, w, pad_row, 0, window_count(size, w));
}
inline void window_unpartition(const float* windows, float* grid, int64_t size, int64_t dim, int64_t w) {
    window_unpartition(windows, grid, size, dim, w, 0, window_count(size, w));
}

}  // namespace sqasam::sam
