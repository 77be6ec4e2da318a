// 2-D convolution through oneDNN on channels-last images. oneDNN picks its weight layout per problem shape, so
// each (height, width, epilogue, row padding) gets its own primitive and its own reordered copy of the (small)
// weight (converted to bf16 on the way with Precision::bf16). A GELU epilogue is our gelu() over the output, not
// oneDNN's post-op: that took 1.5 ns per value in the depthwise kernel (5x the convolution itself in TinyViT's
// stage 0), ours 0.5.
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

}  // namespace

struct Conv2d::Impl {
    int64_t out_channels = 0, in_channels = 0, kernel = 0, stride = 1, padding = 0, groups = 1;
    Precision precision = Precision::fp32;  // after any fallback (effective_precision)
    std::vector<float> weight;  // PyTorch layout (out, in / groups, kernel, kernel)
    std::vector<float> bias;    // empty when the layer has none

    struct Compiled {
        dnnl::convolution_forward primitive;
        memory weight;  // in the layout this primitive wants
    };
    std::mutex mutex;
    std::map<std::tuple<int64_t, int64_t, Epilogue, bool>, Compiled> compiled;

    int64_t output_size(int64_t input, bool padded = true) const {
        return (input + (padded ? 2 * padding : 0) - kernel) / stride + 1;
    }

    memory::desc plain_weight_desc() const {
        if (groups == 1)
            return memory::desc(Dims{out_channels, in_channels, kernel, kernel}, memory::data_type::f32,
                                memory::format_tag::oihw);
        return memory::desc(Dims{groups, out_channels / groups, in_channels / groups, kernel, kernel},
                            memory::data_type::f32, memory::format_tag::goihw);
    }

    memory::data_type operand_type() const {
        return precision == Precision::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    }

    memory::desc image_desc(int64_t channels, int64_t height, int64_t width,
                            memory::data_type type = memory::data_type::f32) const {
        return memory::desc(Dims{1, channels, height, width}, type, memory::format_tag::nhwc);
    }

    memory::desc bias_desc() const {
        return bias.empty() ? memory::desc() : memory::desc(Dims{out_channels}, memory::data_type::f32, memory::format_tag::x);
    }

    const Compiled& get(int64_t height, int64_t width, Epilogue epilogue, bool pad_rows) {
        std::lock_guard lock(mutex);
        const auto key = std::make_tuple(height, width, epilogue, pad_rows);
        auto found = compiled.find(key);
        if (found != compiled.end()) return found->second;

        const int64_t out_h = output_size(height, pad_rows), out_w = output_size(width);
        const int64_t pad_top = pad_rows ? padding : 0;
        // oneDNN wants the right padding that makes the output size come out exactly; PyTorch's floor division
        // can leave it smaller than the left one.
        const int64_t pad_bottom = (out_h - 1) * stride + kernel - height - pad_top;
        const int64_t pad_right = (out_w - 1) * stride + kernel - width - padding;
        auto weight_any = plain_weight_desc();
        weight_any = memory::desc(weight_any.dims(), operand_type(), memory::format_tag::any);
        dnnl::convolution_forward::desc desc(
            dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
            image_desc(in_channels, height, width, operand_type()), weight_any, bias_desc(), image_desc(out_channels, out_h, out_w),
            Dims{stride, stride}, Dims{pad_top, padding}, Dims{pad_bottom, pad_right});
        dnnl::post_ops post;
        if (epilogue == Epilogue::accumulate) post.append_sum(1.0f);
        if (epilogue == Epilogue::relu) post.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        dnnl::primitive_attr attr;
        attr.set_post_ops(post);
        dnnl::convolution_forward::primitive_desc pd(desc, attr, cpu_engine());

        memory packed(pd.weights_desc(), cpu_engine());
        memory source(plain_weight_desc(), cpu_engine(), weight.data());
        dnnl::reorder(source, packed).execute(thread_stream(), source, packed);
        thread_stream().wait();
        return compiled.emplace(key, Compiled{dnnl::convolution_forward(pd), packed}).first->second;
    }
};

Conv2d::Conv2d(const float* weight, const float* bias, int64_t out_channels, int64_t in_channels, int64_t kernel,
               int64_t stride, int64_t padding, int64_t groups, Precision precision)
    : impl_(std::make_shared<Impl>()) {
    if (groups < 1 || in_channels % groups != 0 || out_channels % groups != 0 || kernel < 1 || stride < 1 ||
        padding < 0)
        throw std::invalid_argument("Conv2d: inconsistent channels, groups, kernel, stride or padding");
    Impl& impl = *impl_;
    impl.out_channels = out_channels;
    impl.in_channels = in_channels;
    impl.kernel = kernel;
    impl.stride = stride;
    impl.padding = padding;
    impl.groups = groups;
    impl.precision = effective_precision(precision);
    impl.weight.assign(weight, weight + out_channels * (in_channels / groups) * kernel * kernel);
    if (bias) impl.bias.assign(bias, bias + out_channels);
}

int64_t Conv2d::in_channels() const { return impl_ ? impl_->in_channels : 0; }
int64_t Conv2d::out_channels() const { return impl_ ? impl_->out_channels : 0; }
int64_t Conv2d::output_size(int64_t input) const { return impl_->output_size(input); }
Precision Conv2d::precision() const { return impl_ ? impl_->precision : Precision::fp32; }

void Conv2d::forward(const float* x, float* y, int64_t height, int64_t width, Epilogue epilogue, bool pad_rows) const {
    Impl& impl = *impl_;
    const int64_t out_h = impl.output_size(height, pad_rows), out_w = impl.output_size(width);
    if (height + (pad_rows ? 2 * impl.padding : 0) < impl.kernel || width + 2 * impl.padding < impl.kernel)
        throw std::invalid_argument("Conv2d: input smaller than the kernel");
    // the GELU is a pass of its own after the convolution (see the top of this file)
    const Impl::Compiled& compiled =
        impl.get(height, width, epilogue == Epilogue::gelu ? Epilogue::store : epilogue, pad_rows);
    const bool bf16 = impl.precision == Precision::bf16;
    void* source = bf16 ? const_cast<uint16_t*>(to_bf16_scratch(x, height * width * impl.in_channels))
                        : static_cast<void*>(const_cast<float*>(x));
    ProfileScope scope(OpClass::convolution, 2.0 * double(out_h * out_w) * double(impl.out_channels) *
                                                 double(impl.in_channels / impl.groups * impl.kernel * impl.kernel));
    memory src(impl.image_desc(impl.in_channels, height, width, impl.operand_type()), cpu_engine(), source);
    memory dst(impl.image_desc(impl.out_channels, out_h, out_w), cpu_engine(), y);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, compiled.weight}, {DNNL_ARG_DST, dst}};
    if (!impl.bias.empty()) args.emplace(DNNL_ARG_BIAS, memory(impl.bias_desc(), cpu_engine(), impl.bias.data()));
    compiled.primitive.execute(thread_stream(), args);
    thread_stream().wait();
    if (epilogue == Epilogue::gelu) gelu(y, out_h * out_w * impl.out_channels);
}

namespace ref {

void conv2d(const float* x, const float* weight, const float* bias, float* y, int64_t in_channels,
            int64_t out_channels, int64_t height, int64_t width, int64_t kernel, int64_t stride, int64_t padding,
            int64_t groups, Epilogue epilogue) {
    const int64_t out_h = (height + 2 * padding - kernel) / stride + 1, out_w = (width + 2 * padding - kernel) / stride + 1;
    const int64_t in_per_group = in_channels / groups, out_per_group = out_channels / groups;
    for (int64_t oy = 0; oy < out_h; ++oy)
        for (int64_t ox = 0; ox < out_w; ++ox)
            for (int64_t o = 0; o < out_channels; ++o) {
                const int64_t group = o / out_per_group;
                double sum = bias ? bias[o] : 0.0;
                for (int64_t ky = 0; ky < kernel; ++ky)
                    for (int64_t kx = 0; kx < kernel; ++kx) {
                        const int64_t iy = oy * stride + ky - padding, ix = ox * stride + kx - padding;
                        if (iy < 0 || iy >= height || ix < 0 || ix >= width) continue;
                        for (int64_t i = 0; i < in_per_group; ++i)
                            sum += double(x[(iy * width + ix) * in_channels + group * in_per_group + i]) *
                                   weight[((o * in_per_group + i) * kernel + ky) * kernel + kx];
                    }
                float value = float(sum);
                float& out = y[(oy * out_w + ox) * out_channels + o];
                if (epilogue == Epilogue::accumulate) value += out;
                if (epilogue == Epilogue::gelu) gelu(&value, 1);
                if (epilogue == Epilogue::relu) relu(&value, 1);
                out = value;
            }
}

}  // namespace ref

}  // namespace sqasam::ops
