// Matrix products through oneDNN. Creating a primitive costs far more than a small product, so primitives are
// built once per shape and kept per thread (each OpenMP thread also has its own stream); right-hand matrices that
// serve many products are repacked once into the blocked layout oneDNN's kernels read directly.
#include <omp.h>

#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "ops/ops.hpp"

namespace sqasam::ops {
namespace {

using dnnl::memory;
using Dims = memory::dims;

// The blocked layout of fp32 brgemm weights does not depend on the row count of the left operand, so a packing
// chosen for this many rows serves every call (one that did not fit would fail loudly at primitive creation).
constexpr int64_t kTypicalRows = 256;

const dnnl::engine& cpu_engine() {
    static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

dnnl::stream& thread_stream() {
    thread_local dnnl::stream stream(cpu_engine());
    return stream;
}

memory::desc plain_f32(int64_t rows, int64_t cols, int64_t row_stride) {
    return memory::desc(Dims{rows, cols}, memory::data_type::f32, Dims{row_stride, 1});
}

memory::desc transposed_f32(int64_t rows, int64_t cols, int64_t col_stride) {
    return memory::desc(Dims{rows, cols}, memory::data_type::f32, Dims{1, col_stride});
}

memory::desc any_f32(int64_t rows, int64_t cols) {
    return memory::desc(Dims{rows, cols}, memory::data_type::f32, memory::format_tag::any);
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

float* writable(const float* p) { return const_cast<float*>(p); }  // oneDNN memory wraps non-const handles

// Everything that selects a primitive: shape, strides (0 for a packed right-hand side), scaling and epilogue.
using ProductKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, float, float, Epilogue, bool>;

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

}  // namespace

int num_threads() { return omp_get_max_threads(); }
void set_num_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }

struct PackedMatrix::Impl {
    int64_t k = 0, n = 0;
    memory::desc desc;
    memory data;
};

void PackedMatrix::pack(const float* b, int64_t k, int64_t n, int64_t ldb, bool transpose_b) {
    if (!impl_ || impl_.use_count() > 1 || impl_->k != k || impl_->n != n) {
        auto impl = std::make_shared<Impl>();
        impl->k = k;
        impl->n = n;
        dnnl::matmul::desc desc(plain_f32(kTypicalRows, k, k), any_f32(k, n), plain_f32(kTypicalRows, n, n));
        impl->desc = dnnl::matmul::primitive_desc(desc, cpu_engine()).weights_desc();
        impl->data = memory(impl->desc, cpu_engine());
        impl_ = std::move(impl);
    }
    auto source_desc = transpose_b ? transposed_f32(k, n, ldb) : plain_f32(k, n, ldb);
    using ReorderKey = std::tuple<int64_t, int64_t, int64_t, bool>;
    thread_local std::map<ReorderKey, dnnl::reorder> reorders;
    ReorderKey key{k, n, ldb, transpose_b};
    auto found = reorders.find(key);
    if (found == reorders.end())
        found = reorders.emplace(key, dnnl::reorder({cpu_engine(), source_desc, cpu_engine(), impl_->desc})).first;
    memory source(source_desc, cpu_engine(), writable(b));
    run(found->second, {{DNNL_ARG_FROM, source}, {DNNL_ARG_TO, impl_->data}});
}

int64_t PackedMatrix::rows() const { return impl_ ? impl_->k : 0; }
int64_t PackedMatrix::cols() const { return impl_ ? impl_->n : 0; }

void PackedMatrix::multiply(const float* a, float* c, int64_t m, float alpha, const float* bias,
                            Epilogue epilogue) const {
    if (m == 0) return;
    const Impl& b = *impl_;
    const auto& engine = cpu_engine();
    auto a_desc = plain_f32(m, b.k, b.k), c_desc = plain_f32(m, b.n, b.n);
    auto bias_desc = bias ? plain_f32(1, b.n, b.n) : memory::desc();
    const float sum_scale = epilogue == Epilogue::accumulate ? 1.0f : 0.0f;
    ProductKey key{m, b.n, b.k, 0, 0, 0, false, alpha, sum_scale, epilogue, bias != nullptr};
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

Linear::Linear(const float* weight, const float* bias, int64_t out_features, int64_t in_features) {
    weight_.pack(weight, in_features, out_features, in_features, true);  // W [out, in] is B^T
    if (bias) bias_.assign(bias, bias + out_features);
}

void Linear::forward(const float* x, float* y, int64_t rows, Epilogue epilogue) const {
    weight_.multiply(x, y, rows, 1.0f, bias_.empty() ? nullptr : bias_.data(), epilogue);
}

void transpose(const float* src, float* dst, int64_t rows, int64_t cols, int64_t src_stride, int64_t dst_stride) {
    if (rows == 0 || cols == 0) return;
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

void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
            int64_t ldc, bool transpose_b, float alpha, float beta) {
    if (m == 0 || n == 0) return;
    auto a_desc = plain_f32(m, k, lda);
    auto b_desc = transpose_b ? transposed_f32(k, n, ldb) : plain_f32(k, n, ldb);
    auto c_desc = plain_f32(m, n, ldc);
    ProductKey key{m, n, k, lda, ldb, ldc, transpose_b, alpha, beta, Epilogue::store, false};
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
