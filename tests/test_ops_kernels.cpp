// Every fast op against its plain reference (ops::ref), over typical and odd shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "ops/ops.hpp"
#include "test_support.hpp"

namespace sqasam::ops {
namespace {

using test::random_values;

// |fast - reference| <= tolerance * max(1, max|reference|)
void expect_close(const std::vector<float>& fast, const std::vector<float>& reference, double tolerance) {
    ASSERT_EQ(fast.size(), reference.size());
    double scale = std::max(1.0, test::max_abs(reference));
    EXPECT_LE(test::max_abs_diff(fast, reference), tolerance * scale);
}

struct LinearCase {
    int64_t rows, out, in;
    bool bias;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, MatchesReferenceForEveryEpilogue) {
    auto [rows, out, in, has_bias] = GetParam();
    auto x = random_values(rows * in, 1), w = random_values(out * in, 2), b = random_values(out, 3);
    Linear layer(w.data(), has_bias ? b.data() : nullptr, out, in);
    EXPECT_EQ(layer.in_features(), in);
    EXPECT_EQ(layer.out_features(), out);
    for (Epilogue epilogue : {Epilogue::store, Epilogue::gelu, Epilogue::relu, Epilogue::accumulate}) {
        auto fast = random_values(rows * out, 4), reference = fast;  // accumulate adds to this
        layer.forward(x.data(), fast.data(), rows, epilogue);
        ref::linear(x.data(), w.data(), has_bias ? b.data() : nullptr, reference.data(), rows, out, in, epilogue);
        SCOPED_TRACE(int(epilogue));
        expect_close(fast, reference, 1e-5);
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{1, 1, 1, true}, LinearCase{7, 13, 5, false},
                                           LinearCase{37, 129, 65, true}, LinearCase{300, 17, 200, true},
                                           LinearCase{4096, 96, 64, true}, LinearCase{5, 256, 256, true},
                                           // a result of over 2^21 values: the GELU stays oneDNN's post-op
                                           LinearCase{2100, 1024, 8, true}));

TEST(PackedMatrixTest, MatchesReferenceAndRepacksInPlace) {
    for (auto [m, k, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 16, 300}, {33, 196, 64}, {100, 64, 4096}}) {
        const int64_t ldb = n + 5;
        auto a = random_values(m * k, 19), b = random_values(k * ldb, 20), other = random_values(k * ldb, 21);
        PackedMatrix packed;
        packed.pack(other.data(), k, n, ldb, false);
        const PackedMatrix shared = packed;  // a copy keeps the first contents when the original is repacked
        packed.pack(b.data(), k, n, ldb, false);
        EXPECT_EQ(packed.rows(), k);
        EXPECT_EQ(packed.cols(), n);
        std::vector<float> fast(m * n), reference(m * n), from_copy(m * n), copy_reference(m * n);
        packed.multiply(a.data(), fast.data(), m, 0.5f);
        ref::matmul(a.data(), b.data(), reference.data(), m, n, k, k, ldb, n, false, 0.5f);
        expect_close(fast, reference, 1e-5);
        shared.multiply(a.data(), from_copy.data(), m);
        ref::matmul(a.data(), other.data(), copy_reference.data(), m, n, k, k, ldb, n, false);
        expect_close(from_copy, copy_reference, 1e-5);
    }
}

struct MatmulCase {
    int64_t m, n, k, pad;
    bool transpose_b;
    float alpha, beta;
};

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, MatchesReferenceWithStrides) {
    auto [m, n, k, pad, transpose_b, alpha, beta] = GetParam();
    int64_t lda = k + pad, ldb = (transpose_b ? k : n) + pad, ldc = n + pad;
    auto a = random_values(m * lda, 5), b = random_values((transpose_b ? n : k) * ldb, 6);
    auto fast = random_values(m * ldc, 7), reference = fast;
    matmul(a.data(), b.data(), fast.data(), m, n, k, lda, ldb, ldc, transpose_b, alpha, beta);
    ref::matmul(a.data(), b.data(), reference.data(), m, n, k, lda, ldb, ldc, transpose_b, alpha, beta);
    expect_close(fast, reference, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatmulTest,
                         ::testing::Values(MatmulCase{1, 1, 1, 0, false, 1, 0}, MatmulCase{3, 5, 7, 2, true, 0.5f, 0},
                                           MatmulCase{64, 196, 32, 3, true, 0.125f, 0},
                                           MatmulCase{33, 17, 301, 0, false, 1, 1},
                                           MatmulCase{130, 64, 70, 5, false, 2, 0.5f},
                                           MatmulCase{4, 1000, 32, 0, true, 1, 0}));

TEST(Elementwise, LayerNormMatchesReference) {
    for (auto [rows, dim] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {100, 256}, {17, 769}, {300, 64}, {5, 48}}) {
        auto x = random_values(rows * dim, 8, -3, 5), g = random_values(dim, 9), b = random_values(dim, 10);
        std::vector<float> fast(x.size()), reference(x.size());
        layer_norm(x.data(), g.data(), b.data(), fast.data(), rows, dim, 1e-6f);
        ref::layer_norm(x.data(), g.data(), b.data(), reference.data(), rows, dim, 1e-6f);
        expect_close(fast, reference, 1e-5);
        // with an addend: y + addend as well, from the same y
        const auto addend = random_values(rows * dim, 11, -2, 2);
        std::vector<float> plus(x.size()), expected_plus = reference;
        ref::add(expected_plus.data(), addend.data(), rows * dim);
        layer_norm(x.data(), g.data(), b.data(), fast.data(), rows, dim, 1e-6f,
                   {.addend = addend.data(), .y_plus = plus.data()});
        expect_close(fast, reference, 1e-5);
        expect_close(plus, expected_plus, 1e-5);
        // followed by GELU, in place
        auto with_gelu = x;
        ref::gelu(reference.data(), rows * dim);
        layer_norm(with_gelu.data(), g.data(), b.data(), with_gelu.data(), rows, dim, 1e-6f, {.gelu = true});
        expect_close(with_gelu, reference, 1e-5);
        // of x + residual, in place, with the addend: the sum is normalised, and neither input is written
        const auto residual = random_values(rows * dim, 12, -4, 4);
        auto sum = x;
        ref::add(sum.data(), residual.data(), rows * dim);
        ref::layer_norm(sum.data(), g.data(), b.data(), reference.data(), rows, dim, 1e-6f, addend.data(),
                        expected_plus.data());
        auto in_place = x;
        layer_norm(in_place.data(), g.data(), b.data(), in_place.data(), rows, dim, 1e-6f,
                   {.residual = residual.data(), .addend = addend.data(), .y_plus = plus.data()});
        expect_close(in_place, reference, 1e-5);
        expect_close(plus, expected_plus, 1e-5);
        EXPECT_EQ(residual, random_values(rows * dim, 12, -4, 4));
        ref::layer_norm(x.data(), g.data(), b.data(), reference.data(), rows, dim, 1e-6f);
        layer_norm(x.data(), g.data(), b.data(), x.data(), rows, dim, 1e-6f);  // in place
        expect_close(x, reference, 1e-5);
    }
}

TEST(Elementwise, GeluExpAddMatchReference) {
    for (int64_t n : {1, 15, 16, 17, 1000, 70001}) {
        auto x = random_values(n, 11, -9, 9), y = random_values(n, 12);
        auto fast = x, reference = x;
        gelu(fast.data(), n);
        ref::gelu(reference.data(), n);
        expect_close(fast, reference, 1e-6);
        fast = x, reference = x;
        add(fast.data(), y.data(), n);
        ref::add(reference.data(), y.data(), n);
        EXPECT_EQ(fast, reference);
    }
    // exp is compared relatively over the whole range softmax feeds it, underflow included
    auto x = random_values(100003, 13, -100, 80);
    auto fast = x, reference = x;
    ops::exp(fast.data(), int64_t(x.size()));
    ref::exp(reference.data(), int64_t(x.size()));
    for (size_t i = 0; i < x.size(); ++i)
        ASSERT_NEAR(fast[i], reference[i], 3e-7 * reference[i] + 1e-37) << "exp(" << x[i] << ")";
}

TEST(Elementwise, TransposeMatchesReference) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {17, 5}, {256, 4096}, {4099, 33}}) {
        const int64_t src_stride = cols + 3, dst_stride = rows + 2;
        auto src = random_values(rows * src_stride, 18);
        std::vector<float> fast(cols * dst_stride, 0.0f), reference = fast;
        transpose(src.data(), fast.data(), rows, cols, src_stride, dst_stride);
        ref::transpose(src.data(), reference.data(), rows, cols, src_stride, dst_stride);
        EXPECT_EQ(fast, reference);
    }
}

TEST(Elementwise, SoftmaxMatchesReference) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {5, 7}, {64, 4096}, {3, 1001}}) {
        auto fast = random_values(rows * cols, 14, -30, 30), reference = fast;
        softmax_rows(fast.data(), rows, cols);
        ref::softmax_rows(reference.data(), rows, cols);
        expect_close(fast, reference, 1e-6);
    }
}

struct AttentionCase {
    int64_t batch, heads, grid_h, grid_w, keys, head_dim;
    bool rel_pos, logit_bias;
};

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

// q, k and v interleaved in one buffer per token, as a fused qkv projection leaves them.
TEST_P(AttentionTest, MatchesReference) {
    auto [batch, heads, grid_h, grid_w, keys, head_dim, use_rel_pos, use_bias] = GetParam();
    const int64_t queries = grid_h * grid_w, dim = heads * head_dim, tokens = std::max(queries, keys);
    AttentionShape shape{.batch = batch, .heads = heads, .queries = queries, .keys = keys, .head_dim = head_dim,
                         .q_row_stride = 3 * dim, .k_row_stride = 3 * dim, .v_row_stride = 3 * dim,
                         .out_row_stride = dim + 1,  // a gap between output rows must stay untouched
                         .q_batch_stride = tokens * 3 * dim, .k_batch_stride = tokens * 3 * dim,
                         .v_batch_stride = tokens * 3 * dim, .out_batch_stride = queries * (dim + 1)};
    auto qkv = random_values(batch * tokens * 3 * dim, 15, -2, 2);
    auto table_h = random_values((2 * grid_h - 1) * head_dim, 16), table_w = random_values((2 * grid_w - 1) * head_dim, 17);
    RelativePosition rel{table_h.data(), table_w.data(), grid_h, grid_w};
    const RelativePosition* rel_pos = use_rel_pos ? &rel : nullptr;
    const auto bias_values = random_values(heads * queries * keys, 18, -3, 3);
    const float* bias = use_bias ? bias_values.data() : nullptr;
    std::vector<float> fast(batch * queries * (dim + 1), 0.0f), reference = fast;
    float scale = 1.0f / std::sqrt(float(head_dim));
    attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, fast.data(), shape, scale, rel_pos, Precision::fp32,
              bias);
    ref::attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, reference.data(), shape, scale, rel_pos, bias);
    expect_close(fast, reference, 2e-5);

    // Called from inside a parallel region the op runs on each calling thread alone, with its own caches.
    std::vector<std::vector<float>> nested(2, std::vector<float>(fast.size(), 0.0f));
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; ++i)
        attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, nested[i].data(), shape, scale, rel_pos,
                  Precision::fp32, bias);
    for (const auto& result : nested) expect_close(result, reference, 2e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttentionCase{1, 1, 1, 1, 1, 1, false, false},
                                           AttentionCase{2, 3, 5, 7, 35, 12, true, false},     // odd grid, heads
                                           AttentionCase{3, 2, 14, 14, 196, 16, true, false},  // windows
                                           AttentionCase{1, 2, 32, 40, 1280, 8, true, false},  // several query tiles
                                           AttentionCase{1, 8, 1, 7, 4096, 16, false, false},  // tokens to image
                                           AttentionCase{1, 8, 64, 64, 7, 16, false, false},   // image to tokens
                                           AttentionCase{2, 3, 1, 5, 301, 12, false, false},   // odd, few queries
                                           AttentionCase{2, 3, 30, 10, 5, 12, false, false},   // odd, few keys
                                           AttentionCase{2, 3, 1, 33, 40, 20, false, false},   // above few keys: short
                                           AttentionCase{5, 4, 7, 7, 49, 32, false, true},     // TinyViT windows
                                           AttentionCase{3, 2, 1, 5, 29, 80, false, true},     // short, wide heads
                                           AttentionCase{1, 3, 8, 8, 64, 16, false, true},     // short, longest
                                           AttentionCase{1, 2, 8, 8, 65, 16, false, true},     // just above short
                                           AttentionCase{2, 3, 30, 10, 5, 12, false, true},    // few keys, bias
                                           AttentionCase{2, 3, 5, 7, 35, 12, true, true},      // both terms
                                           AttentionCase{1, 2, 32, 40, 1280, 8, false, true})); // bias over tiles

struct TransposedKeysCase {
    int64_t batch, heads, queries, keys, head_dim;
};

class TransposedKeysTest : public ::testing::TestWithParam<TransposedKeysCase> {};

// Keys given transposed (heads * head_dim rows of `keys` values) give what the same keys as rows give, in the
// fast path and in the reference, and the fast path runs on each calling thread alone inside a parallel region.
TEST_P(TransposedKeysTest, MatchesTheReferenceOnKeyRows) {
    auto [batch, heads, queries, keys, head_dim] = GetParam();
    const int64_t dim = heads * head_dim, key_stride = keys + 3;  // a gap after each transposed row
    const auto q = random_values(batch * queries * dim, 30, -2, 2), v = random_values(batch * keys * dim, 31);
    const auto k = random_values(batch * keys * dim, 32, -2, 2);
    std::vector<float> k_t(batch * dim * key_stride, 1e30f);  // the gaps would poison any sum that read them
    for (int64_t b = 0; b < batch; ++b)
        transpose(k.data() + b * keys * dim, k_t.data() + b * dim * key_stride, keys, dim, dim, key_stride);
    AttentionShape rows{.batch = batch, .heads = heads, .queries = queries, .keys = keys, .head_dim = head_dim,
                        .q_row_stride = dim, .k_row_stride = dim, .v_row_stride = dim, .out_row_stride = dim + 1,
                        .q_batch_stride = queries * dim, .k_batch_stride = keys * dim, .v_batch_stride = keys * dim,
                        .out_batch_stride = queries * (dim + 1)};
    AttentionShape transposed = rows;
    transposed.k_transposed = true;
    transposed.k_row_stride = key_stride;
    transposed.k_batch_stride = dim * key_stride;
    const float scale = 1.0f / std::sqrt(float(head_dim));
    std::vector<float> reference(batch * queries * (dim + 1), 0.0f), reference_t = reference, fast = reference;
    ref::attention(q.data(), k.data(), v.data(), reference.data(), rows, scale);
    ref::attention(q.data(), k_t.data(), v.data(), reference_t.data(), transposed, scale);
    EXPECT_EQ(reference_t, reference);
    attention(q.data(), k_t.data(), v.data(), fast.data(), transposed, scale);
    expect_close(fast, reference, 2e-5);

    std::vector<std::vector<float>> nested(2, std::vector<float>(fast.size(), 0.0f));
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; ++i) attention(q.data(), k_t.data(), v.data(), nested[i].data(), transposed, scale);
    for (const auto& result : nested) expect_close(result, reference, 2e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, TransposedKeysTest,
                         ::testing::Values(TransposedKeysCase{1, 8, 7, 4096, 16},   // the decoder's first layer
                                           TransposedKeysCase{1, 8, 8, 4096, 16},   // one whole query group
                                           TransposedKeysCase{2, 3, 11, 37, 12},    // groups of 8 and 3, tails
                                           TransposedKeysCase{1, 2, 1, 5, 20},      // fewer keys than a register
                                           TransposedKeysCase{2, 1, 17, 64, 32}));  // three groups, wide heads

TEST(TransposedKeys, RejectLogitTermsAndBf16) {
    const std::vector<float> data(64, 0.5f);
    std::vector<float> out(64);
    AttentionShape shape{.queries = 2, .keys = 4, .head_dim = 4, .q_row_stride = 4, .k_row_stride = 4,
                         .v_row_stride = 4, .out_row_stride = 4, .k_transposed = true};
    const std::vector<float> bias(8, 0.0f);
    EXPECT_THROW(attention(data.data(), data.data(), data.data(), out.data(), shape, 1.0f, nullptr,
                           Precision::bf16), std::invalid_argument);
    EXPECT_THROW(attention(data.data(), data.data(), data.data(), out.data(), shape, 1.0f, nullptr,
                           Precision::fp32, bias.data()), std::invalid_argument);
}

}  // namespace
}  // namespace sqasam::ops

namespace sqasam::ops {
namespace {

// The op profile counts each op under its class (exclusive of the ops nested in it), products with their FLOPs,
// the products inside attention as attention's, and nothing outside start_profile() .. stop_profile().
TEST(OpProfile, CountsEachOpUnderItsClass) {
    const int64_t rows = 64, in = 32, out = 48;
    auto x = random_values(rows * in, 30), w = random_values(out * in, 31), y = random_values(rows * out, 32);
    const Linear layer(w.data(), nullptr, out, in);
    layer.forward(x.data(), y.data(), rows);  // before the profile: not counted
    const int64_t heads = 2, grid = 8, tokens = grid * grid, head_dim = 8, dim = heads * head_dim;
    auto qkv = random_values(tokens * 3 * dim, 33), table = random_values((2 * grid - 1) * head_dim, 34);
    std::vector<float> attended(tokens * dim);
    const AttentionShape shape{.batch = 1, .heads = heads, .queries = tokens, .keys = tokens, .head_dim = head_dim,
                               .q_row_stride = 3 * dim, .k_row_stride = 3 * dim, .v_row_stride = 3 * dim,
                               .out_row_stride = dim};
    const RelativePosition rel{table.data(), table.data(), grid, grid};

    start_profile();
    layer.forward(x.data(), y.data(), rows);
    layer_norm(y.data(), w.data(), w.data(), y.data(), rows, out, 1e-6f);
    attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, attended.data(), shape, 0.5f, &rel);
    const OpProfile profile = stop_profile();
    layer.forward(x.data(), y.data(), rows);  // after it: not counted

    const auto calls = [&](OpClass op) { return profile.calls[int(op)]; };
    EXPECT_EQ(calls(OpClass::product), 1);
    EXPECT_EQ(profile.flops[int(OpClass::product)], 2.0 * rows * in * out);
    EXPECT_EQ(calls(OpClass::layer_norm), 1);
    EXPECT_EQ(calls(OpClass::gelu), 0);
    // Per head: q k^T, two relative-position products and p v, in one tile.
    EXPECT_EQ(calls(OpClass::attention_product), 4 * heads);
    EXPECT_EQ(profile.flops[int(OpClass::attention_product)],
              2.0 * heads * tokens * head_dim * (2 * tokens + 2 * (2 * grid - 1)));
    EXPECT_GE(calls(OpClass::attention_other), 1);
    EXPECT_GE(calls(OpClass::packing), 2 * heads);  // keys and values of each head
    for (int i = 0; i < kOpClassCount; ++i) EXPECT_GE(profile.thread_seconds[i], 0.0) << to_string(OpClass(i));
    EXPECT_TRUE(is_product(OpClass::attention_product));
    EXPECT_FALSE(is_product(OpClass::attention_other));
}

}  // namespace
}  // namespace sqasam::ops
