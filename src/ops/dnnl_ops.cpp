// Matrix products through oneDNN. Creating a primitive costs far more than a small product, so primitives are
// built once per shape and kept per thread (each OpenMP thread also has its own stream); right-hand matrices that
// serve many products are repacked once into the blocked layout oneDNN's kernels read directly.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <iostream>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <stdexcept>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "ops/dnnl_context.hpp"
#include "ops/ops.hpp"

namespace sqasam::ops {
namespace {

using dnnl::memory;
using Dims = memory::dims;

// The blocked layout of brgemm weights (fp32 and bf16) does not depend on the row count of the left operand, so a
// packing chosen for this many rows serves every call (one that did not fit would fail loudly at primitive
// creation).
constexpr int64_t kTypicalRows = 256;

// Below this many elements a parallel conversion costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 14;

// Rows of x that a centred Linear averages for its centre: the centre only has to lie near x's typical values
// (any centre is exact in real arithmetic), so a sample does.
constexpr int64_t kCentreSampleRows = 256;

// Results of up to this many values take a GELU epilogue as our gelu() after the product (multiply_rows).
constexpr int64_t kOwnGeluMaxValues = int64_t(2) << 20;

memory::data_type operand_type(Precision precision) {
    return precision == Precision::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
}

memory::desc plain(int64_t rows, int64_t cols, int64_t row_stride, memory::data_type type) {
    return memory::desc(Dims{rows, cols}, type, Dims{row_stride, 1});
}

memory::desc plain_f32(int64_t rows, int64_t cols, int64_t row_stride) {
    return plain(rows, cols, row_stride, memory::data_type::f32);
}

memory::desc transposed_f32(int64_t rows, int64_t cols, int64_t col_stride) {
    return memory::desc(Dims{rows, cols}, memory::data_type::f32, Dims{1, col_stride});
}

dnnl::primitive_attr attributes(float alpha, float sum_scale, Epilogue epilogue) {
    dnnl::primitive_attr attr;
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    dnnl::post_ops post;
    if (sum_scale != 0.0f) post.append_sum(sum_scale);
    if (epilogue == Epilogue::gelu) post.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (epilogue == Epilogue::relu) post.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(post);
    return attr;
}

template <class T>
T* writable(const T* p) { return const_cast<T*>(p); }  // oneDNN memory wraps non-const handles

// Everything that selects a primitive: shape, strides (0 for a packed right-hand side), scaling, epilogue, bias,
// and precision of the operands and of the result.
using ProductKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float, float, Epilogue, bool,
                              Precision, bool>;

struct ProductKeyHash {
    size_t operator()(const ProductKey& key) const {
        size_t h = 0;
        std::apply([&](const auto&... field) {
            ((h = h * 1000003u ^ std::hash<std::decay_t<decltype(field)>>()(field)), ...);
        }, key);
        return h;
    }
};

template <class Make>
const dnnl::matmul& cached_product(const ProductKey& key, Make&& make_desc) {
    thread_local std::unordered_map<ProductKey, dnnl::matmul, ProductKeyHash> cache;
    auto found = cache.find(key);
    if (found == cache.end()) found = cache.emplace(key, dnnl::matmul(make_desc())).first;
    return found->second;
}

void run(const dnnl::primitive& primitive, const std::unordered_map<int, memory>& args) {
    primitive.execute(thread_stream(), args);
    thread_stream().wait();
}

// a[rows, cols] less centre[cols] per row, rounded to bfloat16 into a per-thread buffer (as to_bf16_scratch).
const uint16_t* centred_bf16_scratch(const float* a, int64_t rows, int64_t cols, const float* centre) {
    ProfileScope scope(OpClass::bf16_conversion);
    thread_local std::vector<uint16_t> scratch;
    if (int64_t(scratch.size()) < rows * cols) scratch.resize(rows * cols);
    uint16_t* out = scratch.data();
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelGrain)
    for (int64_t r = 0; r < rows; ++r)
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = to_bf16(a[r * cols + c] - centre[c]);
    return out;
}

}  // namespace

const dnnl::engine& cpu_engine() {
    static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

dnnl::stream& thread_stream() {
    thread_local dnnl::stream stream(cpu_engine());
    return stream;
}

void to_bf16(const float* x, uint16_t* out, int64_t n) {
    ProfileScope scope(OpClass::bf16_conversion);
#pragma omp parallel for simd schedule(static) if (n >= kParallelGrain)
    for (int64_t i = 0; i < n; ++i) out[i] = to_bf16(x[i]);
}

const uint16_t* to_bf16_scratch(const float* a, int64_t count) {
    thread_local std::vector<uint16_t> scratch;
    if (int64_t(scratch.size()) < count) scratch.resize(count);
    to_bf16(a, scratch.data(), count);
    return scratch.data();
}

int num_threads() { return omp_get_max_threads(); }
void set_num_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }

bool bf16_supported() {
    // cpu_isa values are bit sets: an ISA includes another when it has all of its bits.
    const auto bf16 = unsigned(dnnl::cpu_isa::avx512_core_bf16);
    return (unsigned(dnnl::get_effective_cpu_isa()) & bf16) == bf16;
}

Precision effective_precision(Precision requested) {
    if (requested != Precision::bf16 || bf16_supported()) return requested;
    static std::once_flag warned;
    std::call_once(warned, [] {
        std::cerr << "sqasam: warning: this CPU has no bfloat16 matrix instructions (AVX512-BF16 or AMX) that "
                     "oneDNN can use; computing in fp32 instead of bf16\n";
    });
    return Precision::fp32;
}

std::string product_implementation(Precision precision) {
    const auto type = operand_type(effective_precision(precision));
    constexpr int64_t kIn = 768, kOut = 768;  // a ViT-B-sized layer; the choice does not depend on the size here
    dnnl::matmul::desc desc(plain(kTypicalRows, kIn, kIn, type), memory::desc(Dims{kIn, kOut}, type, memory::format_tag::any),
                            plain_f32(kTypicalRows, kOut, kOut));
    return dnnl::matmul::primitive_desc(desc, cpu_engine()).impl_info_str();
}

struct PackedMatrix::Impl {
    int64_t k = 0, n = 0;
    Precision precision = Precision::fp32;
    memory::desc desc;
    memory data;
};

void PackedMatrix::pack(const float* b, int64_t k, int64_t n, int64_t ldb, bool transpose_b, Precision precision) {
    ProfileScope scope(OpClass::packing);
    precision = effective_precision(precision);
    if (!impl_ || impl_.use_count() > 1 || impl_->k != k || impl_->n != n || impl_->precision != precision) {
        auto impl = std::make_shared<Impl>();
        impl->k = k;
        impl->n = n;
        impl->precision = precision;
        const auto type = operand_type(precision);
        dnnl::matmul::desc desc(plain(kTypicalRows, k, k, type), memory::desc(Dims{k, n}, type, memory::format_tag::any),
                                plain_f32(kTypicalRows, n, n));
        impl->desc = dnnl::matmul::primitive_desc(desc, cpu_engine()).weights_desc();
        impl->data = memory(impl->desc, cpu_engine());
        impl_ = std::move(impl);
    }
    // The reorder converts to bf16 on the way when the packed layout holds bf16.
    auto source_desc = transpose_b ? transposed_f32(k, n, ldb) : plain_f32(k, n, ldb);
    using ReorderKey = std::tuple<int64_t, int64_t, int64_t, bool, Precision>;
    thread_local std::map<ReorderKey, dnnl::reorder> reorders;
    ReorderKey key{k, n, ldb, transpose_b, precision};
    auto found = reorders.find(key);
    if (found == reorders.end())
        found = reorders.emplace(key, dnnl::reorder({cpu_engine(), source_desc, cpu_engine(), impl_->desc})).first;
    memory source(source_desc, cpu_engine(), writable(b));
    run(found->second, {{DNNL_ARG_FROM, source}, {DNNL_ARG_TO, impl_->data}});
}

int64_t PackedMatrix::rows() const { return impl_ ? impl_->k : 0; }
int64_t PackedMatrix::cols() const { return impl_ ? impl_->n : 0; }
Precision PackedMatrix::precision() const { return impl_ ? impl_->precision : Precision::fp32; }

const void* PackedMatrix::operand_rows(const float* a, int64_t m, const float* a_centre) const {
    const Impl& b = *impl_;
    if (a_centre && b.precision != Precision::bf16)
        throw std::logic_error("PackedMatrix::multiply: a centre applies to bf16 products only");
    if (a_centre) return centred_bf16_scratch(a, m, b.k, a_centre);
    return b.precision == Precision::bf16 ? static_cast<const void*>(to_bf16_scratch(a, m * b.k)) : a;
}

const void* PackedMatrix::operand_rows(const uint16_t* a) const {
    if (impl_->precision != Precision::bf16)
        throw std::logic_error("PackedMatrix::multiply: bf16 rows for a matrix packed in fp32");
    return a;
}

void PackedMatrix::multiply(const float* a, float* c, int64_t m, float alpha, const float* bias,
                            Epilogue epilogue, const float* a_centre) const {
    if (m == 0) return;
    multiply_rows(operand_rows(a, m, a_centre), c, false, m, alpha, bias, epilogue);
}

void PackedMatrix::multiply(const uint16_t* a, float* c, int64_t m, float alpha, const float* bias,
                            Epilogue epilogue) const {
    if (m == 0) return;
    multiply_rows(operand_rows(a), c, false, m, alpha, bias, epilogue);
}

void PackedMatrix::multiply(const float* a, uint16_t* c, int64_t m, float alpha, const float* bias,
                            Epilogue epilogue, const float* a_centre) const {
    if (m == 0) return;
    multiply_rows(operand_rows(a, m, a_centre), c, true, m, alpha, bias, epilogue);
}

void PackedMatrix::multiply(const uint16_t* a, uint16_t* c, int64_t m, float alpha, const float* bias,
                            Epilogue epilogue) const {
    if (m == 0) return;
    multiply_rows(operand_rows(a), c, true, m, alpha, bias, epilogue);
}

void PackedMatrix::multiply_rows(const void* a, void* c, bool c_bf16, int64_t m, float alpha, const float* bias,
                                 Epilogue epilogue) const {
    const Impl& b = *impl_;
    if (c_bf16 && epilogue == Epilogue::accumulate)
        throw std::logic_error("PackedMatrix::multiply: a bf16 result cannot accumulate");
    // oneDNN 2.6's erf-GELU post-op costs 0.8 ns per value in these kernels, our gelu() 0.5: a result small enough
    // to stay in cache gets ours as a pass after the product (a larger one would cost a trip to memory); a bf16
    // one is then computed in float and rounded, so that it stays the float result rounded.
    if (epilogue == Epilogue::gelu && m * b.n <= kOwnGeluMaxValues) {
        thread_local std::vector<float> result;
        float* y = c_bf16 ? (result.resize(m * b.n), result.data()) : static_cast<float*>(c);
        multiply_rows(a, y, false, m, alpha, bias, Epilogue::store);
        gelu(y, m * b.n);
        if (c_bf16) to_bf16(y, static_cast<uint16_t*>(c), m * b.n);
        return;
    }
    ProfileScope scope(OpClass::product, 2.0 * double(m) * double(b.n) * double(b.k));
    const auto& engine = cpu_engine();
    auto a_desc = plain(m, b.k, b.k, operand_type(b.precision));
    auto c_desc = plain(m, b.n, b.n, c_bf16 ? memory::data_type::bf16 : memory::data_type::f32);
    auto bias_desc = bias ? plain_f32(1, b.n, b.n) : memory::desc();
    const float sum_scale = epilogue == Epilogue::accumulate ? 1.0f : 0.0f;
    ProductKey key{m, b.n, b.k, 0, 0, 0, false, alpha, sum_scale, epilogue, bias != nullptr, b.precision, c_bf16};
    const auto& primitive = cached_product(key, [&] {
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_desc, b.desc, bias_desc, c_desc),
                                            attributes(alpha, sum_scale, epilogue), engine);
    });
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(a_desc, engine, writable(a))},
                                         {DNNL_ARG_WEIGHTS, b.data},
                                         {DNNL_ARG_DST, memory(c_desc, engine, c)}};
    if (bias) args.emplace(DNNL_ARG_BIAS, memory(bias_desc, engine, writable(bias)));
    run(primitive, args);
}

Linear::Linear(const float* weight, const float* bias, int64_t out_features, int64_t in_features,
               Precision precision, bool centre_inputs) {
    weight_.pack(weight, in_features, out_features, in_features, true, precision);  // W [out, in] is B^T
    if (bias) bias_.assign(bias, bias + out_features);
    if (centre_inputs && weight_.precision() == Precision::bf16)
        centring_weight_.assign(weight, weight + out_features * in_features);
}

// W m for the centre m of a sample of x's rows, plus the bias: what the centred product leaves out.
const float* Linear::centred_bias(const float* x, int64_t rows, std::vector<float>& centre) const {
    const int64_t in = in_features(), out = out_features();
    thread_local std::vector<float> sum_bias;
    centre.assign(in, 0.0f);
    const int64_t samples = std::min(rows, kCentreSampleRows);
    for (int64_t s = 0; s < samples; ++s) {
        const float* row = x + (s * rows / samples) * in;
        for (int64_t i = 0; i < in; ++i) centre[i] += row[i];
    }
    for (float& m : centre) m /= float(samples);
    sum_bias.resize(out);
    for (int64_t o = 0; o < out; ++o) {
        float sum = bias_.empty() ? 0.0f : bias_[o];
        for (int64_t i = 0; i < in; ++i) sum += centring_weight_[o * in + i] * centre[i];
        sum_bias[o] = sum;
    }
    return sum_bias.data();
}

template <class Out>
void Linear::forward_rows(const float* x, Out* y, int64_t rows, Epilogue epilogue) const {
    if (centring_weight_.empty() || rows == 0) {
        weight_.multiply(x, y, rows, 1.0f, bias_.empty() ? nullptr : bias_.data(), epilogue);
        return;
    }
    thread_local std::vector<float> centre;
    const float* bias = centred_bias(x, rows, centre);
    weight_.multiply(x, y, rows, 1.0f, bias, epilogue, centre.data());
}

void Linear::forward(const float* x, float* y, int64_t rows, Epilogue epilogue) const {
    forward_rows(x, y, rows, epilogue);
}

void Linear::forward(const float* x, uint16_t* y, int64_t rows, Epilogue epilogue) const {
    forward_rows(x, y, rows, epilogue);
}

void Linear::forward(const uint16_t* x, float* y, int64_t rows, Epilogue epilogue) const {
    weight_.multiply(x, y, rows, 1.0f, bias_.empty() ? nullptr : bias_.data(), epilogue);
}

void Linear::forward(const uint16_t* x, uint16_t* y, int64_t rows, Epilogue epilogue) const {
    weight_.multiply(x, y, rows, 1.0f, bias_.empty() ? nullptr : bias_.data(), epilogue);
}

void transpose(const float* src, float* dst, int64_t rows, int64_t cols, int64_t src_stride, int64_t dst_stride) {
    if (rows == 0 || cols == 0) return;
    ProfileScope scope(OpClass::layout);
    // The matrix M[c, r] read with src's strides and written with dst's: oneDNN's reorder kernels do the shuffling.
    memory::desc from(Dims{cols, rows}, memory::data_type::f32, Dims{1, src_stride});
    memory::desc to(Dims{cols, rows}, memory::data_type::f32, Dims{dst_stride, 1});
    using Key = std::tuple<int64_t, int64_t, int64_t, int64_t>;
    thread_local std::map<Key, dnnl::reorder> cache;
    Key key{rows, cols, src_stride, dst_stride};
    auto found = cache.find(key);
    if (found == cache.end()) found = cache.emplace(key, dnnl::reorder({cpu_engine(), from, cpu_engine(), to})).first;
    run(found->second, {{DNNL_ARG_FROM, memory(from, cpu_engine(), writable(src))},
                        {DNNL_ARG_TO, memory(to, cpu_engine(), dst)}});
}

void matmul(const float* a, const uint16_t* b, float* c, int64_t m, int64_t n, int64_t k, int64_t ldb) {
    if (m == 0 || n == 0) return;
    const uint16_t* a_bf16 = to_bf16_scratch(a, m * k);
    ProfileScope scope(OpClass::product, 2.0 * double(m) * double(n) * double(k));
    const auto a_desc = plain(m, k, k, memory::data_type::bf16), b_desc = plain(k, n, ldb, memory::data_type::bf16);
    const auto c_desc = plain_f32(m, n, n);
    ProductKey key{m, n, k, k, ldb, n, false, 1.0f, 0.0f, Epilogue::store, false, Precision::bf16, false};
    const auto& primitive = cached_product(key, [&] {
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_desc, b_desc, c_desc), cpu_engine());
    });
    const auto& engine = cpu_engine();
    run(primitive, {{DNNL_ARG_SRC, memory(a_desc, engine, writable(a_bf16))},
                    {DNNL_ARG_WEIGHTS, memory(b_desc, engine, writable(b))},
                    {DNNL_ARG_DST, memory(c_desc, engine, c)}});
}

void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float alpha, float beta) {
    if (m == 0 || n == 0) return;
    ProfileScope scope(OpClass::product, 2.0 * double(m) * double(n) * double(k));
    auto a_desc = plain_f32(m, k, lda);
    auto b_desc = transpose_b ? transposed_f32(k, n, ldb) : plain_f32(k, n, ldb);
    auto c_desc = plain_f32(m, n, ldc);
    ProductKey key{m, n, k, lda, ldb, ldc, transpose_b, alpha, beta, Epilogue::store, false, Precision::fp32, false};
    const auto& primitive = cached_product(key, [&] {
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_desc, b_desc, c_desc),
                                            attributes(alpha, beta, Epilogue::store), cpu_engine());
    });
    const auto& engine = cpu_engine();
    run(primitive, {{DNNL_ARG_SRC, memory(a_desc, engine, writable(a))},
                    {DNNL_ARG_WEIGHTS, memory(b_desc, engine, writable(b))},
                    {DNNL_ARG_DST, memory(c_desc, engine, c)}});
}

}  // namespace sqasam::ops
