// ops::Conv2d (oneDNN) against the plain reference convolution, over the shapes TinyViT uses and odd ones.
#include <gtest/gtest.h>

#include <ostream>
#include <random>
#include <stdexcept>
#include <vector>

#include "ops/ops.hpp"
#include "test_support.hpp"

namespace sqasam::ops {
namespace {

using test::random_values;

struct ConvCase {
    int64_t in, out, height, width, kernel, stride, padding, groups;
    bool bias;
};

void PrintTo(const ConvCase& c, std::ostream* out) {
    *out << c.in << "->" << c.out << " " << c.height << "x" << c.width << " k" << c.kernel << " s" << c.stride
         << " p" << c.padding << " g" << c.groups << (c.bias ? " bias" : "");
}

class Conv2dTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dTest, MatchesReferenceForEveryEpilogue) {
    const ConvCase c = GetParam();
    auto x = random_values(c.height * c.width * c.in, 1);
    auto w = random_values(c.out * (c.in / c.groups) * c.kernel * c.kernel, 2);
    auto b = random_values(c.out, 3);
    Conv2d conv(w.data(), c.bias ? b.data() : nullptr, c.out, c.in, c.kernel, c.stride, c.padding, c.groups);
    const int64_t out_h = conv.output_size(c.height), out_w = conv.output_size(c.width);
    EXPECT_EQ(out_h, (c.height + 2 * c.padding - c.kernel) / c.stride + 1);
    for (Epilogue epilogue : {Epilogue::store, Epilogue::gelu, Epilogue::relu, Epilogue::accumulate}) {
        auto fast = random_values(out_h * out_w * c.out, 4), reference = fast;  // accumulate adds to this
        conv.forward(x.data(), fast.data(), c.height, c.width, epilogue);
        ref::conv2d(x.data(), w.data(), c.bias ? b.data() : nullptr, reference.data(), c.in, c.out, c.height,
                    c.width, c.kernel, c.stride, c.padding, c.groups, epilogue);
        SCOPED_TRACE(int(epilogue));
        EXPECT_LE(test::max_abs_diff(fast, reference), 1e-5 * std::max(1.0, test::max_abs(reference)));
    }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dTest,
    ::testing::Values(ConvCase{3, 32, 37, 29, 3, 2, 1, 1, true},     // MobileSAM's first patch-embed conv
                      ConvCase{32, 64, 18, 18, 3, 2, 1, 1, true},    // its second
                      ConvCase{3, 32, 16, 16, 1, 1, 0, 1, true},     // LiteMedSAM's 1x1 patch embed
                      ConvCase{64, 64, 15, 15, 3, 1, 1, 64, true},   // MBConv / local conv: depthwise
                      ConvCase{128, 128, 16, 16, 3, 2, 1, 128, true},// patch merging, stride 2
                      ConvCase{40, 40, 9, 7, 3, 2, 1, 40, false},    // odd sizes, no bias
                      ConvCase{24, 16, 11, 13, 3, 1, 1, 1, false},   // dense 3x3 (the neck's)
                      ConvCase{12, 18, 10, 10, 3, 1, 1, 3, true}));  // grouped

// Without row padding, a strip of rows (with its context rows above and below) gives the padded convolution's
// output rows of the whole image that the strip covers: depthwise (TinyViT's MBConv strips) and dense, stride 1
// and 2 (its patch mergings' strips), fp32 and bf16 (against the reference on rounded inputs).
TEST(Conv2d, StripWithoutRowPaddingMatchesTheWholeImageRows) {
    const int64_t height = 13, width = 7, channels = 16, first = 2, rows = 3;  // output rows first .. first + rows - 1
    for (Precision precision : {Precision::fp32, Precision::bf16})
        for (int64_t groups : {int64_t{1}, channels})
            for (int64_t stride : {1, 2}) {
                if (precision == Precision::bf16 && !bf16_supported()) continue;
                auto x = random_values(height * width * channels, 5);
                auto w = random_values(channels * (channels / groups) * 9, 6), b = random_values(channels, 7);
                const Conv2d conv(w.data(), b.data(), channels, channels, 3, stride, 1, groups, precision);
                const int64_t out_w = conv.output_size(width), out_h = conv.output_size(height);
                std::vector<float> strip(rows * out_w * channels), whole(out_h * out_w * channels);
                const int64_t first_input = stride * first - 1, strip_height = stride * (rows - 1) + 3;
                conv.forward(x.data() + first_input * width * channels, strip.data(), strip_height, width,
                             Epilogue::gelu, false);
                if (precision == Precision::bf16) x = ref::round_to_bf16(x), w = ref::round_to_bf16(w);
                ref::conv2d(x.data(), w.data(), b.data(), whole.data(), channels, channels, height, width, 3, stride,
                            1, groups, Epilogue::gelu);
                const std::vector<float> expected(whole.begin() + first * out_w * channels,
                                                  whole.begin() + (first + rows) * out_w * channels);
                SCOPED_TRACE(testing::Message() << to_string(precision) << " groups " << groups << " stride " << stride);
                EXPECT_LE(test::max_abs_diff(strip, expected), 1e-5 * std::max(1.0, test::max_abs(expected)));
            }
}

TEST(Conv2d, RejectsInconsistentShapes) {
    std::vector<float> w(64), x(4 * 4 * 4), y(64);
    EXPECT_THROW(Conv2d(w.data(), nullptr, 6, 4, 1, 1, 0, 4), std::invalid_argument);  // 6 outputs over 4 groups
    Conv2d conv(w.data(), nullptr, 4, 4, 3, 1, 0, 4);
    EXPECT_THROW(conv.forward(x.data(), y.data(), 2, 2), std::invalid_argument);  // input smaller than the kernel
}

}  // namespace
}  // namespace sqasam::ops
