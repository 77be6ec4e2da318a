#include "sam/windows.hpp"

#include <algorithm>

#include "ops/ops.hpp"

namespace sqasam::sam {

int64_t window_count(int64_t size, int64_t w) {
    const int64_t per_side = (size + w - 1) / w;
    return per_side * per_side;
}

void window_partition(const float* grid, float* windows, int64_t size, int64_t dim, int64_t w, const float* pad_row,
                      int64_t first, int64_t count) {
    ops::ProfileScope scope(ops::OpClass::layout);
    const int64_t per_side = (size + w - 1) / w;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < count * w; ++row) {  // one window row per iteration
        const int64_t window = first + row / w, y = window / per_side * w + row % w;
        for (int64_t x_in = 0; x_in < w; ++x_in) {
            const int64_t x = window % per_side * w + x_in;
            std::copy_n(y < size && x < size ? grid + (y * size + x) * dim : pad_row, dim, windows + (row * w + x_in) * dim);
        }
    }
}

void window_unpartition(const float* windows, float* grid, int64_t size, int64_t dim, int64_t w, int64_t first,
                        int64_t count, bool accumulate) {
    ops::ProfileScope scope(ops::OpClass::layout);
    const int64_t per_side = (size + w - 1) / w;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < count * w; ++row) {
        const int64_t window = first + row / w, y = window / per_side * w + row % w;
        if (y >= size) continue;
        for (int64_t x_in = 0; x_in < w; ++x_in) {
            const int64_t x = window % per_side * w + x_in;
            if (x >= size) break;
            const float* from = windows + (row * w + x_in) * dim;
            float* to = grid + (y * size + x) * dim;
            if (!accumulate) {
                std::copy_n(from, dim, to);
                continue;
            }
#pragma omp simd
            for (int64_t c = 0; c < dim; ++c) to[c] += from[c];
        }
    }
}

}  // namespace sqasam::sam
