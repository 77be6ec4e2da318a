// softmax_short_rows (the lane-parallel softmax for rows of a few columns) against the plain reference softmax.
#include <gtest/gtest.h>

#include <vector>

#include "ops/ops.hpp"
#include "test_support.hpp"

namespace sqasam::ops {
namespace {

TEST(SoftmaxShortRows, MatchesReference) {
    // Row counts below, at and off a multiple of the 16 lanes; column counts from 1 to past the lane path's limit;
    // logits spread wide enough that some exponentials underflow.
    for (int64_t rows : {1, 15, 16, 33, 4096 * 8 + 5})
        for (int64_t cols : {1, 2, 7, 8, 13, 32, 33}) {
            std::vector<float> fast = test::random_values(rows * cols, uint32_t(rows * 64 + cols), -40.0f, 40.0f);
            std::vector<float> reference = fast;
            softmax_short_rows(fast.data(), rows, cols);
            ref::softmax_rows(reference.data(), rows, cols);
            EXPECT_LE(test::max_abs_diff(fast, reference), 1e-6) << rows << " x " << cols;
        }
}

}  // namespace
}  // namespace sqasam::ops
