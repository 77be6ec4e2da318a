// Google Benchmark of the op layer at the shapes SAM vit_b runs (one 1024 x 1024 image, 64 x 64 tokens of 768
// channels; 25 windows of 14 x 14 in the windowed blocks) and the mask decoder's attention shapes. Rates are
// reported as FLOP/s so a change's effect can be read against the machine's peak (BM_ArithmeticPeak, last). Run:
//   build/bench/bench_ops --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/ops.hpp"

namespace {

using sqasam::ops::AttentionShape;
using sqasam::ops::Epilogue;
using sqasam::ops::Linear;
using sqasam::Precision;
using sqasam::ops::RelativePosition;

constexpr int64_t kTokens = 64 * 64, kDim = 768, kHeads = 12, kHeadDim = kDim / kHeads;
constexpr int64_t kWindows = 25, kWindowTokens = 14 * 14;

std::vector<float> random_values(int64_t n, float scale = 1.0f) {
    std::mt19937 rng(0);
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> values(n);
    for (float& v : values) v = normal(rng);
    return values;
}

void set_flops(benchmark::State& state, double flops_per_iteration) {
    state.counters["FLOP/s"] =
        benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

// Arguments: rows, in_features, out_features, epilogue, precision (0 fp32, 1 bf16).
void BM_Linear(benchmark::State& state) {
    const int64_t rows = state.range(0), in = state.range(1), out = state.range(2);
    const auto epilogue = static_cast<Epilogue>(state.range(3));
    const auto precision = static_cast<Precision>(state.range(4));
    const std::vector<float> x = random_values(rows * in), weight = random_values(out * in, 0.02f),
                             bias = random_values(out, 0.02f);
    std::vector<float> y(rows * out);
    const Linear layer(weight.data(), bias.data(), out, in, precision);
    for (auto _ : state) {
        layer.forward(x.data(), y.data(), rows, epilogue);
        benchmark::DoNotOptimize(y.data());
    }
    set_flops(state, 2.0 * rows * in * out);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"rows", "in", "out", "epilogue", "bf16"})
    ->ArgsProduct({{kTokens}, {kDim}, {3 * kDim}, {int(Epilogue::store)}, {0, 1}})        // qkv
    ->ArgsProduct({{kTokens}, {kDim}, {kDim}, {int(Epilogue::accumulate)}, {0, 1}})       // attention proj + residual
    ->ArgsProduct({{kTokens}, {kDim}, {4 * kDim}, {int(Epilogue::gelu)}, {0, 1}})         // mlp.lin1 + GELU
    ->ArgsProduct({{kTokens}, {4 * kDim}, {kDim}, {int(Epilogue::accumulate)}, {0, 1}})   // mlp.lin2 + residual
    // the mask decoder's products over its 64 x 64 image rows: image-to-token logits and weighted sums (n = 8
    // tokens x 8 heads folded), the output upscaling's two transposed convolutions on a band of 2 grid rows
    ->ArgsProduct({{kTokens / 16}, {256}, {64}, {int(Epilogue::store)}, {1}})
    ->ArgsProduct({{kTokens}, {256}, {64}, {int(Epilogue::store)}, {1}})
    ->ArgsProduct({{kTokens}, {64}, {256}, {int(Epilogue::accumulate)}, {1}})
    ->ArgsProduct({{128}, {256}, {256}, {int(Epilogue::store)}, {1}})
    ->ArgsProduct({{512}, {64}, {128}, {int(Epilogue::gelu), int(Epilogue::store)}, {1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Self-attention on a qkv buffer laid out as the encoder's qkv Linear writes it: rows of [q | k | v], heads side by
// side. Arguments: batch, tokens, grid side (tokens = side^2), heads, head_dim, 1 = with relative positions,
// precision (0 fp32, 1 bf16).
void BM_EncoderAttention(benchmark::State& state) {
    const int64_t batch = state.range(0), tokens = state.range(1), side = state.range(2), heads = state.range(3),
                  head_dim = state.range(4);
    const bool with_rel_pos = state.range(5) != 0;
    const auto precision = static_cast<Precision>(state.range(6));
    const int64_t dim = heads * head_dim;
    const std::vector<float> qkv = random_values(batch * tokens * 3 * dim);
    const std::vector<float> table_h = random_values((2 * side - 1) * head_dim, 0.02f),
                             table_w = random_values((2 * side - 1) * head_dim, 0.02f);
    std::vector<float> out(batch * tokens * dim);
    AttentionShape shape;
    shape.batch = batch, shape.heads = heads, shape.queries = tokens, shape.keys = tokens, shape.head_dim = head_dim;
    shape.q_row_stride = shape.k_row_stride = shape.v_row_stride = 3 * dim;
    shape.q_batch_stride = shape.k_batch_stride = shape.v_batch_stride = tokens * 3 * dim;
    shape.out_row_stride = dim, shape.out_batch_stride = tokens * dim;
    const RelativePosition rel_pos{table_h.data(), table_w.data(), side, side};
    const float scale = 1.0f / std::sqrt(float(head_dim));
    for (auto _ : state) {
        sqasam::ops::attention(qkv.data(), qkv.data() + dim, qkv.data() + 2 * dim, out.data(), shape, scale,
                               with_rel_pos ? &rel_pos : nullptr, precision);
        benchmark::DoNotOptimize(out.data());
    }
    set_flops(state, 4.0 * batch * heads * tokens * tokens * head_dim);  // q k^T and weights v
}
BENCHMARK(BM_EncoderAttention)
    ->ArgNames({"batch", "tokens", "side", "heads", "hd", "relpos", "bf16"})
    ->ArgsProduct({{kWindows}, {kWindowTokens}, {14}, {kHeads}, {kHeadDim}, {1}, {0, 1}})  // windowed block
    ->ArgsProduct({{1}, {kTokens}, {64}, {kHeads}, {kHeadDim}, {1}, {0, 1}})               // global block
    ->Args({19 * 19, 7 * 7, 7, 4, 32, 0, 0})  // MobileSAM stage 1: 7 x 7 windows of a 128 x 128 grid
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The mask decoder's cross attention (8 heads, internal width 128): tokens to image and image to tokens.
// Arguments: queries, keys, 1 = keys transposed and values head by head, as the first layer's cached image side.
void BM_DecoderCrossAttention(benchmark::State& state) {
    const int64_t queries = state.range(0), keys = state.range(1), heads = 8, head_dim = 16, dim = heads * head_dim;
    const bool per_head = state.range(2) != 0;
    const std::vector<float> q = random_values(queries * dim), k = random_values(keys * dim),
                             v = random_values(keys * dim);
    std::vector<float> out(queries * dim);
    AttentionShape shape;
    shape.heads = heads, shape.queries = queries, shape.keys = keys, shape.head_dim = head_dim;
    shape.q_row_stride = shape.k_row_stride = shape.v_row_stride = shape.out_row_stride = dim;
    shape.q_batch_stride = queries * dim, shape.k_batch_stride = shape.v_batch_stride = keys * dim;
    shape.out_batch_stride = queries * dim;
    if (per_head) {  // the heads as batch items, as MaskDecoder's attend_per_head
        shape.batch = heads, shape.heads = 1, shape.k_transposed = true;
        shape.k_row_stride = keys, shape.v_row_stride = head_dim;
        shape.q_batch_stride = shape.out_batch_stride = head_dim;
        shape.k_batch_stride = shape.v_batch_stride = head_dim * keys;
    }
    for (auto _ : state) {
        sqasam::ops::attention(q.data(), k.data(), v.data(), out.data(), shape, 0.25f);
        benchmark::DoNotOptimize(out.data());
    }
    set_flops(state, 4.0 * heads * queries * keys * head_dim);
}
BENCHMARK(BM_DecoderCrossAttention)
    ->ArgNames({"queries", "keys", "per_head"})
    ->Args({7, kTokens, 0})  // token to image (5 output tokens + point + box)
    ->Args({7, kTokens, 1})
    ->Args({kTokens, 7, 0})  // image to token
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The mask decoder's image-to-token softmax: a row per image token, a column per prompt token, 8 heads interleaved.
// Arguments: rows, columns.
void BM_SoftmaxInterleaved(benchmark::State& state) {
    const int64_t rows = state.range(0), cols = state.range(1), heads = 8;
    const std::vector<float> logits = random_values(rows * cols * heads);
    std::vector<float> x(logits.size());
    for (auto _ : state) {
        state.PauseTiming();
        x = logits;
        state.ResumeTiming();
        sqasam::ops::softmax_interleaved(x.data(), rows, cols, heads);
        benchmark::DoNotOptimize(x.data());
    }
    state.SetItemsProcessed(state.iterations() * rows * cols * heads);
}
BENCHMARK(BM_SoftmaxInterleaved)
    ->ArgNames({"rows", "cols"})
    ->Args({kTokens, 7})  // a point or a box prompt: 5 output tokens + 2
    ->Args({kTokens, 8})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Arguments: rows, dim, 1 = as the mask decoder's norm4 (also y + positions, both rounded to bf16 as well).
void BM_LayerNorm(benchmark::State& state) {
    const int64_t rows = state.range(0), dim = state.range(1);
    const bool norm4 = state.range(2) != 0;
    const std::vector<float> x = random_values(rows * dim), gamma = random_values(dim), beta = random_values(dim),
                             positions = random_values(rows * dim);
    std::vector<float> y(x.size());
    std::vector<uint16_t> y_bf16(x.size()), y_plus_bf16(x.size());
    for (auto _ : state) {
        sqasam::ops::layer_norm(x.data(), gamma.data(), beta.data(), y.data(), rows, dim, 1e-6f,
                                {.addend = norm4 ? positions.data() : nullptr,
                                 .y_bf16 = norm4 ? y_bf16.data() : nullptr,
                                 .y_plus_bf16 = norm4 ? y_plus_bf16.data() : nullptr});
        benchmark::DoNotOptimize(y.data());
    }
    state.SetBytesProcessed(state.iterations() * int64_t(2 * x.size() * sizeof(float)));
}
BENCHMARK(BM_LayerNorm)
    ->ArgNames({"rows", "dim", "norm4"})
    ->Args({kTokens, kDim, 0})       // the image encoder's
    ->Args({kTokens, 256, 1})        // the mask decoder's norm4
    ->Args({4 * 2 * 64, 64, 0})      // the mask decoder's upscaling, one band
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// The cores' arithmetic peak, to read the rates above against: on every thread, kChains independent chains of the
// widest fused multiply-add (fp32: 2 FLOP per lane) or of AVX512-BF16's dot product (4 FLOP per fp32 lane: two
// bf16 products and their sum), enough chains to hide the instruction's latency on every port that runs it. The
// chains start from distinct values so that the compiler cannot merge them. Argument: 0 fp32 FMA, 1 bf16 dot.
#if defined(__AVX512F__)
using Register = __m512;
inline Register broadcast(float x) { return _mm512_set1_ps(x); }
inline Register fma_chain(Register acc, Register a, Register b) { return _mm512_fmadd_ps(a, b, acc); }
#elif defined(__AVX2__) && defined(__FMA__)
using Register = __m256;
inline Register broadcast(float x) { return _mm256_set1_ps(x); }
inline Register fma_chain(Register acc, Register a, Register b) { return _mm256_fmadd_ps(a, b, acc); }
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
constexpr int kChains = 12;
constexpr int kRegisterFloats = sizeof(Register) / sizeof(float);
constexpr int64_t kPeakIterations = 1 << 18;  // per thread and benchmark iteration

template <class Step>
float run_chains(Step step) {
    Register acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = broadcast(1e-3f * float(c + 1));
    for (int64_t i = 0; i < kPeakIterations; ++i)
        for (int c = 0; c < kChains; ++c) acc[c] = step(acc[c]);
    float sum = 0.0f;
    for (const Register& chain : acc) {
        float lanes[kRegisterFloats];
        std::memcpy(lanes, &chain, sizeof(Register));
        for (float lane : lanes) sum += lane;
    }
    return sum;
}

void BM_ArithmeticPeak(benchmark::State& state) {
    const bool bf16 = state.range(0) != 0;
#if !defined(__AVX512BF16__)
    if (bf16) {
        state.SkipWithError("this build has no AVX512-BF16 (not on this CPU, or built without SQASAM_NATIVE)");
        return;
    }
#endif
    const int threads = omp_get_max_threads();
    float a = 1.0f, b = 1e-7f;  // acc + 1e-7 per step: no overflow, no denormals
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(b);
    for (auto _ : state) {
        float sum = 0.0f;
#pragma omp parallel reduction(+ : sum)
        {
#if defined(__AVX512BF16__)
            if (bf16) {
                const __m512bh pairs_a = _mm512_cvtne2ps_pbh(broadcast(a), broadcast(a));
                const __m512bh pairs_b = _mm512_cvtne2ps_pbh(broadcast(b), broadcast(b));
                sum += run_chains([&](Register acc) { return _mm512_dpbf16_ps(acc, pairs_a, pairs_b); });
            } else
#endif
            {
                const Register va = broadcast(a), vb = broadcast(b);
                sum += run_chains([&](Register acc) { return fma_chain(acc, va, vb); });
            }
        }
        benchmark::DoNotOptimize(sum);
    }
    set_flops(state, double(threads) * kPeakIterations * kChains * kRegisterFloats * (bf16 ? 4.0 : 2.0));
}
BENCHMARK(BM_ArithmeticPeak)->ArgName("bf16")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

}  // namespace

BENCHMARK_MAIN();
