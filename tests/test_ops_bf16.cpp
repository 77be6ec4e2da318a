// The bf16 products (Precision::bf16) against the plain references. Where the inputs are rounded to bfloat16 first,
// the products of two bf16 values are exact in float32 (8 + 8 significant bits), so the fast path may differ from
// the double-precision reference only by float32 accumulation: the fp32 tests' tolerance. Against unrounded
// inputs the difference is bounded by the rounding itself: with u = 2^-9 (half a bf16 unit in the last place),
// |x w - bf16(x) bf16(w)| <= (2u + u^2) |x w| per term.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "ops/ops.hpp"
#include "test_support.hpp"

namespace sqasam::ops {
namespace {

constexpr double kUnitRoundoff = 1.0 / 512;  // bf16 keeps 8 significant bits: u = 2^-9
constexpr double kProductRounding = 2 * kUnitRoundoff + kUnitRoundoff * kUnitRoundoff;
constexpr double kFloatTolerance = 1e-5;  // float32 accumulation, as in test_ops_kernels.cpp

using test::random_values;

std::vector<float> absolute(std::vector<float> values) {
    for (float& v : values) v = std::fabs(v);
    return values;
}

void expect_close(const std::vector<float>& fast, const std::vector<float>& reference, double tolerance) {
    ASSERT_EQ(fast.size(), reference.size());
    EXPECT_LE(test::max_abs_diff(fast, reference), tolerance * std::max(1.0, test::max_abs(reference)));
}

class Bf16 : public ::testing::Test {
protected:
    void SetUp() override {
        if (!bf16_supported()) GTEST_SKIP() << "no bf16 matrix instructions here (fallback tested in test_cli_precision)";
    }
};

TEST(RoundToBf16, RoundsToNearestEvenAtEightSignificantBits) {
    const float step = std::ldexp(1.0f, -7);  // one bf16 unit in the last place at 1
    EXPECT_EQ(ref::round_to_bf16(1.0f), 1.0f);
    EXPECT_EQ(ref::round_to_bf16(1.0f + 0.4f * step), 1.0f);
    EXPECT_EQ(ref::round_to_bf16(1.0f + 0.6f * step), 1.0f + step);
    EXPECT_EQ(ref::round_to_bf16(1.0f + 0.5f * step), 1.0f);                // tie: to the even neighbour
    EXPECT_EQ(ref::round_to_bf16(1.0f + 1.5f * step), 1.0f + 2.0f * step);  // tie: to the even neighbour
    EXPECT_EQ(ref::round_to_bf16(-3.0f - 0.6f * 2 * step), -3.0f - 2 * step);
    EXPECT_EQ(ref::round_to_bf16(0.0f), 0.0f);
}

TEST(Precision, NamesRoundTrip) {
    for (Precision p : {Precision::fp32, Precision::bf16}) EXPECT_EQ(precision_from_string(to_string(p)), p);
    EXPECT_THROW(precision_from_string("fp16"), std::runtime_error);
}

// The speed-up is a measurement, taken once (its value depends on the CPU: about 0.5 on Intel Xeons without AMX,
// about 1.9 on AMD Zen 4); auto's choice follows it.
TEST(Precision, Bf16SpeedupIsMeasuredOnceWhereSupportedAndDecidesTheFastest) {
    const double speedup = bf16_speedup();
    if (bf16_supported()) {
        EXPECT_GT(speedup, 0.1);
        EXPECT_LT(speedup, 10.0);
    } else {
        EXPECT_EQ(speedup, 0.0);
    }
    EXPECT_EQ(bf16_speedup(), speedup);
    EXPECT_EQ(fastest_precision(), speedup >= kBf16WorthwhileSpeedup ? Precision::bf16 : Precision::fp32);
}

TEST_F(Bf16, EffectivePrecisionKeepsWhatIsSupported) {
    EXPECT_EQ(effective_precision(Precision::bf16), Precision::bf16);
    EXPECT_EQ(effective_precision(Precision::fp32), Precision::fp32);
}

struct LinearCase {
    int64_t rows, out, in;
    bool bias;
};

class Bf16LinearTest : public Bf16, public ::testing::WithParamInterface<LinearCase> {};

TEST_P(Bf16LinearTest, EqualsTheReferenceOnRoundedInputsForEveryEpilogue) {
    auto [rows, out, in, has_bias] = GetParam();
    auto x = random_values(rows * in, 1), w = random_values(out * in, 2), b = random_values(out, 3);
    const Linear layer(w.data(), has_bias ? b.data() : nullptr, out, in, Precision::bf16);
    ASSERT_EQ(layer.precision(), Precision::bf16);
    const auto x_bf16 = ref::round_to_bf16(x), w_bf16 = ref::round_to_bf16(w);
    for (Epilogue epilogue : {Epilogue::store, Epilogue::gelu, Epilogue::relu, Epilogue::accumulate}) {
        auto fast = random_values(rows * out, 4), reference = fast;  // accumulate adds to this
        layer.forward(x.data(), fast.data(), rows, epilogue);
        ref::linear(x_bf16.data(), w_bf16.data(), has_bias ? b.data() : nullptr, reference.data(), rows, out, in,
                    epilogue);
        SCOPED_TRACE(int(epilogue));
        expect_close(fast, reference, kFloatTolerance);
    }
}

TEST_P(Bf16LinearTest, StaysWithinTheRoundingBoundOfTheExactProduct) {
    auto [rows, out, in, has_bias] = GetParam();
    auto x = random_values(rows * in, 5), w = random_values(out * in, 6), b = random_values(out, 7);
    const Linear layer(w.data(), has_bias ? b.data() : nullptr, out, in, Precision::bf16);
    std::vector<float> fast(rows * out), exact(rows * out), magnitude(rows * out);
    layer.forward(x.data(), fast.data(), rows);
    ref::linear(x.data(), w.data(), has_bias ? b.data() : nullptr, exact.data(), rows, out, in);
    const auto x_abs = absolute(x), w_abs = absolute(w);
    ref::linear(x_abs.data(), w_abs.data(), nullptr, magnitude.data(), rows, out, in);  // sum |x w| per output
    for (size_t i = 0; i < fast.size(); ++i)
        ASSERT_LE(std::fabs(fast[i] - exact[i]), kProductRounding * magnitude[i] + kFloatTolerance * magnitude[i])
            << "output " << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16LinearTest,
                         ::testing::Values(LinearCase{1, 1, 1, true}, LinearCase{7, 13, 5, false},
                                           LinearCase{37, 129, 65, true}, LinearCase{300, 17, 200, true},
                                           LinearCase{1000, 96, 64, true}, LinearCase{5, 256, 256, true}));

// Inputs with per-column offsets 64 times their spread (as TinyViT's convolutional stage has, a few times over): a
// centred layer rounds x - m, |x - m| <= 2 spread with m a mean of some rows, so its error stays within the rounding
// bound of the spread alone, a bound that the plain bf16 layer (rounding x itself) exceeds.
TEST_F(Bf16, CentredLinearRoundsOnlyTheSpreadAroundTheColumnMeans) {
    const int64_t rows = 1000, out = 96, in = 64;
    const float spread = 0.5f;
    auto x = random_values(rows * in, 10), offsets = random_values(in, 11), w = random_values(out * in, 12);
    const auto b = random_values(out, 13);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < in; ++i) x[r * in + i] = 64 * spread * offsets[i] + spread * x[r * in + i];
    const Linear centred(w.data(), b.data(), out, in, Precision::bf16, true);
    const Linear plain(w.data(), b.data(), out, in, Precision::bf16);
    std::vector<float> exact(rows * out), magnitude(rows * out);
    ref::linear(x.data(), w.data(), b.data(), exact.data(), rows, out, in);
    const std::vector<float> spread_bound(rows * in, 2 * spread);  // x's noise lies in [-spread, spread]
    const auto w_abs = absolute(w), x_abs = absolute(x);
    ref::linear(spread_bound.data(), w_abs.data(), nullptr, magnitude.data(), rows, out, in);  // sum 2 s |w|
    std::vector<float> full_magnitude(rows * out);
    ref::linear(x_abs.data(), w_abs.data(), nullptr, full_magnitude.data(), rows, out, in);   // sum |x w|
    for (Epilogue epilogue : {Epilogue::store, Epilogue::accumulate}) {
        std::vector<float> fast(rows * out, 1.0f), reference = exact;
        if (epilogue == Epilogue::accumulate)
            for (float& v : reference) v += 1.0f;
        centred.forward(x.data(), fast.data(), rows, epilogue);
        for (size_t i = 0; i < fast.size(); ++i)  // float32 accumulation: tolerance relative to the full magnitude
            ASSERT_LE(std::fabs(fast[i] - reference[i]), kProductRounding * magnitude[i] + kFloatTolerance * full_magnitude[i])
                << "output " << i << ", epilogue " << int(epilogue);
    }
    std::vector<float> fp32(rows * out);  // centring is a bf16 matter: an fp32 layer ignores it
    Linear(w.data(), b.data(), out, in, Precision::fp32, true).forward(x.data(), fp32.data(), rows);
    expect_close(fp32, exact, kFloatTolerance);
    std::vector<float> rounded_whole(rows * out);
    plain.forward(x.data(), rounded_whole.data(), rows);
    size_t beyond = 0;
    for (size_t i = 0; i < exact.size(); ++i)
        beyond += std::fabs(rounded_whole[i] - exact[i]) > kProductRounding * magnitude[i] + kFloatTolerance * full_magnitude[i];
    EXPECT_GT(beyond, exact.size() / 10);
}

TEST_F(Bf16, PackedMatrixEqualsTheReferenceOnRoundedInputs) {
    for (auto [m, k, n, transpose_b] : {std::tuple<int64_t, int64_t, int64_t, bool>{1, 1, 1, false},
                                        {7, 16, 300, true}, {33, 196, 64, false}, {100, 64, 4096, true},
                                        {3, 33, 7, false}}) {
        const int64_t ldb = (transpose_b ? k : n) + 5;
        auto a = random_values(m * k, 8), b = random_values((transpose_b ? n : k) * ldb, 9);
        PackedMatrix packed;
        packed.pack(b.data(), k, n, ldb, transpose_b, Precision::bf16);
        ASSERT_EQ(packed.precision(), Precision::bf16);
        std::vector<float> fast(m * n), reference(m * n);
        packed.multiply(a.data(), fast.data(), m, 0.5f);
        const auto a_bf16 = ref::round_to_bf16(a), b_bf16 = ref::round_to_bf16(b);
        ref::matmul(a_bf16.data(), b_bf16.data(), reference.data(), m, n, k, k, ldb, n, transpose_b, 0.5f);
        SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
        expect_close(fast, reference, kFloatTolerance);
    }
}

std::vector<uint16_t> bf16_bits(const std::vector<float>& values);

// A right-hand side given in bf16 and not packed (the mask decoder's weighted sums of its bf16 image rows): the
// product of the rounded operands, with strided rows.
TEST_F(Bf16, MatmulWithABf16RightHandSideEqualsTheReferenceOnRoundedInputs) {
    for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 33, 7}, {64, 4096, 256}, {40, 300, 64}}) {
        const int64_t ldb = n + 3;
        auto a = random_values(m * k, 23), b = random_values(k * ldb, 24);
        const auto b_bits = bf16_bits(b);
        std::vector<float> fast(m * n), reference(m * n);
        matmul(a.data(), b_bits.data(), fast.data(), m, n, k, ldb);
        const auto a_bf16 = ref::round_to_bf16(a), b_bf16 = ref::round_to_bf16(b);
        ref::matmul(a_bf16.data(), b_bf16.data(), reference.data(), m, n, k, k, ldb, n, false);
        SCOPED_TRACE(testing::Message() << m << "x" << k << "x" << n);
        expect_close(fast, reference, kFloatTolerance);
    }
}

std::vector<uint16_t> bf16_bits(const std::vector<float>& values) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i)
        bits[i] = uint16_t(std::bit_cast<uint32_t>(ref::round_to_bf16(values[i])) >> 16);
    return bits;
}

TEST(ToBf16, KeepsTheUpperHalfOfTheRoundedFloat) {
    const float step = std::ldexp(1.0f, -7);
    auto values = random_values(70001, 18, -1e3, 1e3);  // above the parallel grain
    for (float v : {0.0f, -0.0f, 1.0f + 0.5f * step, 1.0f + 1.5f * step, -3.0f - 0.6f * 2 * step}) values.push_back(v);
    std::vector<uint16_t> fast(values.size());
    to_bf16(values.data(), fast.data(), int64_t(values.size()));
    EXPECT_EQ(fast, bf16_bits(values));
}

// Rows rounded once (to_bf16) give the product of the float rows, which the matrix rounds on every call.
TEST_F(Bf16, PackedMatrixTakesRowsAlreadyInBf16) {
    const int64_t m = 300, k = 64, n = 96;
    auto a = random_values(m * k, 19), b = random_values(k * n, 20);
    PackedMatrix packed;
    packed.pack(b.data(), k, n, n, false, Precision::bf16);
    std::vector<uint16_t> a_bf16(a.size());
    to_bf16(a.data(), a_bf16.data(), m * k);
    const auto bias = random_values(n, 21);
    std::vector<float> from_floats(m * n), from_bf16(m * n);
    packed.multiply(a.data(), from_floats.data(), m, 0.5f, bias.data());
    packed.multiply(a_bf16.data(), from_bf16.data(), m, 0.5f, bias.data());
    EXPECT_EQ(from_bf16, from_floats);
    const Linear layer(b.data(), bias.data(), k, n, Precision::bf16);  // b read as W [k, n]: n inputs
    std::vector<uint16_t> x_bf16(m * n);
    const auto x = random_values(m * n, 22);
    to_bf16(x.data(), x_bf16.data(), m * n);
    std::vector<float> y_floats(m * k), y_bf16(m * k);
    layer.forward(x.data(), y_floats.data(), m, Epilogue::gelu);
    layer.forward(x_bf16.data(), y_bf16.data(), m, Epilogue::gelu);
    EXPECT_EQ(y_bf16, y_floats);

    PackedMatrix fp32;
    fp32.pack(b.data(), k, n, n, false, Precision::fp32);
    EXPECT_THROW(fp32.multiply(a_bf16.data(), from_bf16.data(), m), std::logic_error);
}

// A bf16 result is the float result rounded (as to_bf16), from float or bf16 rows, plain or centred, for every
// epilogue a bf16 result can have (the rounding comes after the epilogue); a bf16 result cannot accumulate.
TEST_F(Bf16, LinearWritesItsResultRoundedToBf16) {
    const int64_t rows = 300, in = 64, out = 96;
    const auto x = random_values(rows * in, 27, -2, 2), w = random_values(out * in, 28), bias = random_values(out, 29);
    std::vector<uint16_t> x_bf16(x.size());
    to_bf16(x.data(), x_bf16.data(), rows * in);
    for (bool centred : {false, true}) {
        const Linear layer(w.data(), bias.data(), out, in, Precision::bf16, centred);
        for (Epilogue epilogue : {Epilogue::store, Epilogue::gelu, Epilogue::relu}) {
            SCOPED_TRACE(testing::Message() << "centred " << centred << " epilogue " << int(epilogue));
            std::vector<float> y(rows * out);
            std::vector<uint16_t> y_bf16(rows * out);
            layer.forward(x.data(), y.data(), rows, epilogue);
            layer.forward(x.data(), y_bf16.data(), rows, epilogue);
            EXPECT_EQ(y_bf16, bf16_bits(y));
            if (centred) continue;  // centring takes float rows
            layer.forward(x_bf16.data(), y.data(), rows, epilogue);
            std::fill(y_bf16.begin(), y_bf16.end(), 0);
            layer.forward(x_bf16.data(), y_bf16.data(), rows, epilogue);
            EXPECT_EQ(y_bf16, bf16_bits(y));
        }
        std::vector<uint16_t> y_bf16(rows * out);
        EXPECT_THROW(layer.forward(x.data(), y_bf16.data(), rows, Epilogue::accumulate), std::logic_error);
    }
}

// layer_norm's bf16 outputs are its float outputs rounded, and asking for them leaves the float outputs alone.
TEST(LayerNormBf16, WritesTheRoundedOutputsInTheSamePass) {
    const int64_t rows = 300, dim = 256;  // above the parallel grain
    auto x = random_values(rows * dim, 23, -3, 3), g = random_values(dim, 24), b = random_values(dim, 25);
    const auto addend = random_values(rows * dim, 26);
    std::vector<float> y(x.size()), plus(x.size()), expected_y(x.size()), expected_plus(x.size());
    layer_norm(x.data(), g.data(), b.data(), expected_y.data(), rows, dim, 1e-5f,
               {.addend = addend.data(), .y_plus = expected_plus.data()});
    std::vector<uint16_t> y_bf16(x.size()), plus_bf16(x.size());
    layer_norm(x.data(), g.data(), b.data(), y.data(), rows, dim, 1e-5f,
               {.addend = addend.data(), .y_plus = plus.data(), .y_bf16 = y_bf16.data(), .y_plus_bf16 = plus_bf16.data()});
    EXPECT_EQ(y, expected_y);
    EXPECT_EQ(plus, expected_plus);
    EXPECT_EQ(y_bf16, bf16_bits(y));
    EXPECT_EQ(plus_bf16, bf16_bits(plus));
    std::fill(y_bf16.begin(), y_bf16.end(), 0);  // the rounded rows alone, without an addend
    layer_norm(x.data(), g.data(), b.data(), y.data(), rows, dim, 1e-5f, {.y_bf16 = y_bf16.data()});
    EXPECT_EQ(y_bf16, bf16_bits(expected_y));
    std::fill(y_bf16.begin(), y_bf16.end(), 0);  // the rounded rows alone, without the float ones
    layer_norm(x.data(), g.data(), b.data(), nullptr, rows, dim, 1e-5f, {.y_bf16 = y_bf16.data()});
    EXPECT_EQ(y_bf16, bf16_bits(expected_y));
    std::fill(plus_bf16.begin(), plus_bf16.end(), 0);  // y + addend rounded, without its float copy
    layer_norm(x.data(), g.data(), b.data(), y.data(), rows, dim, 1e-5f,
               {.addend = addend.data(), .y_plus_bf16 = plus_bf16.data()});
    EXPECT_EQ(plus_bf16, bf16_bits(expected_plus));
    // GELU(LayerNorm(x)) rounded alone, as the mask decoder's upscaling writes it
    std::vector<float> expected_gelu(x.size());
    layer_norm(x.data(), g.data(), b.data(), expected_gelu.data(), rows, dim, 1e-5f, {.gelu = true});
    std::fill(y_bf16.begin(), y_bf16.end(), 0);
    layer_norm(x.data(), g.data(), b.data(), nullptr, rows, dim, 1e-5f, {.y_bf16 = y_bf16.data(), .gelu = true});
    EXPECT_EQ(y_bf16, bf16_bits(expected_gelu));
}

// The dense 3x3 convolution of TinyViT's neck, an odd strided one and a depthwise one: on rounded inputs the bf16
// convolution is the reference up to float32 accumulation, for every epilogue.
TEST_F(Bf16, Conv2dEqualsTheReferenceOnRoundedInputs) {
    for (auto [in, out, height, width, stride, groups] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>{
             64, 32, 12, 12, 1, 1}, {24, 16, 11, 13, 2, 1}, {32, 32, 9, 7, 1, 32}}) {
        auto x = random_values(height * width * in, 14), w = random_values(out * (in / groups) * 9, 15);
        auto b = random_values(out, 16);
        const Conv2d conv(w.data(), b.data(), out, in, 3, stride, 1, groups, Precision::bf16);
        ASSERT_EQ(conv.precision(), Precision::bf16);
        const int64_t outputs = conv.output_size(height) * conv.output_size(width) * out;
        const auto x_bf16 = ref::round_to_bf16(x), w_bf16 = ref::round_to_bf16(w);
        for (Epilogue epilogue : {Epilogue::store, Epilogue::gelu, Epilogue::relu, Epilogue::accumulate}) {
            auto fast = random_values(outputs, 17), reference = fast;  // accumulate adds to this
            conv.forward(x.data(), fast.data(), height, width, epilogue);
            ref::conv2d(x_bf16.data(), w_bf16.data(), b.data(), reference.data(), in, out, height, width, 3, stride,
                        1, groups, epilogue);
            SCOPED_TRACE(testing::Message() << in << "->" << out << " s" << stride << " g" << groups << " epilogue "
                                            << int(epilogue));
            expect_close(fast, reference, kFloatTolerance);
        }
    }
}

struct AttentionCase {
    int64_t batch, heads, grid_h, grid_w, head_dim;
    bool logit_bias;
};

class Bf16AttentionTest : public Bf16, public ::testing::WithParamInterface<AttentionCase> {};

// q, k and v are bfloat16 values already, so the products of q k^T are exact and the one rounding left is that of
// the softmax numerators p before p v: each weight changes by at most u relative to itself, the output (a weighted
// mean of v divided by the exact sum of p) by at most u max |v|. A logit bias is added in float32, so the same holds.
TEST_P(Bf16AttentionTest, DiffersFromTheReferenceByTheWeightRoundingAtMost) {
    auto [batch, heads, grid_h, grid_w, head_dim, use_bias] = GetParam();
    const int64_t tokens = grid_h * grid_w, dim = heads * head_dim;
    AttentionShape shape{.batch = batch, .heads = heads, .queries = tokens, .keys = tokens, .head_dim = head_dim,
                         .q_row_stride = 3 * dim, .k_row_stride = 3 * dim, .v_row_stride = 3 * dim,
                         .out_row_stride = dim, .q_batch_stride = tokens * 3 * dim, .k_batch_stride = tokens * 3 * dim,
                         .v_batch_stride = tokens * 3 * dim, .out_batch_stride = tokens * dim};
    const auto qkv = ref::round_to_bf16(random_values(batch * tokens * 3 * dim, 10, -2, 2));
    auto table_h = random_values((2 * grid_h - 1) * head_dim, 11), table_w = random_values((2 * grid_w - 1) * head_dim, 12);
    const RelativePosition rel{table_h.data(), table_w.data(), grid_h, grid_w};
    const auto bias_values = random_values(heads * tokens * tokens, 13, -3, 3);
    const float* bias = use_bias ? bias_values.data() : nullptr;
    std::vector<float> fast(batch * tokens * dim), reference(fast.size());
    const float scale = 1.0f / std::sqrt(float(head_dim));
    ref::attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, reference.data(), shape, scale, &rel, bias);
    const double bound = kUnitRoundoff * test::max_abs(qkv) + kFloatTolerance * std::max(1.0, test::max_abs(reference));
    attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, fast.data(), shape, scale, &rel, Precision::bf16, bias);
    EXPECT_LE(test::max_abs_diff(fast, reference), bound);

    // Nested in a parallel region each thread converts into its own scratch.
    std::vector<std::vector<float>> nested(2, std::vector<float>(fast.size()));
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; ++i)
        attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, nested[i].data(), shape, scale, &rel,
                  Precision::bf16, bias);
    for (const auto& result : nested) EXPECT_LE(test::max_abs_diff(result, reference), bound);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16AttentionTest,
                         ::testing::Values(AttentionCase{2, 3, 5, 7, 12, false},    // odd grid, heads
                                           AttentionCase{3, 2, 14, 14, 16, false},  // windows
                                           AttentionCase{1, 2, 32, 40, 8, false},   // several query tiles
                                           AttentionCase{5, 4, 7, 7, 32, true},     // TinyViT windows, bias
                                           AttentionCase{1, 2, 32, 40, 8, true}));  // bias over query tiles

}  // namespace
}  // namespace sqasam::ops
