// The element-wise, normalisation and attention kernels: OpenMP loops shaped so the compiler vectorises them.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "ops/dnnl_context.hpp"
#include "ops/ops.hpp"

namespace sqasam::ops {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 14;
constexpr int64_t kVectorFloats = 16;  // one AVX-512 register

// expf by Cody-Waite range reduction and a degree-6 polynomial (Cephes' coefficients, about 1 ulp), written
// without calls or branches so loops over it vectorise. Inputs are clamped to the range where 2^n stays normal;
// n is rounded by the 1.5 * 2^23 trick, exact for |n| < 2^22.
inline float fast_exp(float x) {
    x = x > -87.3f ? x : -87.3f;
    x = x < 88.7f ? x : 88.7f;
    constexpr float kRound = 12582912.0f;
    const float n = (x * 1.44269504088896341f + kRound) - kRound;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}

// erf(z) = z P(z^2) on |z| <= 4, and erf(+-4) (1 - 1.5e-8) rounds to +-1 in float beyond: P is a degree-16
// Chebyshev fit of erf(z) / z in t = z^2 / 8 - 1 on [-1, 1], in monomials of t (max absolute error of the float
// evaluation 2e-7). No division or exponential, so it costs less than the rational-times-exp forms.
inline float fast_erf(float x) {
    constexpr float kCoefficients[] = {  // highest power of t first
        5.964250726e-04f,  -1.372815087e-03f, 6.166107210e-04f,  -1.076942117e-03f, 5.577363669e-03f,
        -1.008590695e-02f, 1.390814622e-02f,  -2.166253228e-02f, 3.321700109e-02f,  -4.601432136e-02f,
        5.985599358e-02f,  -7.468753070e-02f, 9.021204267e-02f,  -1.077133612e-01f, 1.316750015e-01f,
        -1.765761719e-01f, 3.535309964e-01f};
    const float z = x < -4.0f ? -4.0f : (x > 4.0f ? 4.0f : x);
    const float t = z * z * 0.125f - 1.0f;
    float p = kCoefficients[0];
    for (int i = 1; i < 17; ++i) p = p * t + kCoefficients[i];
    return z * p;
}

#if defined(__AVX512F__)
constexpr __mmask16 kAllLanes = 0xffff;

// fast_exp on 16 lanes of x <= 0 (shifted logits), with AVX-512's rounding and scaling instructions in place of
// the clamps and the exponent arithmetic: the same reduction and polynomial, so the same values wherever fast_exp's
// result is a normal float (x >= -87.3); below, 2^n scales to the true tiny value, or 0, instead of fast_exp's
// floor of exp(-87.3). x is floored at -104 so that -inf gives 0, not NaN.
inline __m512 exp_lanes(__m512 x) {
    x = _mm512_maskz_max_ps(kAllLanes, x, _mm512_set1_ps(-104.0f));
    // The maskz forms: GCC 12's unmasked ones pass an undefined register and then warn about it.
    const __m512 n = _mm512_maskz_roundscale_ps(kAllLanes, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(kAllLanes, p, n);
}

// The sum of the 16 lanes, by halving (a tree of 4 additions, not 15 in a row).
float sum_lanes(__m512 x) {
    // maskz extracts: GCC 12's cast and unmasked extract pass an undefined register and warn about it
    const __m256 half =
        _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xff, x, 0), _mm512_maskz_extractf32x8_ps(0xff, x, 1));
    __m128 quarter = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    quarter = _mm_add_ps(quarter, _mm_movehl_ps(quarter, quarter));
    return _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
}
#endif

// Replaces row[i] by exp(row[i] - top) (row[i] <= top) and returns their sum.
float exp_shifted(float* row, int64_t n, float top) {
    int64_t i = 0;
    float sum = 0;
#if defined(__AVX512F__)
    __m512 sums = _mm512_setzero_ps();
    const __m512 shift = _mm512_set1_ps(top);
    for (; i + kVectorFloats <= n; i += kVectorFloats) {
        const __m512 weight = exp_lanes(_mm512_sub_ps(_mm512_loadu_ps(row + i), shift));
        _mm512_storeu_ps(row + i, weight);
        sums = _mm512_add_ps(sums, weight);
    }
    sum = sum_lanes(sums);
#endif
    for (; i < n; ++i) {
        row[i] = fast_exp(row[i] - top);
        sum += row[i];
    }
    return sum;
}

// The same with the exponentials written rounded to bfloat16 into `weights` (the left operand of a bf16 product)
// and summed unrounded: one pass where exponentiating and converting took two.
float exp_shifted_to_bf16(const float* row, uint16_t* weights, int64_t n, float top) {
    int64_t i = 0;
    float sum = 0;
#if defined(__AVX512F__) && defined(__AVX512BF16__)
    __m512 sums = _mm512_setzero_ps();
    const __m512 shift = _mm512_set1_ps(top);
    for (; i + kVectorFloats <= n; i += kVectorFloats) {
        const __m512 weight = exp_lanes(_mm512_sub_ps(_mm512_loadu_ps(row + i), shift));
        // Round to nearest even, as to_bf16 (weights lie in [0, 1]; a denormal one becomes 0).
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(weights + i), (__m256i)_mm512_cvtneps_pbh(weight));
        sums = _mm512_add_ps(sums, weight);
    }
    sum = sum_lanes(sums);
#endif
    for (; i < n; ++i) {
        const float weight = fast_exp(row[i] - top);
        weights[i] = to_bf16(weight);
        sum += weight;
    }
    return sum;
}

float row_max(const float* row, int64_t n) {
    float top = row[0];
#pragma omp simd reduction(max : top)
    for (int64_t i = 0; i < n; ++i) top = row[i] > top ? row[i] : top;
    return top;
}

// Subtracts the row maximum, exponentiates in place and returns the sum.
float exp_shifted_row(float* row, int64_t n) { return exp_shifted(row, n, row_max(row, n)); }

// Grows, never shrinks: attention's scratch stays mapped across calls (first touch of fresh pages is slow).
float* thread_scratch(size_t floats) {
    thread_local std::vector<float> scratch;
    if (scratch.size() < floats) scratch.resize(floats);
    return scratch.data();
}

}  // namespace

namespace {

inline float gelu_value(float x) { return 0.5f * x * (1.0f + fast_erf(x * 0.70710678118654752f)); }

// The sum of row[i] - shift, or of its squares. With AVX-512, in two vector accumulators reduced by a tree at the
// end: the scalar reduction a vectorising compiler emits (16 dependent additions per row) took most of the time of
// a LayerNorm over 64 channels.
inline float row_sum(const float* row, int64_t n, float shift, bool squares) {
    int64_t i = 0;
    float sum = 0;
#if defined(__AVX512F__)
    const __m512 shift_lanes = _mm512_set1_ps(shift);
    auto term = [&](int64_t at) {
        const __m512 value = _mm512_sub_ps(_mm512_loadu_ps(row + at), shift_lanes);
        return squares ? _mm512_mul_ps(value, value) : value;
    };
    __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
    for (; i + 2 * kVectorFloats <= n; i += 2 * kVectorFloats) {
        even = _mm512_add_ps(even, term(i));
        odd = _mm512_add_ps(odd, term(i + kVectorFloats));
    }
    if (i + kVectorFloats <= n) {
        even = _mm512_add_ps(even, term(i));
        i += kVectorFloats;
    }
    sum = sum_lanes(_mm512_add_ps(even, odd));
#endif
    for (; i < n; ++i) sum += squares ? (row[i] - shift) * (row[i] - shift) : row[i] - shift;
    return sum;
}

// Rows [first, last): per row its mean and inverse deviation, then every output from one evaluation of the
// normalised value (the inputs and outputs wanted are template flags, so the loop carries no tests).
template <bool kResidual, bool kY, bool kYBf16, bool kPlus, bool kPlusBf16, bool kGelu>
void normalise_rows(const float* x, const float* gamma, const float* beta, float* y, int64_t first, int64_t last,
                    int64_t dim, float eps, const NormExtras& extras) {
    float* sum = kResidual ? thread_scratch(dim) : nullptr;  // x + residual of the row, read three times from L1
    for (int64_t r = first; r < last; ++r) {
        const float* in = x + r * dim;
        if constexpr (kResidual) {
            const float* residual = extras.residual + r * dim;
#pragma omp simd
            for (int64_t i = 0; i < dim; ++i) sum[i] = in[i] + residual[i];
            in = sum;
        }
        const float mean = row_sum(in, dim, 0.0f, false) / dim;
        const float inv_std = 1.0f / std::sqrt(row_sum(in, dim, mean, true) / dim + eps);
        const int64_t offset = r * dim;
        // y may alias x: each element is read before it is written.
#pragma omp simd
        for (int64_t i = 0; i < dim; ++i) {
            float value = (in[i] - mean) * inv_std * gamma[i] + beta[i];
            if constexpr (kGelu) value = gelu_value(value);
            if constexpr (kYBf16) extras.y_bf16[offset + i] = to_bf16(value);
            if constexpr (kPlus || kPlusBf16) {
                const float plus = value + extras.addend[offset + i];
                if constexpr (kPlus) extras.y_plus[offset + i] = plus;
                if constexpr (kPlusBf16) extras.y_plus_bf16[offset + i] = to_bf16(plus);
            }
            if constexpr (kY) y[offset + i] = value;
        }
    }
}

// Calls fn with std::true_type or std::false_type for each flag, in order: runtime choices as template arguments.
template <class Fn>
void with_flags(Fn&& fn) { fn(); }
template <class Fn, class... Rest>
void with_flags(Fn&& fn, bool flag, Rest... rest) {
    if (flag)
        with_flags([&](auto... flags) { fn(std::true_type{}, flags...); }, rest...);
    else
        with_flags([&](auto... flags) { fn(std::false_type{}, flags...); }, rest...);
}

}  // namespace

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim, float eps,
                const NormExtras& extras) {
    ProfileScope scope(OpClass::layer_norm);
    const bool plus = extras.addend && extras.y_plus, plus_bf16 = extras.addend && extras.y_plus_bf16;
    with_flags(
        [&](auto has_residual, auto has_y, auto has_y_bf16, auto has_plus, auto has_plus_bf16, auto apply_gelu) {
            const int64_t threads = rows * dim >= kParallelGrain ? num_threads() : 1;
#pragma omp parallel for schedule(static) if (threads > 1)
            for (int64_t t = 0; t < threads; ++t)
                normalise_rows<has_residual(), has_y(), has_y_bf16(), has_plus(), has_plus_bf16(), apply_gelu()>(
                    x, gamma, beta, y, rows * t / threads, rows * (t + 1) / threads, dim, eps, extras);
        },
        extras.residual != nullptr, y != nullptr, extras.y_bf16 != nullptr, plus, plus_bf16, extras.gelu);
}

void add(float* y, const float* x, int64_t n) {
    ProfileScope scope(OpClass::elementwise);
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void gelu(float* x, int64_t n) {
    ProfileScope scope(OpClass::gelu);
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) x[i] = gelu_value(x[i]);
}

void exp(float* x, int64_t n) {
    ProfileScope scope(OpClass::softmax);
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) x[i] = fast_exp(x[i]);
}

void softmax_rows(float* x, int64_t rows, int64_t cols) {
    ProfileScope scope(OpClass::softmax);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
        float* row = x + r * cols;
        const float inv = 1.0f / exp_shifted_row(row, cols);
#pragma omp simd
        for (int64_t i = 0; i < cols; ++i) row[i] *= inv;
    }
}

namespace {

constexpr int64_t kLanes = 16;  // floats per accumulator block: one AVX-512 register

// One register of floats (GCC/Clang vector extension; alignment relaxed so it loads from any float address).
using Lanes = float __attribute__((vector_size(kLanes * sizeof(float)), aligned(sizeof(float))));

// Adds a query's logit terms to its row of logits and returns the row's maximum: the relative-position terms
// row[kh * grid_w + kw] += dots_h[grid_h - 1 - kh] + dots_w[grid_w - 1 - kw] where dots_h is given (dots_h holds the
// query's products with table_h from entry qh on, its grid row, so the term of key row kh,
// q . table_h[qh - kh + grid_h - 1], is dots_h[grid_h - 1 - kh]; the same for columns), then the bias row where
// given. The maximum is a pass of its own over the whole row: taken per key row (grid_w keys, 14 in a window) it
// would cost a reduction across lanes every few values (measured 15-25 % slower attention).
float add_logit_terms_max(float* row, int64_t keys, const float* dots_h, const float* dots_w, int64_t grid_h,
                          int64_t grid_w, const float* bias_row) {
    if (dots_h)
        for (int64_t kh = 0; kh < grid_h; ++kh) {
            float* run = row + kh * grid_w;
            const float add_h = dots_h[grid_h - 1 - kh];
#pragma omp simd
            for (int64_t kw = 0; kw < grid_w; ++kw) run[kw] += add_h + dots_w[grid_w - 1 - kw];
        }
    if (bias_row)
#pragma omp simd
        for (int64_t j = 0; j < keys; ++j) row[j] += bias_row[j];
    return row_max(row, keys);
}

// Attention with only a few keys (the mask decoder's image-to-token attention): too little work per query for
// matrix-product calls, so the queries are transposed, the softmax runs across the keys in vector lanes (one
// query per lane), and the result is transposed back.
// Up to this many keys, attention runs without matrix-product calls.
constexpr int64_t kFewKeys = 32;

void attention_few_keys(const float* q, const float* k, const float* v, float* out, const AttentionShape& s,
                        float scale) {
    const int64_t hd = s.head_dim, keys = s.keys, n = s.queries;
    const int64_t ld = (n + kLanes - 1) / kLanes * kLanes + kLanes;  // padded: power-of-two strides alias in caches
    const int64_t tasks = s.batch * s.heads;
#pragma omp parallel for schedule(static) if (tasks > 1 && tasks * n * keys * hd >= kParallelGrain)
    for (int64_t task = 0; task < tasks; ++task) {
        ProfileScope scope(OpClass::attention_other);
        const int64_t b = task / s.heads, h = task % s.heads;
        float* queries_t = thread_scratch(2 * hd * ld);
        float* out_t = queries_t + hd * ld;
        transpose(q + b * s.q_batch_stride + h * hd, queries_t, n, hd, s.q_row_stride, ld);
        const float* k_head = k + b * s.k_batch_stride + h * hd;
        const float* v_head = v + b * s.v_batch_stride + h * hd;
        // One lane block of queries at a time; its weights against every key stay in registers or L1.
        for (int64_t i0 = 0; i0 < n; i0 += kLanes) {
            Lanes weight[kFewKeys];
            for (int64_t j = 0; j < keys; ++j) {
                const float* kj = k_head + j * s.k_row_stride;
                Lanes acc = {};
                for (int64_t c = 0; c < hd; ++c) acc += (scale * kj[c]) * *reinterpret_cast<const Lanes*>(queries_t + c * ld + i0);
                weight[j] = acc;
            }
            Lanes top = weight[0];
            for (int64_t j = 1; j < keys; ++j) top = weight[j] > top ? weight[j] : top;
            Lanes sum = {};
            for (int64_t j = 0; j < keys; ++j) {
                for (int64_t lane = 0; lane < kLanes; ++lane) weight[j][lane] = fast_exp(weight[j][lane] - top[lane]);
                sum += weight[j];
            }
            const Lanes inv = 1.0f / sum;
            for (int64_t c = 0; c < hd; ++c) {
                Lanes acc = {};
                for (int64_t j = 0; j < keys; ++j) acc += v_head[j * s.v_row_stride + c] * weight[j];
                *reinterpret_cast<Lanes*>(out_t + c * ld + i0) = acc * inv;
            }
        }
        transpose(out_t, out + b * s.out_batch_stride + h * hd, hd, n, ld, s.out_row_stride);
    }
}


// Sequences of at most this many keys (TinyViT's 7 x 7 windows, ~5000 window-heads per MobileSAM image) and no
// relative-position terms run attention_short: a matrix-product call costs more than such a sequence's ~0.3 MFLOP,
// and its logits, weights and values fit in L1.
constexpr int64_t kShortKeys = 64;
constexpr int64_t kShortKeyGroup = 8;    // keys whose logits (a register of queries each) accumulate at once
constexpr int64_t kShortOutputRows = 8;  // queries whose outputs (a register of channels each) accumulate at once

inline Lanes load(const float* p) { return *reinterpret_cast<const Lanes*>(p); }
inline void store(float* p, Lanes x) { *reinterpret_cast<Lanes*>(p) = x; }

Lanes fast_exp(Lanes x) {
    for (int64_t lane = 0; lane < kLanes; ++lane) x[lane] = fast_exp(x[lane]);
    return x;
}

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// The additive logit terms of every head, key and query, transposed as attention_short reads them (heads x
// padded keys x padded queries): the logit bias, or 0 without one; -inf for the keys past the last, which drop out
// of the softmax (their weights come out as exp(-87.3), below 1e-37, and no value row is read for them); 0 for the
// queries past the last.
const float* short_logit_terms(const float* logit_bias, int64_t heads, int64_t queries, int64_t keys,
                               int64_t padded_queries, int64_t padded_keys) {
    thread_local std::vector<float> terms;  // built by the calling thread, read by all; grows, never shrinks
    const int64_t per_head = padded_keys * padded_queries;
    if (int64_t(terms.size()) < heads * per_head) terms.resize(heads * per_head);
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t j = 0; j < padded_keys; ++j) {
            float* row = terms.data() + h * per_head + j * padded_queries;
            for (int64_t i = 0; i < padded_queries; ++i)
                row[i] = j >= keys ? -INFINITY : logit_bias && i < queries ? logit_bias[(h * queries + i) * keys + j] : 0.0f;
        }
    return terms.data();
}

// One sequence and head: q, k, v and out point at its first row and head's first channel, terms at the head's
// transposed terms. Queries run kLanes at a time across vector lanes (transposed and scaled into scratch), so the
// softmax over keys is element-wise between registers; keys are read in place, kShortKeyGroup at a time. The
// exponentiated logits (keys x queries) then multiply the values (copied into rows padded to whole registers),
// kShortOutputRows queries at a time. Queries and keys past the last repeat it, so that every block is full.
void attention_short_sequence(const float* q, const float* k, const float* v, float* out, const AttentionShape& s,
                              float scale, const float* terms) {
    const int64_t hd = s.head_dim, keys = s.keys, queries = s.queries;
    const int64_t padded_keys = round_up(keys, kShortKeyGroup), padded_queries = round_up(queries, kLanes);
    const int64_t head_blocks = (hd + kLanes - 1) / kLanes, padded_hd = head_blocks * kLanes;
    float* queries_t = thread_scratch(size_t(hd * kLanes + padded_keys * padded_queries + padded_queries +
                                             keys * padded_hd + kShortOutputRows * padded_hd));
    float* weights = queries_t + hd * kLanes;                // padded keys x padded queries
    float* inv_sums = weights + padded_keys * padded_queries;
    float* values = inv_sums + padded_queries;                // keys x padded_hd
    float* outputs = values + keys * padded_hd;               // kShortOutputRows x padded_hd
    for (int64_t j = 0; j < keys; ++j) {
        std::copy_n(v + j * s.v_row_stride, hd, values + j * padded_hd);
        std::fill(values + j * padded_hd + hd, values + (j + 1) * padded_hd, 0.0f);
    }

    for (int64_t i0 = 0; i0 < padded_queries; i0 += kLanes) {
        const float* query_rows[kLanes];
        for (int64_t r = 0; r < kLanes; ++r) query_rows[r] = q + std::min(i0 + r, queries - 1) * s.q_row_stride;
        for (int64_t c = 0; c < hd; ++c)
            for (int64_t r = 0; r < kLanes; ++r) queries_t[c * kLanes + r] = scale * query_rows[r][c];
        for (int64_t j0 = 0; j0 < padded_keys; j0 += kShortKeyGroup) {
            const float* key_rows[kShortKeyGroup];
            for (int64_t g = 0; g < kShortKeyGroup; ++g) key_rows[g] = k + std::min(j0 + g, keys - 1) * s.k_row_stride;
            Lanes logits[kShortKeyGroup] = {};
            for (int64_t c = 0; c < hd; ++c) {
                const Lanes query_lanes = load(queries_t + c * kLanes);
                for (int64_t g = 0; g < kShortKeyGroup; ++g) logits[g] += key_rows[g][c] * query_lanes;
            }
            for (int64_t g = 0; g < kShortKeyGroup; ++g) {
                const int64_t at = (j0 + g) * padded_queries + i0;
                store(weights + at, logits[g] + load(terms + at));
            }
        }
        Lanes top = load(weights + i0);
        for (int64_t j = 1; j < padded_keys; ++j) {
            const Lanes logit = load(weights + j * padded_queries + i0);
            top = top > logit ? top : logit;
        }
        Lanes sum = {};
        for (int64_t j = 0; j < padded_keys; ++j) {
            const Lanes weight = fast_exp(load(weights + j * padded_queries + i0) - top);
            store(weights + j * padded_queries + i0, weight);
            sum += weight;
        }
        store(inv_sums + i0, 1.0f / sum);
    }

    for (int64_t i0 = 0; i0 < queries; i0 += kShortOutputRows) {
        for (int64_t hb = 0; hb < head_blocks; ++hb) {
            Lanes acc[kShortOutputRows] = {};
            for (int64_t j = 0; j < keys; ++j) {
                const Lanes value = load(values + j * padded_hd + hb * kLanes);
                for (int64_t r = 0; r < kShortOutputRows; ++r) acc[r] += weights[j * padded_queries + i0 + r] * value;
            }
            for (int64_t r = 0; r < kShortOutputRows; ++r)
                store(outputs + r * padded_hd + hb * kLanes, acc[r] * inv_sums[i0 + r]);
        }
        for (int64_t r = 0; r < std::min(kShortOutputRows, queries - i0); ++r)
            std::copy_n(outputs + r * padded_hd, hd, out + (i0 + r) * s.out_row_stride);
    }
}

void prefetch_rows(const float* first, int64_t rows, int64_t row_stride, int64_t floats) {
    constexpr int64_t kLineFloats = 64 / sizeof(float);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < floats; c += kLineFloats) __builtin_prefetch(first + r * row_stride + c);
}

void attention_short(const float* q, const float* k, const float* v, float* out, const AttentionShape& s,
                     float scale, const float* logit_bias) {
    const int64_t padded_keys = round_up(s.keys, kShortKeyGroup), padded_queries = round_up(s.queries, kLanes);
    const float* terms = [&] {
        ProfileScope scope(OpClass::attention_other);
        return short_logit_terms(logit_bias, s.heads, s.queries, s.keys, padded_queries, padded_keys);
    }();
    const int64_t tasks = s.batch * s.heads, hd = s.head_dim;
#pragma omp parallel for schedule(static) if (tasks > 1 && tasks * s.queries * s.keys * hd >= kParallelGrain)
    for (int64_t task = 0; task < tasks; ++task) {
        ProfileScope scope(OpClass::attention_other);
        const int64_t b = task / s.heads, h = task % s.heads;
        if (task + 1 < tasks) {  // the next sequence's rows load while this one computes (qkv outgrows the caches)
            const int64_t next_b = (task + 1) / s.heads, next_h = (task + 1) % s.heads;
            prefetch_rows(q + next_b * s.q_batch_stride + next_h * hd, s.queries, s.q_row_stride, hd);
            prefetch_rows(k + next_b * s.k_batch_stride + next_h * hd, s.keys, s.k_row_stride, hd);
            prefetch_rows(v + next_b * s.v_batch_stride + next_h * hd, s.keys, s.v_row_stride, hd);
        }
        attention_short_sequence(q + b * s.q_batch_stride + h * hd, k + b * s.k_batch_stride + h * hd,
                                 v + b * s.v_batch_stride + h * hd, out + b * s.out_batch_stride + h * hd, s, scale,
                                 terms + h * padded_keys * padded_queries);
    }
}

// Queries whose logits (a register of keys each) or outputs (a register of channels each) accumulate at once in
// attention_transposed_keys: eight independent sums keep both FMA units busy.
constexpr int64_t kQueryGroup = 8;

// Calls fn with std::integral_constant<int, rows> for rows in 1 .. kQueryGroup: a group's size as a template
// argument, so that its sums live in registers.
template <class Fn, int... kCounts>
void with_group_size(int64_t rows, Fn&& fn, std::integer_sequence<int, kCounts...>) {
    ((rows == kCounts + 1 ? (fn(std::integral_constant<int, kCounts + 1>{}), true) : false) || ...);
}
template <class Fn>
void with_group_size(int64_t rows, Fn&& fn) {
    with_group_size(rows, fn, std::make_integer_sequence<int, int(kQueryGroup)>{});
}

// logits[r * ld + i] = q_r . k_i for kRows queries (kRows x hd, dense, scaled) and one head's keys given transposed
// (hd rows of `keys` values, kt_stride apart): a register of keys at a time, from contiguous rows, with the kRows
// sums in registers. The keys of a last, partial register are read from a zero-padded copy in `tail` (hd x kLanes).
template <int kRows>
void transposed_key_logits(const float* q, const float* kt, int64_t kt_stride, int64_t hd, int64_t keys,
                           float* logits, int64_t ld, float* tail) {
    ProfileScope scope(OpClass::attention_product, 2.0 * kRows * keys * hd);
    auto block = [&](const float* columns, int64_t stride, int64_t i0) {
        Lanes sums[kRows] = {};
        for (int64_t c = 0; c < hd; ++c) {
            const Lanes key = load(columns + c * stride);
            for (int r = 0; r < kRows; ++r) sums[r] += q[r * hd + c] * key;
        }
        for (int r = 0; r < kRows; ++r) store(logits + r * ld + i0, sums[r]);
    };
    const int64_t whole = keys / kLanes * kLanes;
    for (int64_t i0 = 0; i0 < whole; i0 += kLanes) block(kt + i0, kt_stride, i0);
    if (whole == keys) return;
    for (int64_t c = 0; c < hd; ++c)
        for (int64_t i = 0; i < kLanes; ++i)
            tail[c * kLanes + i] = whole + i < keys ? kt[c * kt_stride + whole + i] : 0.0f;
    block(tail, kLanes, whole);
}

// out[r * hd + c] = sum_i weights[r * ld + i] v_i[c] for kRows rows of weights and one head's values (rows
// v_stride apart, hd channels): each value row is read once per register of channels, the kRows sums in registers;
// a last, narrower block of channels is copied into a padded register first.
template <int kRows>
void weighted_values(const float* weights, int64_t ld, const float* v, int64_t v_stride, int64_t hd, int64_t keys,
                     float* out) {
    ProfileScope scope(OpClass::attention_product, 2.0 * kRows * keys * hd);
    for (int64_t c0 = 0; c0 < hd; c0 += kLanes) {
        const int64_t width = std::min(kLanes, hd - c0);
        Lanes sums[kRows] = {};
        for (int64_t i = 0; i < keys; ++i) {
            const float* row = v + i * v_stride + c0;
            Lanes value = {};
            if (width == kLanes) {
                value = load(row);
            } else {
                for (int64_t c = 0; c < width; ++c) value[c] = row[c];
            }
            for (int r = 0; r < kRows; ++r) sums[r] += weights[r * ld + i] * value;
        }
        for (int r = 0; r < kRows; ++r)
            for (int64_t c = 0; c < width; ++c) out[r * hd + c0 + c] = sums[r][c];
    }
}

// Attention with the keys given transposed (AttentionShape::k_transposed): per batch item and head, kQueryGroup
// queries at a time, their logits against every key, the softmax along each row, then the weighted sums of the
// values divided by the row sums. Without matrix-product calls: with a few rows on the left oneDNN's products ran
// at a sixth of their rate (8 x 16 x 4096 per head: 20-25 GFLOP/s on one core); these loops keep the sums in
// registers and read each key and value once per group.
void attention_transposed_keys(const float* q, const float* k, const float* v, float* out, const AttentionShape& s,
                               float scale) {
    const int64_t hd = s.head_dim, keys = s.keys, ld = round_up(keys, kLanes), tasks = s.batch * s.heads;
#pragma omp parallel for schedule(static) if (tasks > 1 && tasks * s.queries * keys * hd >= kParallelGrain)
    for (int64_t task = 0; task < tasks; ++task) {
        ProfileScope scope(OpClass::attention_other);
        const int64_t b = task / s.heads, h = task % s.heads;
        float* logits = thread_scratch(size_t(kQueryGroup * (ld + hd) + hd * kLanes));
        float* rows = logits + kQueryGroup * ld;  // the group's scaled queries, then its weighted sums
        float* tail = rows + kQueryGroup * hd;
        const float* kt = k + b * s.k_batch_stride + h * hd * s.k_row_stride;
        const float* v_head = v + b * s.v_batch_stride + h * hd;
        for (int64_t j0 = 0; j0 < s.queries; j0 += kQueryGroup) {
            const int64_t group = std::min(kQueryGroup, s.queries - j0);
            for (int64_t r = 0; r < group; ++r) {
                const float* query = q + b * s.q_batch_stride + (j0 + r) * s.q_row_stride + h * hd;
                for (int64_t c = 0; c < hd; ++c) rows[r * hd + c] = scale * query[c];
            }
            float inv_sums[kQueryGroup];
            with_group_size(group, [&](auto size) {
                transposed_key_logits<size()>(rows, kt, s.k_row_stride, hd, keys, logits, ld, tail);
                for (int r = 0; r < size(); ++r) inv_sums[r] = 1.0f / exp_shifted_row(logits + r * ld, keys);
                weighted_values<size()>(logits, ld, v_head, s.v_row_stride, hd, keys, rows);
            });
            for (int64_t r = 0; r < group; ++r) {
                float* o = out + b * s.out_batch_stride + (j0 + r) * s.out_row_stride + h * hd;
                for (int64_t c = 0; c < hd; ++c) o[c] = rows[r * hd + c] * inv_sums[r];
            }
        }
    }
}

// Attention through matrix products, for many queries and many keys (the image encoder). Per batch item and
// head, keys (transposed) and values are packed once for oneDNN's kernels;
// queries then run in tiles whose logits stay within a core's L2: logits = scale q k^T, plus the relative-position
// terms, exponentiated in place, times v, divided by the row sums. The relative-position terms come from two small
// products per tile, q times each table (2 grid - 1 entries), from which each query reads its run of terms; a
// logit bias is added row by row.
void attention_tiled(const float* q, const float* k, const float* v, float* out, const AttentionShape& s,
                     float scale, const RelativePosition* rel_pos, Precision precision, const float* logit_bias) {
    const int64_t hd = s.head_dim, keys = s.keys, queries = s.queries;
    const int64_t tile = std::min(queries, std::max<int64_t>(32, 128 * 1024 / keys));
    const int64_t tiles = (queries + tile - 1) / tile;
    // Heads are the unit of work; when there are too few of them to share, tiles are split between tasks too
    // (each task then packs its own copy of the head's keys and values).
    const int64_t heads = s.batch * s.heads;
    const int64_t groups = std::min(tiles, std::max<int64_t>(1, (2 * num_threads() + heads - 1) / heads));
    const int64_t tiles_per_group = (tiles + groups - 1) / groups;

    const int64_t grid_h = rel_pos ? rel_pos->grid_h : 0, grid_w = rel_pos ? rel_pos->grid_w : 0;
    const int64_t entries_h = grid_h ? 2 * grid_h - 1 : 0, entries_w = grid_w ? 2 * grid_w - 1 : 0;
    PackedMatrix tables_h, tables_w;  // transposed: hd x entries; fp32, as the terms are
    if (rel_pos) {
        ProfileScope scope(OpClass::attention_other);
        tables_h.pack(rel_pos->table_h, hd, entries_h, hd, true);
        tables_w.pack(rel_pos->table_w, hd, entries_w, hd, true);
    }

#pragma omp parallel for schedule(dynamic, 1) if (heads * groups > 1)
    for (int64_t task = 0; task < heads * groups; ++task) {
        ProfileScope scope(OpClass::attention_other);  // per task: each thread's products nest in it
        const int64_t b = task / groups / s.heads, h = task / groups % s.heads, group = task % groups;
        const int64_t first_tile = group * tiles_per_group, last_tile = std::min(tiles, first_tile + tiles_per_group);
        float* q_tile = thread_scratch(size_t(tile * (hd + keys + entries_h + entries_w + 1)));
        float* logits = q_tile + tile * hd;
        float* dots_h = logits + tile * keys;  // tile x entries_h: q . table_h[j]
        float* dots_w = dots_h + tile * entries_h;
        float* sums = dots_w + tile * entries_w;
        const float* k_head = k + b * s.k_batch_stride + h * hd;
        const float* v_head = v + b * s.v_batch_stride + h * hd;
        thread_local PackedMatrix keys_t, values;
        keys_t.pack(k_head, hd, keys, s.k_row_stride, true, precision);
        values.pack(v_head, keys, hd, s.v_row_stride, false, precision);
        // bf16 products take the softmax numerators rounded to bf16, written by the exponentiating pass itself.
        const bool bf16_weights = values.precision() == Precision::bf16;
        thread_local std::vector<uint16_t> weights;
        if (bf16_weights && int64_t(weights.size()) < tile * keys) weights.resize(tile * keys);

        for (int64_t t = first_tile; t < last_tile; ++t) {
            const int64_t first = t * tile, rows = std::min(tile, queries - first);
            const float* q_rows = q + b * s.q_batch_stride + first * s.q_row_stride + h * hd;
            for (int64_t r = 0; r < rows; ++r) std::copy_n(q_rows + r * s.q_row_stride, hd, q_tile + r * hd);
            keys_t.multiply(q_tile, logits, rows, scale);
            if (rel_pos) {
                tables_h.multiply(q_tile, dots_h, rows);
                tables_w.multiply(q_tile, dots_w, rows);
            }
            for (int64_t r = 0; r < rows; ++r) {
                float* row = logits + r * keys;
                const int64_t query = first + r;
                const float top = add_logit_terms_max(
                    row, keys, rel_pos ? dots_h + r * entries_h + query / grid_w : nullptr,
                    rel_pos ? dots_w + r * entries_w + query % grid_w : nullptr, grid_h, grid_w,
                    logit_bias ? logit_bias + (h * queries + query) * keys : nullptr);
                sums[r] = bf16_weights ? exp_shifted_to_bf16(row, weights.data() + r * keys, keys, top)
                                       : exp_shifted(row, keys, top);
            }
            // q_tile now holds the output
            if (bf16_weights)
                values.multiply(weights.data(), q_tile, rows);
            else
                values.multiply(logits, q_tile, rows);
            float* out_rows = out + b * s.out_batch_stride + first * s.out_row_stride + h * hd;
            for (int64_t r = 0; r < rows; ++r) {
                const float inv = 1.0f / sums[r];
                float* o = out_rows + r * s.out_row_stride;
#pragma omp simd
                for (int64_t c = 0; c < hd; ++c) o[c] = q_tile[r * hd + c] * inv;
            }
        }
    }
}

}  // namespace

void attention(const float* q, const float* k, const float* v, float* out, const AttentionShape& s, float scale,
               const RelativePosition* rel_pos, Precision precision, const float* logit_bias) {
    if (s.queries == 0 || s.batch == 0 || s.heads == 0) return;
    if (s.k_transposed) {
        if (rel_pos || logit_bias || precision != Precision::fp32)
            throw std::invalid_argument("attention: transposed keys take no logit terms and fp32 only");
        return attention_transposed_keys(q, k, v, out, s, scale);
    }
    if (!rel_pos && !logit_bias && s.keys <= kFewKeys) return attention_few_keys(q, k, v, out, s, scale);
    if (!rel_pos && s.keys <= kShortKeys)
        return attention_short(q, k, v, out, s, scale, logit_bias);
    attention_tiled(q, k, v, out, s, scale, rel_pos, precision, logit_bias);
}

namespace {
// Softmaxes over up to this many values take softmax_interleaved's lane path.
constexpr int64_t kInterleavedMaxCols = 32;

// softmax_interleaved where groups = kRun divides kLanes: the groups of kLanes / kRun consecutive rows fill one
// register per column, so that the softmax is element-wise between registers (kRun contiguous floats per row and
// column move as one piece). The rows of a last, partial register go through the generic loop.
template <int64_t kRun>
int64_t softmax_interleaved_lanes(float* x, int64_t rows, int64_t cols) {
    constexpr int64_t kRowsPerBlock = kLanes / kRun;
    const int64_t blocks = rows / kRowsPerBlock, row_floats = cols * kRun;
#pragma omp parallel for schedule(static) if (rows * row_floats >= kParallelGrain)
    for (int64_t b = 0; b < blocks; ++b) {
        float* block = x + b * kRowsPerBlock * row_floats;
        Lanes column[kInterleavedMaxCols];
        for (int64_t c = 0; c < cols; ++c)
            for (int64_t r = 0; r < kRowsPerBlock; ++r)
                std::memcpy(reinterpret_cast<float*>(&column[c]) + r * kRun, block + r * row_floats + c * kRun,
                            kRun * sizeof(float));
        Lanes top = column[0];
        for (int64_t c = 1; c < cols; ++c) top = column[c] > top ? column[c] : top;
        Lanes sum = {};
        for (int64_t c = 0; c < cols; ++c) {
            column[c] = fast_exp(column[c] - top);
            sum += column[c];
        }
        const Lanes inv = 1.0f / sum;
        for (int64_t c = 0; c < cols; ++c) {
            const Lanes weights = column[c] * inv;
            for (int64_t r = 0; r < kRowsPerBlock; ++r)
                std::memcpy(block + r * row_floats + c * kRun, reinterpret_cast<const float*>(&weights) + r * kRun,
                            kRun * sizeof(float));
        }
    }
    return blocks * kRowsPerBlock;
}

// softmax_interleaved one row and group at a time, from row `first` on.
void softmax_interleaved_rows(float* x, int64_t first, int64_t rows, int64_t cols, int64_t groups) {
    if (first >= rows) return;
    std::vector<float> values(cols);
    for (int64_t r = first; r < rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            float* row = x + r * cols * groups + g;
            for (int64_t c = 0; c < cols; ++c) values[c] = row[c * groups];
            const float inv = 1.0f / exp_shifted_row(values.data(), cols);
            for (int64_t c = 0; c < cols; ++c) row[c * groups] = values[c] * inv;
        }
}
}  // namespace

void softmax_interleaved(float* x, int64_t rows, int64_t cols, int64_t groups) {
    ProfileScope scope(OpClass::softmax);
    int64_t done = 0;
    if (cols <= kInterleavedMaxCols) {
        switch (groups) {
            case 1: done = softmax_interleaved_lanes<1>(x, rows, cols); break;
            case 2: done = softmax_interleaved_lanes<2>(x, rows, cols); break;
            case 4: done = softmax_interleaved_lanes<4>(x, rows, cols); break;
            case 8: done = softmax_interleaved_lanes<8>(x, rows, cols); break;
            case 16: done = softmax_interleaved_lanes<16>(x, rows, cols); break;
            default: break;
        }
    }
    softmax_interleaved_rows(x, done, rows, cols, groups);
}

}  // namespace sqasam::ops
