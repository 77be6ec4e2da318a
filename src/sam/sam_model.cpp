// The SAM network after the official segment_anything/modeling code: ViT image encoder with windowed and global
// attention, prompt encoder, two-way-transformer mask decoder.
//
// Layout: activations are channels-last and row-major, [tokens, channels], so every linear layer, 1x1
// convolution and per-pixel LayerNorm2d is one op over all rows. The image embedding crosses the API
// channels-first (C x E x E) as in the official code. Weights are looked up by their state-dict names with shape
// checks; every tensor of the checkpoint must be used (mask_downscaling.* is accepted unused: no mask input).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ops/ops.hpp"
#include "sam/hyper_params.hpp"
#include "sam/sam_model.hpp"
#include "sam/sam_modules.hpp"
#include "sam/windows.hpp"
#include "sam/workspace.hpp"
#include "sqasam/error.hpp"

namespace sqasam::sam {
namespace {

constexpr float kEncoderNormEps = 1e-6f;    // ImageEncoderViT's LayerNorm and every LayerNorm2d
constexpr float kDecoderNormEps = 1e-5f;    // TwoWayTransformer's nn.LayerNorm default
constexpr float kTwoPi = 6.28318530717958647692f;
constexpr int kPatchChannels = 3;
constexpr int kNeckKernel = 3;
// Grid rows the mask decoder upscales at a time: a band's intermediates (4 x 64 x 64 and 16 x 64 x 32 floats per
// grid row) fit a core's L2 with room for the weights.
constexpr int64_t kUpscaleRows = 2;
// Element-wise loops over fewer elements than this run on one thread: a parallel region would cost more.
constexpr int64_t kParallelElements = 1 << 14;
const char* const kUnusedPrefix = "prompt_encoder.mask_downscaling.";  // mask prompts are not supported

using Shape = std::vector<int64_t>;

// Hands out checkpoint tensors by name with shape checks and records which were taken, so that a tensor the
// architecture does not know is reported rather than silently ignored. Values are read from the checkpoint file
// on demand; only those handed out by data() stay in memory, until the reader goes.
class WeightReader {
public:
    explicit WeightReader(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

    // Valid while the reader lives: the few layers that take raw pointers (convolutions, TinyViT) hold several.
    const float* data(const std::string& name, const Shape& shape) {
        return held_.emplace_back(copy(name, shape)).data();
    }
    std::vector<float> copy(const std::string& name, const Shape& shape) {
        used_.insert(name);
        std::vector<float> values = checkpoint_.read(name, shape);
        // A NaN or infinite weight would make every score of a run NaN without a word.
        const auto bad = std::find_if_not(values.begin(), values.end(), [](float v) { return std::isfinite(v); });
        if (bad != values.end())
            throw Error(checkpoint_.path, "tensor '" + name + "' holds a non-finite value (" + std::to_string(*bad) +
                                              ") at index " + std::to_string(bad - values.begin()));
        // A BatchNorm's running variance is a variance; a negative one would fold into NaN weights.
        if (name.ends_with(".running_var")) {
            const auto negative = std::find_if(values.begin(), values.end(), [](float v) { return v < 0.0f; });
            if (negative != values.end())
                throw Error(checkpoint_.path, "tensor '" + name + "' holds a negative variance (" +
                                                  std::to_string(*negative) + ") at index " +
                                                  std::to_string(negative - values.begin()));
        }
        return values;
    }
    // The float32 weights live only while the layer packs them.
    ops::Linear linear(const std::string& prefix, int64_t out, int64_t in, bool has_bias = true,
                       Precision precision = Precision::fp32) {
        const std::vector<float> bias = has_bias ? copy(prefix + ".bias", {out}) : std::vector<float>();
        const std::vector<float> weight = copy(prefix + ".weight", {out, in});
        return ops::Linear(weight.data(), has_bias ? bias.data() : nullptr, out, in, precision);
    }
    void check_all_used(const std::string& architecture) const {
        for (const auto& [name, tensor] : checkpoint_.tensors) {
            if (used_.count(name) || name.rfind(kUnusedPrefix, 0) == 0) continue;
            throw Error(checkpoint_.path, "unexpected tensor '" + name + "' " + tensor.shape_string() +
                                              ": not part of " + architecture);
        }
    }

private:
    const Checkpoint& checkpoint_;
    std::set<std::string> used_;
    std::deque<std::vector<float>> held_;  // a deque: growing it keeps the earlier values in place
};

struct LayerNorm {
    std::vector<float> gamma, beta;
    float eps = 0;

    LayerNorm() = default;
    LayerNorm(WeightReader& weights, const std::string& prefix, int64_t dim, float eps)
        : gamma(weights.copy(prefix + ".weight", {dim})), beta(weights.copy(prefix + ".bias", {dim})), eps(eps) {}
    void operator()(const float* x, float* y, int64_t rows, const ops::NormExtras& extras = {}) const {
        ops::layer_norm(x, gamma.data(), beta.data(), y, rows, int64_t(gamma.size()), eps, extras);
    }
    void operator()(const float* x, uint16_t* y_bf16, int64_t rows) const {  // rows only a bf16 product reads
        ops::layer_norm(x, gamma.data(), beta.data(), nullptr, rows, int64_t(gamma.size()), eps, {.y_bf16 = y_bf16});
    }
    // GELU(LayerNorm(x)) into y, or only rounded to bf16 into y_bf16 where given.
    void with_gelu(const float* x, float* y, uint16_t* y_bf16, int64_t rows) const {
        ops::layer_norm(x, gamma.data(), beta.data(), y_bf16 ? nullptr : y, rows, int64_t(gamma.size()), eps,
                        {.y_bf16 = y_bf16, .gelu = true});
    }
};

// A 2x2, stride-2 ConvTranspose2d never overlaps: each input pixel yields a 2x2 block of output pixels, i.e. one
// linear layer with 4 * out features ((dy, dx, o) order). Its output rows are kept in that blocked pixel order
// (see MaskDecoder::upscale).
ops::Linear transposed_conv2x2(WeightReader& weights, const std::string& prefix, int64_t in, int64_t out,
                               Precision precision) {
    const float* w = weights.data(prefix + ".weight", {in, out, 2, 2});  // PyTorch (in, out, kh, kw)
    const float* b = weights.data(prefix + ".bias", {out});
    std::vector<float> linear_weight(4 * out * in), linear_bias(4 * out);
    for (int64_t d = 0; d < 4; ++d)
        for (int64_t o = 0; o < out; ++o) {
            linear_bias[d * out + o] = b[o];
            for (int64_t c = 0; c < in; ++c) linear_weight[(d * out + o) * in + c] = w[(c * out + o) * 4 + d];
        }
    return ops::Linear(linear_weight.data(), linear_bias.data(), 4 * out, in, precision);
}

// ---------------------------------------------------------------------------------------------------------------
// Image encoder

struct EncoderBlock {
    LayerNorm norm1, norm2;
    ops::Linear qkv, proj, mlp_lin1, mlp_lin2;
    std::vector<float> qkv_bias;              // what padding tokens project to
    std::vector<float> rel_pos_h, rel_pos_w;  // (2 * grid - 1) x head_dim
    int window = 0;                           // 0: global attention over the whole grid
};

struct EncoderWorkspace {
    std::vector<float> tokens;   // E*E x D, the residual stream
    std::vector<float> normed;   // E*E x max(D, neck channels)
    std::vector<float> windows;  // padded windows x D: attention output
    std::vector<float> scratch;  // qkv rows (windowed blocks: partitioned), or the patch im2col
    std::vector<float> hidden;   // E*E x mlp width; windowed blocks: their qkv rows before partitioning
    // bf16 products: the LayerNorms' outputs and the MLP's hidden activation, written in bf16 by the ops that make
    // them (only bf16 products read them), instead of in float and converted by each product.
    std::vector<uint16_t> normed_bf16, hidden_bf16;
};

class ImageEncoder {
public:
    // With Precision::bf16 every linear layer and the attention products compute in bf16; the neck's 3x3
    // convolution (under 1% of the work) stays fp32.
    ImageEncoder(WeightReader& weights, const SamHyperParams& hp, Precision precision)
        : hp_(hp),
          precision_(precision),
          grid_(hp.embedding_size()),
          dim_(hp.encoder_embed_dim),
          head_dim_(hp.encoder_embed_dim / hp.encoder_num_heads),
          patch_features_(int64_t(kPatchChannels) * hp.patch_size * hp.patch_size),
          neck_channels_(hp.prompt_embed_dim) {
        const std::string p = "image_encoder.";
        patch_embed_ = ops::Linear(weights.data(p + "patch_embed.proj.weight", {dim_, kPatchChannels, hp.patch_size, hp.patch_size}),
                                   weights.data(p + "patch_embed.proj.bias", {dim_}), dim_, patch_features_, precision_);
        pos_embed_ = weights.copy(p + "pos_embed", {1, grid_, grid_, dim_});
        const int64_t mlp = dim_ * hp.mlp_ratio;
        for (int i = 0; i < hp.encoder_depth; ++i) {
            const std::string b = p + "blocks." + std::to_string(i) + ".";
            EncoderBlock block;
            bool global = std::count(hp.global_attn_indexes.begin(), hp.global_attn_indexes.end(), i) > 0;
            block.window = global ? 0 : hp.window_size;
            const int64_t rel_size = 2 * (global ? grid_ : hp.window_size) - 1;
            block.norm1 = LayerNorm(weights, b + "norm1", dim_, kEncoderNormEps);
            block.norm2 = LayerNorm(weights, b + "norm2", dim_, kEncoderNormEps);
            block.qkv = weights.linear(b + "attn.qkv", 3 * dim_, dim_, true, precision_);
            block.qkv_bias = weights.copy(b + "attn.qkv.bias", {3 * dim_});
            block.proj = weights.linear(b + "attn.proj", dim_, dim_, true, precision_);
            block.rel_pos_h = weights.copy(b + "attn.rel_pos_h", {rel_size, head_dim_});
            block.rel_pos_w = weights.copy(b + "attn.rel_pos_w", {rel_size, head_dim_});
            block.mlp_lin1 = weights.linear(b + "mlp.lin1", mlp, dim_, true, precision_);
            block.mlp_lin2 = weights.linear(b + "mlp.lin2", dim_, mlp, true, precision_);
            blocks_.push_back(std::move(block));
        }
        neck_conv1_ = ops::Linear(weights.data(p + "neck.0.weight", {neck_channels_, dim_, 1, 1}), nullptr,
                                  neck_channels_, dim_, precision_);
        neck_norm1_ = LayerNorm(weights, p + "neck.1", neck_channels_, kEncoderNormEps);
        neck_norm2_ = LayerNorm(weights, p + "neck.3", neck_channels_, kEncoderNormEps);
        neck_conv2_ = ops::Conv2d(weights.data(p + "neck.2.weight", {neck_channels_, neck_channels_, kNeckKernel, kNeckKernel}),
                                  nullptr, neck_channels_, neck_channels_, kNeckKernel, 1, kNeckKernel / 2);
    }

    const EncoderBlock& block(int i) const { return blocks_.at(i); }
    int64_t grid() const { return grid_; }

    void encode(const float* image, float* embedding) const {
        auto ws = workspaces_.take();
        prepare(*ws);
        const int64_t tokens = grid_ * grid_;
        patchify(image, ws->scratch.data());
        patch_embed_.forward(ws->scratch.data(), ws->tokens.data(), tokens);
        ops::add(ws->tokens.data(), pos_embed_.data(), tokens * dim_);
        for (const EncoderBlock& b : blocks_) run_block(b, *ws);
        neck(*ws, embedding);
    }

    // The Attention module (qkv, attention, proj) on `batch` square grids of `side` tokens, rows in, rows out.
    void attention(const EncoderBlock& b, const float* x, float* out, int64_t batch, int64_t side) const {
        std::vector<float> qkv(batch * side * side * 3 * dim_), attended(batch * side * side * dim_);
        b.qkv.forward(x, qkv.data(), batch * side * side);
        attention_core(b, qkv.data(), attended.data(), batch, side);
        b.proj.forward(attended.data(), out, batch * side * side);
    }

    void run_block(const EncoderBlock& b, EncoderWorkspace& ws) const {
        const int64_t tokens = grid_ * grid_;
        float* x = ws.tokens.data();
        float* normed = ws.normed.data();
        if (bf16_rows())
            b.norm1(x, ws.normed_bf16.data(), tokens);
        else
            b.norm1(x, normed, tokens);
        if (b.window > 0) {
            // The official code pads the normed grid with zeros before qkv, so padding tokens have q, k, v = the
            // qkv bias and still act as keys. Projecting the grid first and padding with the bias is the same and
            // skips the padding rows' products.
            const int64_t per_side = (grid_ + b.window - 1) / b.window;
            qkv_rows(b, ws, ws.hidden.data());
            window_partition(ws.hidden.data(), ws.scratch.data(), grid_, 3 * dim_, b.window, b.qkv_bias.data());
            attention_core(b, ws.scratch.data(), ws.windows.data(), per_side * per_side, b.window);
            window_unpartition(ws.windows.data(), normed, grid_, dim_, b.window);
            b.proj.forward(normed, x, tokens, ops::Epilogue::accumulate);
        } else {
            qkv_rows(b, ws, ws.scratch.data());
            attention_core(b, ws.scratch.data(), ws.windows.data(), 1, grid_);
            b.proj.forward(ws.windows.data(), x, tokens, ops::Epilogue::accumulate);
        }
        const auto mlp = [&](auto* normed_rows, auto* hidden) {  // float rows, or bf16 (uint16_t) ones
            b.norm2(x, normed_rows, tokens);
            b.mlp_lin1.forward(normed_rows, hidden, tokens, ops::Epilogue::gelu);
            b.mlp_lin2.forward(hidden, x, tokens, ops::Epilogue::accumulate);
        };
        if (bf16_rows())  // LayerNorm and GELU write the bf16 rows the next product reads
            mlp(ws.normed_bf16.data(), ws.hidden_bf16.data());
        else
            mlp(normed, ws.hidden.data());
    }

    // qkv of the block's normalised rows (bf16 or float, as norm1 wrote them).
    void qkv_rows(const EncoderBlock& b, EncoderWorkspace& ws, float* out) const {
        const int64_t tokens = grid_ * grid_;
        if (bf16_rows())
            b.qkv.forward(ws.normed_bf16.data(), out, tokens);
        else
            b.qkv.forward(ws.normed.data(), out, tokens);
    }

    bool bf16_rows() const { return patch_embed_.precision() == Precision::bf16; }

    // Conv 1x1, LayerNorm2d, conv 3x3 (pad 1), LayerNorm2d on the E x E x D grid in ws.tokens; writes C x E x E.
    void neck(EncoderWorkspace& ws, float* embedding) const {
        const int64_t tokens = grid_ * grid_, c = neck_channels_;
        float* features = ws.normed.data();
        neck_conv1_.forward(ws.tokens.data(), features, tokens);
        neck_norm1_(features, features, tokens);
        float* out = ws.hidden.data();
        neck_conv2_.forward(features, out, grid_, grid_);
        neck_norm2_(out, out, tokens);
        ops::transpose(out, embedding, tokens, c, c, tokens);
    }

    // Sizes the buffers for this network once; later images reuse them.
    void prepare(EncoderWorkspace& ws) const {
        const int64_t tokens = grid_ * grid_;
        const int64_t per_side = (grid_ + hp_.window_size - 1) / hp_.window_size;
        const int64_t padded = std::max(tokens, per_side * per_side * int64_t(hp_.window_size) * hp_.window_size);
        ensure_size(ws.tokens, tokens * dim_);
        ensure_size(ws.normed, tokens * std::max(dim_, neck_channels_));
        ensure_size(ws.windows, padded * dim_);
        ensure_size(ws.scratch, std::max(padded * 3 * dim_, tokens * patch_features_));
        ensure_size(ws.hidden, tokens * std::max({dim_ * hp_.mlp_ratio, 3 * dim_, neck_channels_}));
        if (bf16_rows()) {
            ensure_size(ws.normed_bf16, tokens * dim_);
            ensure_size(ws.hidden_bf16, tokens * dim_ * hp_.mlp_ratio);
        }
    }

    WorkspacePool<EncoderWorkspace>& workspaces() const { return workspaces_; }

private:
    // softmax((q * scale) k^T + decomposed rel-pos) v for each head, over `batch` grids of side x side tokens
    // whose qkv rows are given.
    void attention_core(const EncoderBlock& b, const float* qkv, float* out, int64_t batch, int64_t side) const {
        const int64_t tokens = side * side;
        const int64_t row = 3 * dim_;
        ops::AttentionShape shape{.batch = batch, .heads = hp_.encoder_num_heads, .queries = tokens, .keys = tokens,
                                  .head_dim = head_dim_, .q_row_stride = row, .k_row_stride = row,
                                  .v_row_stride = row, .out_row_stride = dim_, .q_batch_stride = tokens * row,
                                  .k_batch_stride = tokens * row, .v_batch_stride = tokens * row,
                                  .out_batch_stride = tokens * dim_};
        ops::RelativePosition rel{b.rel_pos_h.data(), b.rel_pos_w.data(), side, side};
        ops::attention(qkv, qkv + dim_, qkv + 2 * dim_, out, shape, 1.0f / std::sqrt(float(head_dim_)), &rel, precision_);
    }

    // im2col of the 3 x S x S input into E*E rows of (c, ky, kx), the order of the conv weight.
    void patchify(const float* image, float* patches) const {
        ops::ProfileScope scope(ops::OpClass::layout);
        const int64_t p = hp_.patch_size, size = hp_.image_size;
#pragma omp parallel for schedule(static)
        for (int64_t py = 0; py < grid_; ++py)
            for (int64_t px = 0; px < grid_; ++px) {
                float* dst = patches + (py * grid_ + px) * patch_features_;
                for (int64_t c = 0; c < kPatchChannels; ++c)
                    for (int64_t ky = 0; ky < p; ++ky)
                        std::copy_n(image + (c * size + py * p + ky) * size + px * p, p, dst + (c * p + ky) * p);
            }
    }

    SamHyperParams hp_;
    Precision precision_;
    int64_t grid_, dim_, head_dim_, patch_features_, neck_channels_;
    ops::Linear patch_embed_;
    std::vector<float> pos_embed_;
    std::vector<EncoderBlock> blocks_;
    ops::Linear neck_conv1_;
    ops::Conv2d neck_conv2_;
    LayerNorm neck_norm1_, neck_norm2_;
    mutable WorkspacePool<EncoderWorkspace> workspaces_;
};

// ---------------------------------------------------------------------------------------------------------------
// Prompt encoder

class PromptEncoder {
public:
    PromptEncoder(WeightReader& weights, const SamHyperParams& hp)
        : image_size_(float(hp.image_size)), grid_(hp.embedding_size()), dim_(hp.prompt_embed_dim) {
        const std::string p = "prompt_encoder.";
        gaussian_ = weights.copy(p + "pe_layer.positional_encoding_gaussian_matrix", {2, dim_ / 2});
        for (int i = 0; i < 4; ++i)
            point_embeddings_.push_back(weights.copy(p + "point_embeddings." + std::to_string(i) + ".weight", {1, dim_}));
        not_a_point_ = weights.copy(p + "not_a_point_embed.weight", {1, dim_});
        no_mask_ = weights.copy(p + "no_mask_embed.weight", {1, dim_});
        dense_pe_.resize(grid_ * grid_ * dim_);
        for (int64_t y = 0; y < grid_; ++y)
            for (int64_t x = 0; x < grid_; ++x)
                encode_position((x + 0.5f) / grid_, (y + 0.5f) / grid_, dense_pe_.data() + (y * grid_ + x) * dim_);
    }

    // The sparse embedding: one row per point (plus the padding point when there is no box), then two box corners.
    std::vector<float> sparse(const FramePrompt& prompt) const {
        const size_t points = prompt.point_labels.size();
        if (prompt.point_xy.size() != 2 * points)
            throw Error("", "prompt has " + std::to_string(prompt.point_xy.size()) + " point coordinates for " +
                                std::to_string(points) + " labels");
        const bool pad = points > 0 && !prompt.has_box;
        const size_t rows = points + (pad ? 1 : 0) + (prompt.has_box ? 2 : 0);
        std::vector<float> out(rows * dim_);
        for (size_t i = 0; i < points; ++i) {
            const int label = prompt.point_labels[i];
            if (label < -1 || label > 1)
                throw Error("", "point label " + std::to_string(label) + " is not 1 (foreground), 0 (background) or -1");
            embed_point(prompt.point_xy[2 * i], prompt.point_xy[2 * i + 1], label, out.data() + i * dim_);
        }
        if (pad) embed_point(0.0f, 0.0f, -1, out.data() + points * dim_, false);
        if (prompt.has_box) {
            float* corners = out.data() + (rows - 2) * dim_;
            for (int corner = 0; corner < 2; ++corner) {
                float* row = corners + corner * dim_;
                encode_position((prompt.box[2 * corner] + 0.5f) / image_size_,
                                (prompt.box[2 * corner + 1] + 0.5f) / image_size_, row);
                ops::add(row, point_embeddings_[2 + corner].data(), dim_);
            }
        }
        return out;
    }

    const std::vector<float>& dense_pe() const { return dense_pe_; }  // E*E x C
    const std::vector<float>& no_mask() const { return no_mask_; }

private:
    // PositionEmbeddingRandom: [sin(2 pi (2 p - 1) G), cos(2 pi (2 p - 1) G)] for p normalised to [0, 1]^2.
    void encode_position(float x, float y, float* out) const {
        const int64_t half = dim_ / 2;
        const float cx = 2.0f * x - 1.0f, cy = 2.0f * y - 1.0f;
        for (int64_t j = 0; j < half; ++j) {
            const float angle = kTwoPi * (cx * gaussian_[j] + cy * gaussian_[half + j]);
            out[j] = std::sin(angle);
            out[half + j] = std::cos(angle);
        }
    }

    // Official _embed_points: coordinates shift to pixel centres (the padding point does not); label -1 is a
    // zero position code plus not_a_point_embed, labels 0 and 1 add point_embeddings 0 and 1.
    void embed_point(float x, float y, int label, float* out, bool shift = true) const {
        if (label == -1) {
            std::copy(not_a_point_.begin(), not_a_point_.end(), out);
            return;
        }
        const float offset = shift ? 0.5f : 0.0f;
        encode_position((x + offset) / image_size_, (y + offset) / image_size_, out);
        ops::add(out, point_embeddings_[label].data(), dim_);
    }

    float image_size_;
    int64_t grid_, dim_;
    std::vector<float> gaussian_, not_a_point_, no_mask_, dense_pe_;
    std::vector<std::vector<float>> point_embeddings_;
};

// ---------------------------------------------------------------------------------------------------------------
// Mask decoder
//
// One prompt at a time (decoding several prompts in one pass, with B x E*E image rows, measured no faster); several
// prompts run side by side, one per OpenMP thread. What depends on the image alone is computed once per image
// (DecoderImage).

struct DecoderWorkspace {
    std::vector<float> keys, keys_pe;      // E*E x C: image tokens, and image tokens + positional encoding
    // With bf16 image products: keys_pe and keys rounded to bf16 by each layer's norm4 (read by the next
    // attentions and the output upscaling; keys_pe itself is then neither allocated nor written).
    std::vector<uint16_t> keys_pe_bf16, keys_bf16;
    std::vector<float> queries, query_in;  // n x C
    std::vector<float> q, k, v, attended;  // projections, up to n x the MLP width
    // The folded cross attentions: per-head rows of the token side, their products with the projection weights,
    // and the attention weights between the image and those rows (logits_t: image-major, before the transpose).
    std::vector<float> head_rows, folded, folded_bias, weights, logits_t, products;
    ops::PackedMatrix folded_packed;
    // Per thread: one band of the output upscaling (MaskDecoder::upscale) and its masks.
    struct Band {
        std::vector<float> upscaled1, upscaled2, masks;
        std::vector<uint16_t> upscaled1_bf16;  // GELU(LayerNorm(upscaled1)) rounded, with bf16 image products
    };
    std::vector<Band> bands;
};

// Attention with an optional down-projection of the internal width (TwoWayTransformer's Attention), split into
// its projections so that projections of unchanged inputs can be reused.
class DecoderAttention {
public:
    ops::Linear q_proj, k_proj, v_proj, out_proj;
    int64_t heads = 0, internal = 0;

    DecoderAttention() = default;
    // `precision` is that of the cross attentions' products over the E*E image rows; everything else is fp32.
    DecoderAttention(WeightReader& weights, const std::string& prefix, int64_t dim, int64_t heads, int64_t downsample,
                     Precision precision = Precision::fp32)
        : q_proj(weights.linear(prefix + ".q_proj", dim / downsample, dim)),
          k_proj(weights.linear(prefix + ".k_proj", dim / downsample, dim)),
          v_proj(weights.linear(prefix + ".v_proj", dim / downsample, dim)),
          out_proj(weights.linear(prefix + ".out_proj", dim, dim / downsample)),
          heads(heads),
          internal(dim / downsample),
          image_precision(ops::effective_precision(precision)) {
        if (downsample == 1) return;  // the self-attention: nothing to fold
        // For the folded cross attentions below: the projection weights W [internal, dim] and out_proj's W^T as
        // right-hand matrices.
        const int64_t width = internal;
        q_weight.pack(weights.data(prefix + ".q_proj.weight", {width, dim}), width, dim, dim, false);
        k_weight.pack(weights.data(prefix + ".k_proj.weight", {width, dim}), width, dim, dim, false);
        out_weight.pack(weights.data(prefix + ".out_proj.weight", {dim, width}), width, dim, width, true);
        q_bias = weights.copy(prefix + ".q_proj.bias", {width});
        out_bias = weights.copy(prefix + ".out_proj.bias", {dim});
    }

    // attended = attention(queries, keys, values) of projected rows (internal wide).
    void attend(const float* queries, int64_t query_count, const float* keys, const float* values, int64_t key_count,
                float* attended) const {
        const int64_t head_dim = internal / heads;
        ops::AttentionShape shape{.heads = heads, .queries = query_count, .keys = key_count, .head_dim = head_dim,
                                  .q_row_stride = internal, .k_row_stride = internal, .v_row_stride = internal,
                                  .out_row_stride = internal};
        ops::attention(queries, keys, values, attended, shape, 1.0f / std::sqrt(float(head_dim)));
    }

    // out = out_proj(attention(q_proj(q), k_proj(k), v_proj(v))), or out += that with accumulate.
    void forward(const float* q, int64_t query_count, const float* k, const float* v, int64_t key_count, float* out,
                 ops::Epilogue epilogue, DecoderWorkspace& ws) const {
        q_proj.forward(q, ws.q.data(), query_count);
        k_proj.forward(k, ws.k.data(), key_count);
        v_proj.forward(v, ws.v.data(), key_count);
        attend(ws.q.data(), query_count, ws.k.data(), ws.v.data(), key_count, ws.attended.data());
        out_proj.forward(ws.attended.data(), out, query_count, epilogue);
    }

    // attended (n x internal) = attention of projected queries q (n x internal) to projected image rows given per
    // head, as made once per image (DecoderImage): keys transposed (internal x E*E, a head's head_dim rows in turn)
    // and values head by head (heads x E*E x head_dim), so that each head reads contiguous memory. The heads are
    // the op's batch items.
    void attend_per_head(const float* q, int64_t n, const float* keys_t, const float* values, int64_t image,
                         float* attended) const {
        const int64_t head_dim = internal / heads;
        ops::AttentionShape shape{.batch = heads, .queries = n, .keys = image, .head_dim = head_dim,
                                  .q_row_stride = internal, .k_row_stride = image, .v_row_stride = head_dim,
                                  .out_row_stride = internal, .q_batch_stride = head_dim,
                                  .k_batch_stride = head_dim * image, .v_batch_stride = image * head_dim,
                                  .out_batch_stride = head_dim, .k_transposed = true};
        ops::attention(q, keys_t, values, attended, shape, 1.0f / std::sqrt(float(head_dim)));
    }

    // The cross attentions between a few token rows and the E*E image rows have their projections of the image
    // rows folded into the token side, which has far fewer rows: per head h (weights W_h, the head's rows of a
    // projection), q_h . (Wk_h x + bk_h) = (Wk_h^T q_h) . x + const and sum_i p_i (Wv_h x_i + bv_h) =
    // Wv_h (sum_i p_i x_i) + bv_h, since the weights p sum to 1; likewise Wo_h (sum_j p_j v_j) =
    // sum_j p_j (Wo_h v_j) for the output projection. The results equal the unfolded module's up to rounding.

    // Tokens attend to the image: out (n x internal, before out_proj) from projected queries q (n x internal),
    // image rows with positional encoding (keys_pe) and without (keys), E*E x dim each; with bf16 products they
    // are read rounded, from keys_pe_bf16 and keys_bf16.
    void token_to_image_folded(const float* q, int64_t n, const float* keys_pe, const uint16_t* keys_pe_bf16,
                               const float* keys, const uint16_t* keys_bf16, int64_t image, float* out,
                               DecoderWorkspace& ws) const {
        const int64_t head_dim = internal / heads, dim = k_weight.cols(), rows = n * heads;
        // Row (j, h): token j's query in head h's columns. Times Wk: the query folded into the image's width.
        spread_heads(q, n, ws.head_rows.data());
        k_weight.multiply(ws.head_rows.data(), ws.folded.data(), rows, 1.0f / std::sqrt(float(head_dim)));
        if (image_precision == Precision::bf16) {
            // The logits with the image rows on the left (E*E x rows: the packed bf16 right-hand side is then the
            // few folded rows), transposed for the softmax over the image. In fp32 the transpose costs more than
            // the product saves.
            ws.folded_packed.pack(ws.folded.data(), dim, rows, dim, true, image_precision);
            ws.folded_packed.multiply(keys_pe_bf16, ws.logits_t.data(), image);
            ops::transpose(ws.logits_t.data(), ws.weights.data(), image, rows, rows, image);
        } else {
            ops::matmul(ws.folded.data(), keys_pe, ws.weights.data(), rows, image, dim, dim, dim, image, true);
        }
        ops::softmax_rows(ws.weights.data(), rows, image);
        // The weighted sums of the image rows (with bf16 products from the rounded rows as they are: packing them
        // would cost more than it saves), then v_proj of them; row (j, h) keeps head h's columns.
        if (image_precision == Precision::bf16) {
            ops::matmul(ws.weights.data(), keys_bf16, ws.folded.data(), rows, dim, image, dim);
        } else {
            ops::matmul(ws.weights.data(), keys, ws.folded.data(), rows, dim, image, image, dim, dim, false);
        }
        v_proj.forward(ws.folded.data(), ws.products.data(), rows);
        for (int64_t j = 0; j < n; ++j)
            for (int64_t h = 0; h < heads; ++h)
                std::copy_n(ws.products.data() + (j * heads + h) * internal + h * head_dim, head_dim,
                            out + j * internal + h * head_dim);
    }

    // The image attends to the tokens: image (E*E x dim) += out_proj(attention) for the projected token keys k and
    // values v (n x internal each) and image rows x (E*E x dim, the queries before q_proj; with bf16 products
    // x_bf16, the same rounded).
    void image_to_token_folded(const float* x, const uint16_t* x_bf16, int64_t image, const float* k, const float* v,
                               int64_t n, float* out, DecoderWorkspace& ws) const {
        const int64_t dim = q_weight.cols(), rows = n * heads;
        const float scale = 1.0f / std::sqrt(float(internal / heads));
        // Row (j, h): token j's key in head h's columns. Times Wq: the key folded into the image's width, and
        // its product with q_proj's bias as a per-column bias of the logits.
        spread_heads(k, n, ws.head_rows.data());
        q_weight.multiply(ws.head_rows.data(), ws.folded.data(), rows, scale);
        for (int64_t r = 0; r < rows; ++r) {
            const float* key = ws.head_rows.data() + r * internal;
            float dot = 0;
            for (int64_t c = 0; c < internal; ++c) dot += key[c] * q_bias[c];
            ws.folded_bias[r] = scale * dot;
        }
        ws.folded_packed.pack(ws.folded.data(), dim, rows, dim, true, image_precision);
        if (image_precision == Precision::bf16) {
            ws.folded_packed.multiply(x_bf16, ws.weights.data(), image, 1.0f, ws.folded_bias.data());
        } else {
            ws.folded_packed.multiply(x, ws.weights.data(), image, 1.0f, ws.folded_bias.data());
        }
        attend_to_tokens(image, v, n, out, ops::Epilogue::accumulate, ws);
    }

    // The same where the image's queries are already projected (q_proj of the image rows, E*E x internal; with
    // bf16 products q_bf16, the same rounded), as in the first layer, whose image rows do not depend on the prompt:
    // the logits are then products over the internal width (half the image's) with the token keys per head. Writes
    // out = out_proj(attention), without the residual (the first layer's norm4 adds the image rows it reads anyway).
    void image_to_token_projected(const float* q, const uint16_t* q_bf16, int64_t image, const float* k,
                                  const float* v, int64_t n, float* out, DecoderWorkspace& ws) const {
        const int64_t rows = n * heads;
        spread_heads(k, n, ws.head_rows.data());
        ws.folded_packed.pack(ws.head_rows.data(), internal, rows, internal, true, image_precision);
        const float scale = 1.0f / std::sqrt(float(internal / heads));
        if (image_precision == Precision::bf16) {
            ws.folded_packed.multiply(q_bf16, ws.weights.data(), image, scale);
        } else {
            ws.folded_packed.multiply(q, ws.weights.data(), image, scale);
        }
        attend_to_tokens(image, v, n, out, ops::Epilogue::store, ws);
    }

    // q_proj of the image rows x (E*E x dim) for image_to_token_projected.
    void project_image_queries(const float* x, int64_t image, float* q) const { q_proj.forward(x, q, image); }

private:
    ops::PackedMatrix q_weight, k_weight, out_weight;
    std::vector<float> q_bias, out_bias;
    Precision image_precision = Precision::fp32;

    // The image-to-token attention from its logits in ws.weights (E*E x (j, h): each head's softmax over the tokens
    // interleaved with the others'): out += out_proj(softmax . v) with Epilogue::accumulate, out = that with
    // Epilogue::store.
    void attend_to_tokens(int64_t image, const float* v, int64_t n, float* out, ops::Epilogue epilogue,
                          DecoderWorkspace& ws) const {
        const int64_t dim = q_weight.cols(), rows = n * heads;
        ops::softmax_interleaved(ws.weights.data(), image, n, heads);
        // Row (j, h): Wo_h v_j, so that out += weights . rows + out_proj's bias.
        spread_heads(v, n, ws.head_rows.data());
        out_weight.multiply(ws.head_rows.data(), ws.products.data(), rows);
        ws.folded_packed.pack(ws.products.data(), rows, dim, dim, false, image_precision);
        ws.folded_packed.multiply(ws.weights.data(), out, image, 1.0f, out_bias.data(), epilogue);
    }

    // n x internal rows to n * heads rows that keep one head's columns each (zeros elsewhere), ordered (j, h).
    void spread_heads(const float* rows, int64_t n, float* out) const {
        ops::ProfileScope scope(ops::OpClass::layout);
        const int64_t head_dim = internal / heads;
        std::fill_n(out, n * heads * internal, 0.0f);
        for (int64_t j = 0; j < n; ++j)
            for (int64_t h = 0; h < heads; ++h)
                std::copy_n(rows + j * internal + h * head_dim, head_dim,
                            out + (j * heads + h) * internal + h * head_dim);
    }
};

struct TwoWayLayer {
    DecoderAttention self_attn, token_to_image, image_to_token;
    LayerNorm norm1, norm2, norm3, norm4;
    ops::Linear mlp_lin1, mlp_lin2;
};

// A small MLP with ReLU between layers (mask_decoder.MLP).
struct Mlp {
    std::vector<ops::Linear> layers;

    Mlp() = default;
    Mlp(WeightReader& weights, const std::string& prefix, int64_t in, int64_t hidden, int64_t out, int depth) {
        for (int i = 0; i < depth; ++i)
            layers.push_back(weights.linear(prefix + ".layers." + std::to_string(i), i == depth - 1 ? out : hidden,
                                            i == 0 ? in : hidden));
    }
    std::vector<float> operator()(std::vector<float> x) const {
        std::vector<float> current(std::move(x)), next;
        for (size_t i = 0; i < layers.size(); ++i) {
            next.resize(layers[i].out_features());
            layers[i].forward(current.data(), next.data(), 1,
                              i + 1 < layers.size() ? ops::Epilogue::relu : ops::Epilogue::store);
            current.swap(next);
        }
        return current;
    }
};

// x + pe into sum in one pass; on all threads for the image's rows, on one for a few token rows.
void add_positions(float* sum, const float* x, const float* pe, int64_t count) {
    ops::ProfileScope scope(ops::OpClass::elementwise);
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
    for (int64_t i = 0; i < count; ++i) sum[i] = x[i] + pe[i];
}

}  // namespace

struct DecoderImage::Data {
    const void* decoder = nullptr;           // the MaskDecoder that prepared it
    std::vector<float> src;           // E*E x C: embedding + no-mask dense embedding, as token rows
    // layer 0 image-to-token queries q_proj(src + pe) (with bf16 image products: rounded, in first_queries_bf16)
    std::vector<float> first_queries;
    std::vector<uint16_t> first_queries_bf16;
    // layer 0 token-to-image keys k_proj(src + pe), transposed (internal x E*E), and values v_proj(src) head by
    // head (heads x E*E x head_dim)
    std::vector<float> first_keys_t, first_values;
};

DecoderImage::DecoderImage() = default;
DecoderImage::~DecoderImage() = default;
DecoderImage::DecoderImage(DecoderImage&&) noexcept = default;
DecoderImage& DecoderImage::operator=(DecoderImage&&) noexcept = default;

namespace {

class MaskDecoder {
public:
    // With Precision::bf16 the products over every image row or upscaled pixel (output upscaling, the folded cross
    // attentions) and the token MLPs compute in bf16 (the MLPs for their weights: half of the decoder's, read anew
    // on every prompt); the other few-token products, the first layer's attention to the cached image projections
    // (a few MFLOP), norms and softmaxes stay fp32.
    MaskDecoder(WeightReader& weights, const SamHyperParams& hp, Precision precision)
        : grid_(hp.embedding_size()),
          dim_(hp.prompt_embed_dim),
          mask_tokens_count_(hp.num_multimask_outputs + 1),
          image_precision_(ops::effective_precision(precision)) {
        const std::string p = "mask_decoder.", t = p + "transformer.";
        const int64_t heads = hp.decoder_num_heads;
        iou_token_ = weights.copy(p + "iou_token.weight", {1, dim_});
        mask_tokens_ = weights.copy(p + "mask_tokens.weight", {mask_tokens_count_, dim_});
        for (int i = 0; i < hp.decoder_depth; ++i) {
            const std::string l = t + "layers." + std::to_string(i) + ".";
            TwoWayLayer layer;
            layer.self_attn = DecoderAttention(weights, l + "self_attn", dim_, heads, 1);
            layer.token_to_image = DecoderAttention(weights, l + "cross_attn_token_to_image", dim_, heads,
                                                    kAttentionDownsampleRate, precision);
            layer.image_to_token = DecoderAttention(weights, l + "cross_attn_image_to_token", dim_, heads,
                                                    kAttentionDownsampleRate, precision);
            layer.norm1 = LayerNorm(weights, l + "norm1", dim_, kDecoderNormEps);
            layer.norm2 = LayerNorm(weights, l + "norm2", dim_, kDecoderNormEps);
            layer.norm3 = LayerNorm(weights, l + "norm3", dim_, kDecoderNormEps);
            layer.norm4 = LayerNorm(weights, l + "norm4", dim_, kDecoderNormEps);
            layer.mlp_lin1 = weights.linear(l + "mlp.lin1", hp.decoder_mlp_dim, dim_, true, precision);
            layer.mlp_lin2 = weights.linear(l + "mlp.lin2", dim_, hp.decoder_mlp_dim, true, precision);
            layers_.push_back(std::move(layer));
        }
        final_attn_ = DecoderAttention(weights, t + "final_attn_token_to_image", dim_, heads, kAttentionDownsampleRate,
                                       precision);
        norm_final_ = LayerNorm(weights, t + "norm_final_attn", dim_, kDecoderNormEps);
        upscale1_ = transposed_conv2x2(weights, p + "output_upscaling.0", dim_, dim_ / 4, precision);
        upscale_norm_ = LayerNorm(weights, p + "output_upscaling.1", dim_ / 4, kEncoderNormEps);
        upscale2_ = transposed_conv2x2(weights, p + "output_upscaling.3", dim_ / 4, dim_ / 8, precision);
        for (int64_t i = 0; i < mask_tokens_count_; ++i)
            hypernetworks_.emplace_back(weights, p + "output_hypernetworks_mlps." + std::to_string(i), dim_, dim_,
                                        dim_ / 8, 3);
        iou_head_ = Mlp(weights, p + "iou_prediction_head", dim_, kIouHeadHiddenDim, mask_tokens_count_, kIouHeadDepth);
    }

    int64_t mask_token_count() const { return mask_tokens_count_; }
    int64_t low_res_size() const { return 4 * grid_; }

    // The image side: src = embedding (C x E x E, as token rows) + dense (one row broadcast), and the first
    // layer's projections of it.
    DecoderImage::Data prepare_image(const float* embedding, const float* dense, const float* key_pe) const {
        const int64_t image = grid_ * grid_, count = image * dim_, projected = image * dim_ / kAttentionDownsampleRate;
        DecoderImage::Data data;
        data.decoder = this;
        data.src.resize(count);
        float* src = data.src.data();
        ops::transpose(embedding, src, dim_, image, image, dim_);
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < image; ++t)
            for (int64_t c = 0; c < dim_; ++c) src[t * dim_ + c] += dense[c];
        std::vector<float> src_pe(count);
        add_positions(src_pe.data(), src, key_pe, count);
        data.first_queries.resize(projected);
        layers_[0].image_to_token.project_image_queries(src_pe.data(), image, data.first_queries.data());
        if (image_precision_ == Precision::bf16) {
            data.first_queries_bf16.resize(projected);
            ops::to_bf16(data.first_queries.data(), data.first_queries_bf16.data(), projected);
            data.first_queries = {};
        }
        const DecoderAttention& first = layers_[0].token_to_image;
        std::vector<float> projection(projected);
        first.k_proj.forward(src_pe.data(), projection.data(), image);
        data.first_keys_t.resize(projected);
        ops::transpose(projection.data(), data.first_keys_t.data(), image, first.internal, first.internal, image);
        first.v_proj.forward(src, projection.data(), image);
        data.first_values.resize(projected);
        const int64_t head_dim = first.internal / first.heads;
        for (int64_t h = 0; h < first.heads; ++h)
            for (int64_t t = 0; t < image; ++t)
                std::copy_n(projection.data() + t * first.internal + h * head_dim, head_dim,
                            data.first_values.data() + (h * image + t) * head_dim);
        return data;
    }

    // tokens = [iou token, mask tokens, sparse prompt rows]
    std::vector<float> tokens(const std::vector<float>& sparse) const {
        std::vector<float> out(iou_token_);
        out.insert(out.end(), mask_tokens_.begin(), mask_tokens_.end());
        out.insert(out.end(), sparse.begin(), sparse.end());
        return out;
    }

    // TwoWayTransformer on the image and these token rows; leaves ws.keys and ws.queries, of which only the first
    // `used_tokens` pass the final attention (the rest are not read afterwards).
    void transformer(const DecoderImage::Data& image_data, const std::vector<float>& token_rows, int64_t used_tokens,
                     const float* key_pe, DecoderWorkspace& ws) const {
        const int64_t n = int64_t(token_rows.size()) / dim_, image = grid_ * grid_;
        const float* query_pe = token_rows.data();
        float* queries = ws.queries.data();
        float* q = ws.query_in.data();
        float* keys = ws.keys.data();
        float* keys_pe = ws.keys_pe.data();
        const bool bf16 = image_precision_ == Precision::bf16;
        uint16_t* keys_pe_bf16 = bf16 ? ws.keys_pe_bf16.data() : nullptr;
        uint16_t* keys_bf16 = bf16 ? ws.keys_bf16.data() : nullptr;
        std::copy(token_rows.begin(), token_rows.end(), queries);
        for (size_t i = 0; i < layers_.size(); ++i) {
            const TwoWayLayer& l = layers_[i];
            const bool first = i == 0;
            if (first) {  // the first layer's self-attention has no positional term and no residual
                std::copy_n(queries, n * dim_, q);
                l.self_attn.forward(q, n, q, q, n, queries, ops::Epilogue::store, ws);
            } else {
                add_positions(q, queries, query_pe, n * dim_);
                l.self_attn.forward(q, n, q, queries, n, queries, ops::Epilogue::accumulate, ws);
            }
            l.norm1(queries, queries, n);

            // Tokens attend to the image: in the first layer to the image's cached projections.
            add_positions(q, queries, query_pe, n * dim_);
            l.token_to_image.q_proj.forward(q, ws.q.data(), n);
            if (first) {
                l.token_to_image.attend_per_head(ws.q.data(), n, image_data.first_keys_t.data(),
                                                 image_data.first_values.data(), image, ws.attended.data());
            } else {
                l.token_to_image.token_to_image_folded(ws.q.data(), n, keys_pe, keys_pe_bf16, keys, keys_bf16, image,
                                                       ws.attended.data(), ws);
            }
            l.token_to_image.out_proj.forward(ws.attended.data(), queries, n, ops::Epilogue::accumulate);
            l.norm2(queries, queries, n);

            l.mlp_lin1.forward(queries, ws.attended.data(), n, ops::Epilogue::relu);
            l.mlp_lin2.forward(ws.attended.data(), queries, n, ops::Epilogue::accumulate);
            l.norm3(queries, queries, n);

            // The image attends to the tokens; its queries are the image rows with positional encoding, which
            // are unchanged since the token-to-image step (in the first layer: the image's own, projected once
            // per image).
            add_positions(q, queries, query_pe, n * dim_);
            l.image_to_token.k_proj.forward(q, ws.k.data(), n);
            l.image_to_token.v_proj.forward(queries, ws.v.data(), n);
            if (first) {
                l.image_to_token.image_to_token_projected(image_data.first_queries.data(),
                                                          image_data.first_queries_bf16.data(), image, ws.k.data(),
                                                          ws.v.data(), n, keys, ws);
            } else {
                l.image_to_token.image_to_token_folded(keys_pe, keys_pe_bf16, image, ws.k.data(), ws.v.data(), n,
                                                       keys, ws);
            }
            // keys and keys_pe: what the next attentions and the upscaling read (with bf16 products they read the
            // bf16 copies alone, and the float keys only as the next layer's residual)
            const bool last = i + 1 == layers_.size();
            l.norm4(keys, bf16 && last ? nullptr : keys, image,
                    {.residual = first ? image_data.src.data() : nullptr,
                     .addend = key_pe,
                     .y_plus = bf16 ? nullptr : keys_pe,
                     .y_bf16 = keys_bf16,
                     .y_plus_bf16 = keys_pe_bf16});
        }
        add_positions(q, queries, query_pe, n * dim_);
        final_attn_.q_proj.forward(q, ws.q.data(), n);
        final_attn_.token_to_image_folded(ws.q.data(), used_tokens, keys_pe, keys_pe_bf16, keys, keys_bf16, image,
                                          ws.attended.data(), ws);
        final_attn_.out_proj.forward(ws.attended.data(), queries, used_tokens, ops::Epilogue::accumulate);
        norm_final_(queries, queries, n);
    }

    // output_upscaling on `rows` (at most kUpscaleRows) grid rows of `keys` (or of keys_bf16, keys rounded, where
    // given) from grid row `first_row` on (a band, so that its intermediates stay in cache): two 2x2 transposed
    // convs (LayerNorm2d + GELU, then GELU). The result, in band.upscaled2, has 16 pixel rows per grid pixel of C/8
    // channels in blocked order: row ((p * 4 + d1) * 4 + d2) is pixel (4 y + 2 dy1 + dy2, 4 x + 2 dx1 + dx2) for
    // the band's grid pixel p = (y, x) and d = dy * 2 + dx.
    void upscale(const float* keys, const uint16_t* keys_bf16, int64_t first_row, int64_t rows,
                 DecoderWorkspace::Band& band) const {
        const int64_t pixels = rows * grid_, offset = first_row * grid_ * dim_;
        if (keys_bf16) upscale1_.forward(keys_bf16 + offset, band.upscaled1.data(), pixels);
        else upscale1_.forward(keys + offset, band.upscaled1.data(), pixels);
        // LayerNorm2d and GELU in one pass, writing the rows the second product reads (in bf16 where it is bf16)
        if (upscale2_.precision() == Precision::bf16) {
            upscale_norm_.with_gelu(band.upscaled1.data(), nullptr, band.upscaled1_bf16.data(), 4 * pixels);
            upscale2_.forward(band.upscaled1_bf16.data(), band.upscaled2.data(), 4 * pixels, ops::Epilogue::gelu);
        } else {
            upscale_norm_.with_gelu(band.upscaled1.data(), band.upscaled1.data(), nullptr, 4 * pixels);
            upscale2_.forward(band.upscaled1.data(), band.upscaled2.data(), 4 * pixels, ops::Epilogue::gelu);
        }
    }

    // Copies `channels` planes of one band of `rows` grid rows from the blocked pixel order of upscale() (planes a
    // whole band's pixels apart unless channels last) to row-major image_rows x 4E images (4E x 4E, or their top
    // rows), one output row at a time: grid pixel x's row-major pixels 4x + 2 dx1 + dx2 of output row
    // 2 dy1 + dy2 are its blocked rows 16x + 8 dy1 + 2 dy2 + 4 dx1 + dx2.
    void unblock(const float* blocked, float* images, int64_t image_rows, int64_t channels, int64_t first_row,
                 int64_t rows, bool channels_last_source) const {
        ops::ProfileScope scope(ops::OpClass::layout);
        const int64_t side = 4 * grid_, pixels = image_rows * side, band_pixels = 16 * kUpscaleRows * grid_;
        const int64_t row_stride = channels_last_source ? channels : 1;
        const int64_t channel_stride = channels_last_source ? 1 : band_pixels;
        for (int64_t c = 0; c < channels; ++c)
            for (int64_t y = 0; y < rows; ++y)
                for (int64_t dy1 = 0; dy1 < 2; ++dy1)
                    for (int64_t dy2 = 0; dy2 < 2; ++dy2) {
                        const float* source =
                            blocked + c * channel_stride + (y * grid_ * 16 + 8 * dy1 + 2 * dy2) * row_stride;
                        float* out = images + c * pixels + (4 * (first_row + y) + 2 * dy1 + dy2) * side;
                        for (int64_t x = 0; x < grid_; ++x)
                            for (int64_t dx1 = 0; dx1 < 2; ++dx1)
                                for (int64_t dx2 = 0; dx2 < 2; ++dx2)
                                    out[4 * x + 2 * dx1 + dx2] = source[(16 * x + 4 * dx1 + dx2) * row_stride];
                    }
    }

    // Every mask token's output for each prompt, given their sparse rows. Several prompts run side by side, each
    // on one OpenMP thread (no synchronisation within a prompt); a lone prompt runs on all of them.
    // rows_needed: the top rows of each low-res plane the caller reads (0: all); the planes hold the rows of every
    // grid row that reaches them.
    std::vector<DecoderOutput> run(const DecoderImage::Data& image, const std::vector<std::vector<float>>& sparse,
                                   const PromptEncoder& prompts, int64_t rows_needed = 0) const {
        const int64_t side = low_res_size();
        if (rows_needed <= 0 || rows_needed > side) rows_needed = side;
        const int64_t grid_rows = (rows_needed + 3) / 4;
        std::vector<DecoderOutput> out(sparse.size());
        for_each_side_by_side(sparse.size(), [&](size_t i) {
            auto ws = workspaces_.take();
            out[i] = decode(image, sparse[i], prompts, grid_rows, *ws);
        });
        return out;
    }

    void prepare(DecoderWorkspace& ws, int64_t tokens) const {
        const int64_t image = grid_ * grid_;
        ensure_size(ws.keys, image * dim_);
        if (image_precision_ == Precision::bf16) {
            for (auto* buffer : {&ws.keys_bf16, &ws.keys_pe_bf16}) ensure_size(*buffer, image * dim_);
        } else {
            ensure_size(ws.keys_pe, image * dim_);
        }
        ensure_size(ws.queries, tokens * dim_);
        ensure_size(ws.query_in, tokens * dim_);
        // projections: token rows at the full or MLP width
        const int64_t mlp = layers_[0].mlp_lin1.out_features();
        for (auto* buffer : {&ws.q, &ws.k, &ws.v, &ws.attended}) ensure_size(*buffer, tokens * std::max(dim_, mlp));
        // the folded cross attentions: tokens x heads rows against the image's rows
        const int64_t head_rows = tokens * layers_[0].token_to_image.heads;
        for (auto* buffer : {&ws.head_rows, &ws.folded, &ws.products}) ensure_size(*buffer, head_rows * dim_);
        ensure_size(ws.folded_bias, head_rows);
        for (auto* buffer : {&ws.weights, &ws.logits_t}) ensure_size(*buffer, head_rows * image);
        const int64_t band = kUpscaleRows * grid_;
        if (int64_t(ws.bands.size()) < ops::num_threads()) ws.bands.resize(ops::num_threads());
        for (DecoderWorkspace::Band& b : ws.bands) {
            ensure_size(b.upscaled1, 4 * band * (dim_ / 4));
            if (image_precision_ == Precision::bf16) ensure_size(b.upscaled1_bf16, 4 * band * (dim_ / 4));
            ensure_size(b.upscaled2, 16 * band * (dim_ / 8));
            ensure_size(b.masks, mask_tokens_count_ * 16 * band);
        }
    }

private:
    // The low-res planes of the first grid_rows grid rows (4 grid_rows rows each).
    DecoderOutput decode(const DecoderImage::Data& image, const std::vector<float>& sparse,
                         const PromptEncoder& prompts, int64_t grid_rows, DecoderWorkspace& ws) const {
        const std::vector<float> token_rows = tokens(sparse);
        prepare(ws, int64_t(token_rows.size()) / dim_);
        transformer(image, token_rows, 1 + mask_tokens_count_, prompts.dense_pe().data(), ws);

        const int64_t c8 = dim_ / 8, k = mask_tokens_count_, band_pixels = 16 * kUpscaleRows * grid_;
        std::vector<float> hyper(k * c8);
        for (int64_t m = 0; m < k; ++m) {
            const float* token = ws.queries.data() + (1 + m) * dim_;
            const std::vector<float> row = hypernetworks_[m](std::vector<float>(token, token + dim_));
            std::copy(row.begin(), row.end(), hyper.begin() + m * c8);
        }
        DecoderOutput out;
        out.low_res_logits.resize(k * 16 * grid_rows * grid_);
        // Each thread upscales an equal share of the grid rows (for a lone prompt; inside decoding prompts side by
        // side this region is a nested one and runs on the prompt's thread), in bands, each band's ops on its
        // thread alone. (Whole bands dealt out would leave one thread a band more whenever their count is odd.)
#pragma omp parallel
        {
            const int threads = omp_get_num_threads(), thread = omp_get_thread_num();
            const int64_t first = grid_rows * thread / threads, end = grid_rows * (thread + 1) / threads;
            DecoderWorkspace::Band& band = ws.bands[thread];
            for (int64_t row = first; row < end; row += kUpscaleRows) {
                const int64_t rows = std::min(kUpscaleRows, end - row);
                upscale(ws.keys.data(), image_precision_ == Precision::bf16 ? ws.keys_bf16.data() : nullptr, row,
                        rows, band);
                // over a whole band's width even for a short band (its columns beyond the band's rows come from
                // stale rows and are not read): oneDNN's blocking, so the sums' last bits, depend on that width
                ops::matmul(hyper.data(), band.upscaled2.data(), band.masks.data(), k, band_pixels, c8, c8, c8,
                            band_pixels, true);
                unblock(band.masks.data(), out.low_res_logits.data(), 4 * grid_rows, k, row, rows, false);
            }
        }
        out.iou_predictions = iou_head_(std::vector<float>(ws.queries.begin(), ws.queries.begin() + dim_));
        return out;
    }

    int64_t grid_, dim_, mask_tokens_count_;
    Precision image_precision_;
    std::vector<float> iou_token_, mask_tokens_;
    std::vector<TwoWayLayer> layers_;
    DecoderAttention final_attn_;
    LayerNorm norm_final_, upscale_norm_;
    ops::Linear upscale1_, upscale2_;
    std::vector<Mlp> hypernetworks_;
    Mlp iou_head_;
    mutable WorkspacePool<DecoderWorkspace> workspaces_;
};

void check_hyper_params(const SamHyperParams& hp, const std::string& file) {
    auto require = [&](bool ok, const std::string& what) {
        if (!ok) throw Error(file, "unsupported SAM hyper-parameters: " + what);
    };
    require(hp.patch_size > 0 && hp.image_size > 0 && hp.image_size % hp.patch_size == 0,
            "image_size must be a multiple of patch_size");
    if (hp.encoder_kind == EncoderKind::Vit) {  // TinyVitEncoder checks its own configuration
        require(hp.encoder_num_heads > 0 && hp.encoder_embed_dim % hp.encoder_num_heads == 0,
                "encoder_embed_dim must be a multiple of encoder_num_heads");
        require(hp.window_size > 0 && hp.encoder_depth > 0 && hp.mlp_ratio > 0, "window_size, depth and mlp_ratio must be positive");
        for (int index : hp.global_attn_indexes)
            require(index >= 0 && index < hp.encoder_depth, "global attention index " + std::to_string(index) + " outside the encoder");
    }
    require(hp.prompt_embed_dim % 16 == 0, "prompt_embed_dim must be a multiple of 16");
    require(hp.decoder_num_heads > 0 && (hp.prompt_embed_dim / kAttentionDownsampleRate) % hp.decoder_num_heads == 0,
            "decoder_num_heads must divide the decoder's attention width");
    require(hp.num_multimask_outputs > 0 && hp.decoder_depth > 0, "num_multimask_outputs and decoder_depth must be positive");
}

std::string describe(const SamHyperParams& hp) {
    if (hp.encoder_kind == EncoderKind::TinyVit)
        return "a SAM with a TinyViT image encoder for " + std::to_string(hp.image_size) + "-pixel input";
    return "a SAM with a " + std::to_string(hp.encoder_depth) + "-block, " + std::to_string(hp.encoder_embed_dim) +
           "-wide image encoder";
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------

struct SamModel::Impl {
    SamHyperParams hp;
    std::unique_ptr<ImageEncoder> encoder;          // EncoderKind::Vit
    std::unique_ptr<TinyVitEncoder> tiny_vit;       // EncoderKind::TinyVit
    Precision precision = Precision::fp32;          // the image encoder's and the mask decoder's
    std::unique_ptr<PromptEncoder> prompt_encoder;
    std::unique_ptr<MaskDecoder> decoder;
};

SamModel::SamModel(const Checkpoint& checkpoint, const SamHyperParams& hp, Precision precision)
    : impl_(std::make_unique<Impl>()) {
    check_hyper_params(hp, checkpoint.path);
    WeightReader weights(checkpoint);
    impl_->hp = hp;
    impl_->precision = ops::effective_precision(precision);
    if (hp.encoder_kind == EncoderKind::TinyVit) {
        impl_->tiny_vit = std::make_unique<TinyVitEncoder>(
            [&weights](const std::string& name, const Shape& shape) { return weights.data(name, shape); }, hp.tiny_vit,
            checkpoint.path, impl_->precision);
        if (impl_->tiny_vit->embedding_size() != hp.embedding_size() || hp.tiny_vit.out_chans != hp.prompt_embed_dim)
            throw Error(checkpoint.path, "the TinyViT encoder's " + std::to_string(hp.tiny_vit.out_chans) + " x " +
                                             std::to_string(impl_->tiny_vit->embedding_size()) + "^2 embedding does not "
                                             "fit the mask decoder's " + std::to_string(hp.prompt_embed_dim) + " x " +
                                             std::to_string(hp.embedding_size()) + "^2");
    } else {
        impl_->encoder = std::make_unique<ImageEncoder>(weights, hp, impl_->precision);
    }
    impl_->prompt_encoder = std::make_unique<PromptEncoder>(weights, hp);
    impl_->decoder = std::make_unique<MaskDecoder>(weights, hp, impl_->precision);
    weights.check_all_used(describe(hp));
}

SamModel::~SamModel() = default;

const SamHyperParams& SamModel::hyper_params() const { return impl_->hp; }
Precision SamModel::encoder_precision() const { return impl_->precision; }

void SamModel::encode_image(const float* input, float* embedding) const {
    if (impl_->tiny_vit) impl_->tiny_vit->encode(input, embedding);
    else impl_->encoder->encode(input, embedding);
}

int64_t SamModel::decoder_mask_count() const { return impl_->decoder->mask_token_count(); }

DecoderImage SamModel::prepare_decoder(const float* embedding) const {
    const PromptEncoder& prompts = *impl_->prompt_encoder;
    DecoderImage image;
    image.data_ = std::make_unique<DecoderImage::Data>(
        impl_->decoder->prepare_image(embedding, prompts.no_mask().data(), prompts.dense_pe().data()));
    return image;
}

std::vector<DecoderOutput> SamModel::decode(const DecoderImage& image, const std::vector<FramePrompt>& prompts,
                                            int rows_needed) const {
    if (image.empty() || image.data_->decoder != impl_->decoder.get())
        throw Error("", "decode() needs an image prepared by this model's prepare_decoder()");
    std::vector<std::vector<float>> sparse;
    for (const FramePrompt& prompt : prompts) sparse.push_back(impl_->prompt_encoder->sparse(prompt));
    return impl_->decoder->run(*image.data_, sparse, *impl_->prompt_encoder, rows_needed);
}

DecoderOutput SamModel::decode(const float* embedding, const FramePrompt& prompt, bool multimask_output) const {
    return select_masks(decode(prepare_decoder(embedding), {prompt}).front(), multimask_output);
}

DecoderOutput select_masks(const DecoderOutput& all, bool multimask_output) {
    const size_t count = all.iou_predictions.size(), plane = all.low_res_logits.size() / count;
    const size_t first = multimask_output ? 1 : 0, kept = multimask_output ? count - 1 : 1;
    DecoderOutput out;
    out.low_res_logits.assign(all.low_res_logits.begin() + first * plane,
                              all.low_res_logits.begin() + (first + kept) * plane);
    out.iou_predictions.assign(all.iou_predictions.begin() + first, all.iou_predictions.begin() + first + kept);
    return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Single stages for the module tests: each runs the code encode_image / decode run.

std::vector<float> SamModelProbe::encoder_attention(const SamModel& model, int block, const std::vector<float>& x,
                                                    int64_t batch) {
    const ImageEncoder& encoder = *model.impl_->encoder;
    const EncoderBlock& b = encoder.block(block);
    const int64_t side = b.window > 0 ? b.window : encoder.grid();
    std::vector<float> out(x.size());
    encoder.attention(b, x.data(), out.data(), batch, side);
    return out;
}

std::vector<float> SamModelProbe::encoder_block(const SamModel& model, int block, const std::vector<float>& x) {
    const ImageEncoder& encoder = *model.impl_->encoder;
    auto ws = encoder.workspaces().take();
    encoder.prepare(*ws);
    std::copy(x.begin(), x.end(), ws->tokens.begin());
    encoder.run_block(encoder.block(block), *ws);
    return std::vector<float>(ws->tokens.begin(), ws->tokens.begin() + x.size());
}

std::vector<float> SamModelProbe::neck(const SamModel& model, const std::vector<float>& x) {
    const ImageEncoder& encoder = *model.impl_->encoder;
    auto ws = encoder.workspaces().take();
    encoder.prepare(*ws);
    std::copy(x.begin(), x.end(), ws->tokens.begin());
    std::vector<float> out(model.impl_->hp.prompt_embed_dim * encoder.grid() * encoder.grid());
    encoder.neck(*ws, out.data());
    return out;
}

std::vector<float> SamModelProbe::sparse_embedding(const SamModel& model, const FramePrompt& prompt) {
    return model.impl_->prompt_encoder->sparse(prompt);
}

std::vector<float> SamModelProbe::dense_positional_encoding(const SamModel& model) {
    return model.impl_->prompt_encoder->dense_pe();
}

std::vector<float> SamModelProbe::no_mask_embedding(const SamModel& model) {
    return model.impl_->prompt_encoder->no_mask();
}

void SamModelProbe::two_way_transformer(const SamModel& model, const std::vector<float>& src,
                                        const std::vector<float>& pos, const std::vector<float>& tokens,
                                        std::vector<float>& queries, std::vector<float>& keys) {
    if (model.encoder_precision() != Precision::fp32)
        throw std::logic_error("SamModelProbe::two_way_transformer: an fp32 model only");
    const MaskDecoder& decoder = *model.impl_->decoder;
    const int64_t dim = model.impl_->hp.prompt_embed_dim, n = int64_t(tokens.size()) / dim;
    const int64_t image = int64_t(src.size()) / dim;
    std::vector<float> pos_rows(pos.size()), no_dense(dim, 0.0f);
    ops::transpose(pos.data(), pos_rows.data(), dim, image, image, dim);
    const DecoderImage::Data image_data = decoder.prepare_image(src.data(), no_dense.data(), pos_rows.data());
    DecoderWorkspace ws;
    decoder.prepare(ws, n);
    decoder.transformer(image_data, tokens, n, pos_rows.data(), ws);
    queries.assign(ws.queries.begin(), ws.queries.begin() + n * dim);
    keys.assign(ws.keys.begin(), ws.keys.begin() + image * dim);
}

std::vector<float> SamModelProbe::upscale(const SamModel& model, const std::vector<float>& src) {
    const MaskDecoder& decoder = *model.impl_->decoder;
    const int64_t dim = model.impl_->hp.prompt_embed_dim, image = int64_t(src.size()) / dim;
    DecoderWorkspace ws;
    decoder.prepare(ws, 0);
    ops::transpose(src.data(), ws.keys.data(), dim, image, image, dim);
    const int64_t side = decoder.low_res_size();
    std::vector<float> out(dim / 8 * side * side);
    for (int64_t row = 0; row < side / 4; row += kUpscaleRows) {
        const int64_t rows = std::min(kUpscaleRows, side / 4 - row);
        decoder.upscale(ws.keys.data(), nullptr, row, rows, ws.bands.front());
        decoder.unblock(ws.bands.front().upscaled2.data(), out.data(), side, dim / 8, row, rows, true);
    }
    return out;
}

DecoderOutput SamModelProbe::mask_decoder(const SamModel& model, const float* embedding,
                                          const std::vector<float>& sparse, bool multimask) {
    const PromptEncoder& prompts = *model.impl_->prompt_encoder;
    const MaskDecoder& decoder = *model.impl_->decoder;
    const DecoderImage::Data image = decoder.prepare_image(embedding, prompts.no_mask().data(), prompts.dense_pe().data());
    return select_masks(decoder.run(image, {sparse}, prompts).front(), multimask);
}

}  // namespace sqasam::sam
