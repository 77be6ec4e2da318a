#pragma once
// The op layer every network goes through. Row-major float32 throughout: matrix products run through oneDNN
// (in bfloat16 where a layer asks for Precision::bf16), the rest are OpenMP loops written so the compiler
// vectorises them. OpenMP is the one threading runtime: an op
// called inside a parallel region runs on the calling thread alone.
// Each op has a plain reference implementation (namespace ref) that the tests compare the fast one against.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sqasam/precision.hpp"

namespace sqasam::ops {

int num_threads();
void set_num_threads(int n);

// Whether oneDNN runs bf16 products natively here (AVX512-BF16 or AMX).
bool bf16_supported();
// The precision products asked for `requested` run in: bf16 falls back to fp32, with one warning on stderr per
// process, where bf16_supported() is false.
Precision effective_precision(Precision requested);
// The oneDNN implementation a Linear of this precision runs on this CPU (its kernel and ISA, e.g.
// "brg:avx512_core_bf16"), for reports.
std::string product_implementation(Precision precision);

// What a matrix product does with its result.
enum class Epilogue {
    store,       // y = x W^T + b
    gelu,        // y = GELU(x W^T + b), exact (erf) GELU as torch.nn.GELU()
    relu,        // y = max(x W^T + b, 0)
    accumulate,  // y += x W^T + b (a residual connection)
};

// A right-hand matrix B [k, n] repacked into the blocked layout oneDNN's kernels read directly, for many
// products C[m, n] = alpha * A[m, k] B (+ bias, epilogue) with dense row-major A and C. B is given row-major as
// [k, n] (row stride ldb) or, with transpose_b, as [n, k]. Copies share the packed data; packing again into a
// matrix that is not shared reuses its storage. With Precision::bf16, B is stored rounded to bfloat16 and each
// product rounds A to bfloat16 (into per-thread scratch) and accumulates in float32; C stays float32.
class PackedMatrix {
public:
    void pack(const float* b, int64_t k, int64_t n, int64_t ldb, bool transpose_b,
              Precision precision = Precision::fp32);
    int64_t rows() const;  // k
    int64_t cols() const;  // n
    Precision precision() const;  // after any fallback (effective_precision)
    // a_centre (bf16 only, k values): A's rows less a_centre are rounded and multiplied, C = alpha * (A - 1
    // a_centre^T) B + ...; the caller adds alpha * a_centre^T B to the bias where it wants the product of A itself.
    void multiply(const float* a, float* c, int64_t m, float alpha = 1.0f, const float* bias = nullptr,
                  Epilogue epilogue = Epilogue::store, const float* a_centre = nullptr) const;
    // The same with A already rounded to bfloat16 (to_bf16): no conversion per call, for rows that serve several
    // products. Only for a matrix packed in bf16 (std::logic_error otherwise).
    void multiply(const uint16_t* a, float* c, int64_t m, float alpha = 1.0f, const float* bias = nullptr,
                  Epilogue epilogue = Epilogue::store) const;
    // The same with C rounded to bfloat16 after the epilogue (as to_bf16 of the float result), for rows that only a
    // bf16 product reads next: no float write and no conversion pass. Not with Epilogue::accumulate (logic_error).
    void multiply(const float* a, uint16_t* c, int64_t m, float alpha = 1.0f, const float* bias = nullptr,
                  Epilogue epilogue = Epilogue::store, const float* a_centre = nullptr) const;
    void multiply(const uint16_t* a, uint16_t* c, int64_t m, float alpha = 1.0f, const float* bias = nullptr,
                  Epilogue epilogue = Epilogue::store) const;

private:
    const void* operand_rows(const float* a, int64_t m, const float* a_centre) const;
    const void* operand_rows(const uint16_t* a) const;
    void multiply_rows(const void* a, void* c, bool c_bf16, int64_t m, float alpha, const float* bias,
                       Epilogue epilogue) const;
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

// A fully connected layer y[rows, out] = x[rows, in] W^T + b, W in PyTorch's [out, in] layout, both row-major.
// The weight is packed once, at construction (in bfloat16 with Precision::bf16, see PackedMatrix). Copies share it.
// With Precision::bf16 and centre_inputs, each call rounds x - m to bfloat16 instead of x, m the mean of x's
// columns over a sample of its rows, and adds W m to the bias in float32: exact in real arithmetic, and the input
// rounding error then scales with x's spread around m rather than with |x| (activations with large per-channel
// offsets, such as TinyViT's convolutional stage, whose plain bf16 inputs move LiteMedSAM's masks).
class Linear {
public:
    Linear() = default;
    Linear(const float* weight, const float* bias, int64_t out_features, int64_t in_features,
           Precision precision = Precision::fp32, bool centre_inputs = false);
    int64_t in_features() const { return weight_.rows(); }
    int64_t out_features() const { return weight_.cols(); }
    Precision precision() const { return weight_.precision(); }
    void forward(const float* x, float* y, int64_t rows, Epilogue epilogue = Epilogue::store) const;
    void forward(const uint16_t* x, float* y, int64_t rows, Epilogue epilogue = Epilogue::store) const;  // bf16 x
    // y rounded to bf16 (PackedMatrix::multiply with a bf16 C): for a layer whose output feeds only a bf16 product.
    void forward(const float* x, uint16_t* y, int64_t rows, Epilogue epilogue = Epilogue::store) const;
    void forward(const uint16_t* x, uint16_t* y, int64_t rows, Epilogue epilogue = Epilogue::store) const;

private:
    template <class Out>
    void forward_rows(const float* x, Out* y, int64_t rows, Epilogue epilogue) const;
    const float* centred_bias(const float* x, int64_t rows, std::vector<float>& centre) const;
    PackedMatrix weight_;
    std::vector<float> bias_;             // empty when the layer has none
    std::vector<float> centring_weight_;  // W [out, in] in float32 for W m when centring inputs, else empty
};

// C[m,n] = alpha * A[m,k] B + beta * C with B stored [k,n], or [n,k] when transpose_b. Leading dimensions are
// row strides in floats. Primitives are cached per thread by shape.
void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float alpha = 1.0f, float beta = 0.0f);

// C[m,n] = A[m,k] B with A rounded to bfloat16 on the way and B given in bfloat16 (to_bf16 bits), row-major
// [k,n] with row stride ldb; A and C dense. For a right-hand side that changes with every product (packing it
// would cost as much as the product saves); float32 accumulation, as PackedMatrix's bf16 products. Only where
// bf16_supported().
void matmul(const float* a, const uint16_t* b, float* c, int64_t m, int64_t n, int64_t k, int64_t ldb);

// What layer_norm reads besides x and writes besides y, each optional; all rows x dim.
struct NormExtras {
    // LayerNorm(x + residual) instead of LayerNorm(x): a residual connection whose sum only the norm reads.
    const float* residual = nullptr;
    // y_plus = y + addend (the mask decoder's image rows and their copy with the positional encoding).
    const float* addend = nullptr;
    float* y_plus = nullptr;
    // to_bf16 of y / of y + addend (left operands of bf16 products that would otherwise convert them on every call);
    // y and y_plus may then be null (rows only a bf16 product reads).
    uint16_t* y_bf16 = nullptr;
    uint16_t* y_plus_bf16 = nullptr;
    bool gelu = false;  // y = GELU(LayerNorm(x)) (as gelu()), in every output
};

// Row-wise LayerNorm over the last dimension (also LayerNorm2d on channels-last data), y may alias x, with every
// output of `extras` written in the same pass.
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim, float eps,
                const NormExtras& extras = {});
// out = x rounded to bfloat16 (to nearest, ties to even, as ref::round_to_bf16), as bit patterns: the upper half
// of the float's bits, the form PackedMatrix::multiply takes.
void to_bf16(const float* x, uint16_t* out, int64_t n);
void gelu(float* x, int64_t n);  // exact (erf) GELU, in place
void softmax_rows(float* x, int64_t rows, int64_t cols);
// Softmaxes over `cols` values interleaved with others: in each of `rows` rows of cols * groups floats, for each
// g < groups, over the values at c * groups + g (as ref::softmax_rows would over them gathered into a row). For the
// mask decoder's image-to-token weights (a row per image pixel, a column per token, the heads interleaved): where
// groups divides the vector width, the groups of one or more rows share a register per column, so the softmax is
// element-wise between registers, where a row-wise loop would spend its time in reductions over a few values.
void softmax_interleaved(float* x, int64_t rows, int64_t cols, int64_t groups);
void add(float* y, const float* x, int64_t n);  // y += x
void exp(float* x, int64_t n);                  // in place; the exponential the attention softmax uses
// dst[c, r] = src[r, c] for a rows x cols matrix; strides are row strides in floats.
void transpose(const float* src, float* dst, int64_t rows, int64_t cols, int64_t src_stride, int64_t dst_stride);

// Multi-head attention over a batch of sequences. A row holds one token with the heads side by side
// (head h at columns [h * head_dim, (h + 1) * head_dim)); strides are in floats.
struct AttentionShape {
    int64_t batch = 1, heads = 1, queries = 0, keys = 0, head_dim = 0;
    int64_t q_row_stride = 0, k_row_stride = 0, v_row_stride = 0, out_row_stride = 0;
    int64_t q_batch_stride = 0, k_batch_stride = 0, v_batch_stride = 0, out_batch_stride = 0;
    // Keys given transposed: per batch item, heads * head_dim rows of `keys` values (row stride k_row_stride),
    // channel c of head h in row h * head_dim + c. For a few queries against many keys whose transpose is made once
    // and read many times (the mask decoder's first attention to the image); fp32, without logit terms.
    bool k_transposed = false;
};

// Decomposed relative-position terms (MViTv2, as in SAM's image encoder): queries and keys are the same
// grid_h x grid_w grid in row-major order and the logit of (q, k) gains q . table_h[qh - kh + grid_h - 1] +
// q . table_w[qw - kw + grid_w - 1], with the unscaled q. Tables are (2 * grid - 1) x head_dim.
struct RelativePosition {
    const float* table_h = nullptr;
    const float* table_w = nullptr;
    int64_t grid_h = 0, grid_w = 0;
};

// out = softmax(scale * q k^T [+ relative-position terms] [+ logit_bias]) v, per batch item and head. logit_bias,
// when given, is heads x queries x keys (row-major), the same for every batch item: a learned additive bias such
// as TinyViT's per-offset attention biases. Queries are processed in tiles so the full queries x keys matrix never
// exists. Two kinds of short sequences run as direct loops instead of matrix products: only a few keys and no
// extra terms (the mask decoder's image-to-token attention), and at most 64 keys with heads of at most 64 channels
// and no relative-position terms (TinyViT's 7 x 7 windows). With Precision::bf16 the two products (q k^T and the
// softmax numerators times v) round their operands to bfloat16; the relative-position terms, the bias, the softmax
// and its row sums stay float32 (the direct loops are float32 throughout).
void attention(const float* q, const float* k, const float* v, float* out, const AttentionShape& shape, float scale,
               const RelativePosition* rel_pos = nullptr, Precision precision = Precision::fp32,
               const float* logit_bias = nullptr);

// ---- Op profile (src/ops/profile.cpp): where a network's time goes, by op class ----
enum class OpClass {
    product,            // matrix products (Linear, matmul), their epilogues included
    attention_product,  // the products inside attention (q k^T, weights v, relative-position dots)
    convolution,        // oneDNN convolutions
    attention_other,    // the rest of attention: logit terms, softmax, tile copies, normalisation
    layer_norm,
    gelu,               // stand-alone GELUs (a product's GELU epilogue counts as the product)
    softmax,            // stand-alone softmax and exp
    bf16_conversion,    // rounding operands to bf16
    packing,            // repacking right-hand matrices into oneDNN's blocked layout
    layout,             // window partitions, transposes, im2col
    elementwise,        // adds
    resampling,         // the masks' bilinear resampling to the image's size and thresholding (postprocessing)
};
constexpr int kOpClassCount = int(OpClass::resampling) + 1;
const char* to_string(OpClass op);
bool is_product(OpClass op);

// Totals since start_profile(): thread-seconds per class (an op called outside a parallel region counts its wall
// time once per thread, since it keeps them all; inside a region, once), exclusive of nested ops, and the FLOPs of
// the product classes.
struct OpProfile {
    std::array<double, kOpClassCount> thread_seconds{}, flops{};
    std::array<int64_t, kOpClassCount> calls{};
};
void start_profile();  // zeroes the totals and starts recording
OpProfile stop_profile();

// Records the time until its end under op, when a profile is running (a relaxed atomic load otherwise).
class ProfileScope {
public:
    explicit ProfileScope(OpClass op, double flops = 0);
    ~ProfileScope();
    ProfileScope(const ProfileScope&) = delete;
    ProfileScope& operator=(const ProfileScope&) = delete;

private:
    void pause(std::chrono::steady_clock::time_point now);
    bool active_ = false;
    OpClass op_ = OpClass::product;
    double flops_ = 0, accumulated_ = 0;
    int weight_ = 1;
    ProfileScope* parent_ = nullptr;
    std::chrono::steady_clock::time_point start_;
};

namespace ref {
void linear(const float* x, const float* weight, const float* bias, float* y, int64_t rows, int64_t out_features,
            int64_t in_features, Epilogue epilogue = Epilogue::store);
void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float alpha = 1.0f, float beta = 0.0f);
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim, float eps,
                const float* addend = nullptr, float* y_plus = nullptr);
void gelu(float* x, int64_t n);
void relu(float* x, int64_t n);
void softmax_rows(float* x, int64_t rows, int64_t cols);
void add(float* y, const float* x, int64_t n);
void exp(float* x, int64_t n);
void transpose(const float* src, float* dst, int64_t rows, int64_t cols, int64_t src_stride, int64_t dst_stride);
void attention(const float* q, const float* k, const float* v, float* out, const AttentionShape& shape, float scale,
               const RelativePosition* rel_pos = nullptr, const float* logit_bias = nullptr);
// x rounded to the nearest bfloat16 (8 significant bits), ties to even; for x in bfloat16's normal range.
float round_to_bf16(float x);
// Every value rounded so (the inputs a bf16 product sees).
std::vector<float> round_to_bf16(std::vector<float> values);
}  // namespace ref

}  // namespace sqasam::ops

// ---- Convolution (src/ops/conv.cpp) ----
namespace sqasam::ops {

// A 2-D convolution (PyTorch's Conv2d: square kernel, equal stride and zero padding on both axes) on one
// channels-last image: x is height x width x in_channels rows, y is out_h x out_w x out_channels with
// out = (in + 2 padding - kernel) / stride + 1. The weight is in PyTorch's (out, in / groups, kernel, kernel)
// layout; groups = in = out is a depthwise convolution. Primitives are built once per input size and epilogue.
// With Precision::bf16 the weight is stored rounded to bfloat16 and each call rounds x to bfloat16 (into per-thread
// scratch), accumulating in float32 into a float32 y, as Linear does.
class Conv2d {
public:
    Conv2d() = default;
    Conv2d(const float* weight, const float* bias, int64_t out_channels, int64_t in_channels, int64_t kernel,
           int64_t stride, int64_t padding, int64_t groups = 1, Precision precision = Precision::fp32);
    int64_t in_channels() const;
    int64_t out_channels() const;
    Precision precision() const;  // after any fallback (effective_precision)
    int64_t output_size(int64_t input) const;
    // pad_rows = false: no zero padding above and below, for a strip of a taller image whose rows around the
    // strip the caller supplies in x, so y has (height - kernel) / stride + 1 rows.
    void forward(const float* x, float* y, int64_t height, int64_t width, Epilogue epilogue = Epilogue::store,
                 bool pad_rows = true) const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

namespace ref {
void conv2d(const float* x, const float* weight, const float* bias, float* y, int64_t in_channels,
            int64_t out_channels, int64_t height, int64_t width, int64_t kernel, int64_t stride, int64_t padding,
            int64_t groups, Epilogue epilogue = Epilogue::store);
}  // namespace ref

}  // namespace sqasam::ops
