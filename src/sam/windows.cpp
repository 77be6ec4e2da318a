#include "sam/windows.hpp"

#include <algorithm>

namespace sqasam::sam {

void window_partition(const float* grid, float* windows, int64_t size, int64_t dim, int64_t w, const float* pad_row) {
    const int64_t per_side = (size + w - 1) / w;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < per_side * w * per_side; ++row) {  // one window row per iteration
        const int64_t wy = row / (w * per_side), y_in = row / per_side % w, wx = row % per_side;
        const int64_t y = wy * w + y_in;
        for (int64_t x_in = 0; x_in < w; ++x_in) {
            const int64_t x = wx * w + x_in;
            float* dst = windows + (((wy * per_side + wx) * w + y_in) * w + x_in) * dim;
            std::copy_n(y < size && x < size ? grid + (y * size + x) * dim : pad_row, dim, dst);
        }
    }
}

void window_unpartition(const float* windows, float* grid, int64_t size, int64_t dim, int64_t w) {
    const int64_t per_side = (size + w - 1) / w;
#pragma omp parallel for schedule(static)
    for (int64_t y = 0; y < size; ++y)
        for (int64_t x = 0; x < size; ++x) {
            const int64_t window = y / w * per_side + x / w;
            std::copy_n(windows + ((window * w + y % w) * w + x % w) * dim, dim, grid + (y * size + x) * dim);
        }
}

}  // namespace sqasam::sam
