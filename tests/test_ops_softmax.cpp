// softmax_interleaved (softmaxes over values interleaved with others, in vector lanes where it can) against the
// plain reference softmax over the same values gathered into rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/ops.hpp"
#include "test_support.hpp"

namespace sqasam::ops {
namespace {

TEST(SoftmaxInterleaved, MatchesReference) {
    // Group counts with a lane path (dividing 16) and without (3, 24); row counts below, at and off a multiple of
    // a register's rows; column counts from 1 to past the lane path's limit; logits spread wide enough that some
    // exponentials underflow.
    for (int64_t groups : {1, 8, 16, 3, 24})
        for (int64_t rows : {1, 15, 16, 33, 4096 + 5})
            for (int64_t cols : {1, 2, 7, 8, 13, 32, 33}) {
                const uint32_t seed = uint32_t(rows * 64 + cols + groups * 8192);
                std::vector<float> fast = test::random_values(rows * cols * groups, seed, -40.0f, 40.0f);
                // the reference: each (row, group)'s values gathered into a row of its own
                std::vector<float> gathered(fast.size());
                for (int64_t r = 0; r < rows; ++r)
                    for (int64_t g = 0; g < groups; ++g)
                        for (int64_t c = 0; c < cols; ++c)
                            gathered[(r * groups + g) * cols + c] = fast[(r * cols + c) * groups + g];
                ref::softmax_rows(gathered.data(), rows * groups, cols);
                softmax_interleaved(fast.data(), rows, cols, groups);
                double worst = 0;
                for (int64_t r = 0; r < rows; ++r)
                    for (int64_t g = 0; g < groups; ++g)
                        for (int64_t c = 0; c < cols; ++c)
                            worst = std::max(worst, double(std::abs(fast[(r * cols + c) * groups + g] -
                                                                     gathered[(r * groups + g) * cols + c])));
                EXPECT_LE(worst, 1e-6) << rows << " rows x " << cols << " columns x " << groups << " groups";
            }
}

}  // namespace
}  // namespace sqasam::ops
