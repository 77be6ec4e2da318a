// TinyViT image encoder (MobileSAM / LiteMedSAM), after the official tiny_vit_sam.py.
//
// Layout: activations are channels-last rows, [grid_h * grid_w, channels], so 1x1 convolutions and linear layers
// are one matrix product over all pixels and LayerNorm is per row. Every Conv2d_BN has its BatchNorm (eval mode:
// running statistics) folded into the convolution at load.
//
// Data flow (vit_t; lite_medsam differs in step 1 only):
//   1. patch_embed: conv3x3 s2 + BN, GELU, conv3x3 s2 + BN: 3 x 1024^2 -> 256^2 x 64
//   2. stage 0: MBConv blocks x = GELU(x + BN(conv1x1(GELU(BN(dwconv3x3(GELU(BN(conv1x1(x)))))))))
//   3. PatchMerging after stages 0..2: conv1x1+BN, GELU, dwconv3x3 (stride 2, or 1 for 320 channels)+BN, GELU,
//      conv1x1+BN
//   4. stages 1..3: TinyViT blocks
//        x = x + proj(attention over windows of LayerNorm(zero-padded x)), with a learned bias per head and offset
//        x = BN(dwconv3x3(x))                       (local_conv; no residual)
//        x = x + fc2(GELU(fc1(LayerNorm(x))))
//   5. neck: conv1x1 (no bias), LayerNorm2d, conv3x3 (no bias), LayerNorm2d -> 256 x 64 x 64 channels-first
#include "sam/tiny_vit.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "ops/ops.hpp"
#include "sam/windows.hpp"
#include "sam/workspace.hpp"
#include "sqasam/error.hpp"

namespace sqasam::sam {
namespace {

using Shape = std::vector<int64_t>;
using Shapes = std::map<std::string, Shape>;

constexpr int kImageChannels = 3;
constexpr int kEmbeddingGrid = 64;       // the official forward_features reshapes the last stage to 64 x 64
constexpr float kBatchNormEps = 1e-5f;   // nn.BatchNorm2d default
constexpr float kLayerNormEps = 1e-5f;   // nn.LayerNorm default (Attention.norm, Mlp.norm)
constexpr float kNeckNormEps = 1e-6f;    // the neck's LayerNorm2d
constexpr int kNeckKernel = 3;
constexpr size_t kMaxStages = 8;         // the official models have 4; more would overflow the stride arithmetic
constexpr int64_t kStripRows = 16;       // output rows per strip (vit_t stage 0: 18 x 256 x 256 hidden floats = 4.5 MB)
constexpr int64_t kDepthwiseKernel = 3;  // MBConv's and PatchMerging's depthwise convolutions
constexpr int64_t kMlpChunkFloats = 1 << 17;  // hidden floats per MLP chunk: 512 KB, half a core's L2
constexpr int64_t kMlpMinChunkRows = 32;
constexpr int64_t kAttentionChunkFloats = 1 << 17;  // qkv activations per attention chunk: 512 KB

std::string stage_prefix(int stage) { return "image_encoder.layers." + std::to_string(stage) + "."; }
std::string block_prefix(int stage, int block) {
    return stage_prefix(stage) + "blocks." + std::to_string(block) + ".";
}

// Conv2d_BN: a bias-free convolution followed by BatchNorm2d.
void add_conv_bn(Shapes& shapes, const std::string& prefix, int64_t out, int64_t in_per_group, int64_t kernel,
                 bool batch_counters) {
    shapes[prefix + ".c.weight"] = {out, in_per_group, kernel, kernel};
    for (const char* stat : {".bn.weight", ".bn.bias", ".bn.running_mean", ".bn.running_var"})
        shapes[prefix + stat] = {out};
    if (batch_counters) shapes[prefix + ".bn.num_batches_tracked"] = {};
}

void add_norm(Shapes& shapes, const std::string& prefix, int64_t dim) {
    shapes[prefix + ".weight"] = {dim};
    shapes[prefix + ".bias"] = {dim};
}

void add_linear(Shapes& shapes, const std::string& prefix, int64_t out, int64_t in) {
    shapes[prefix + ".weight"] = {out, in};
    shapes[prefix + ".bias"] = {out};
}

const Tensor& require(const Checkpoint& checkpoint, const std::string& name, size_t rank) {
    auto found = checkpoint.tensors.find(name);
    if (found == checkpoint.tensors.end())
        throw Error(checkpoint.path, "missing tensor '" + name + "', needed to tell the TinyViT configuration");
    if (found->second.shape.size() != rank)
        throw Error(checkpoint.path, "tensor '" + name + "' has shape " + found->second.shape_string() + ", expected " +
                                         std::to_string(rank) + " dimensions");
    for (int64_t dim : found->second.shape)
        if (dim <= 0 || dim > (int64_t{1} << 20))
            throw Error(checkpoint.path, "tensor '" + name + "' has an implausible shape " + found->second.shape_string());
    return found->second;
}

int count_blocks(const Checkpoint& checkpoint, int stage, const std::string& probe) {
    int blocks = 0;
    while (checkpoint.has(block_prefix(stage, blocks) + probe)) ++blocks;
    return blocks;
}

// ---------------------------------------------------------------------------------------------------------------
// Layers

// A Conv2d_BN with its BatchNorm folded in: w' = w * g / sqrt(var + eps), b' = beta - mean * g / sqrt(var + eps).
struct FoldedConv {
    std::vector<float> weight, bias;
    int64_t out = 0, in_per_group = 0, kernel = 0;
};

FoldedConv fold_conv_bn(const TensorLookup& lookup, const std::string& prefix, int64_t out, int64_t in_per_group,
                        int64_t kernel, bool batch_counters) {
    FoldedConv conv{{}, std::vector<float>(out), out, in_per_group, kernel};
    const int64_t per_output = in_per_group * kernel * kernel;
    const float* w = lookup(prefix + ".c.weight", {out, in_per_group, kernel, kernel});
    const float* gamma = lookup(prefix + ".bn.weight", {out});
    const float* beta = lookup(prefix + ".bn.bias", {out});
    const float* mean = lookup(prefix + ".bn.running_mean", {out});
    const float* var = lookup(prefix + ".bn.running_var", {out});
    if (batch_counters) lookup(prefix + ".bn.num_batches_tracked", {});
    conv.weight.assign(w, w + out * per_output);
    for (int64_t o = 0; o < out; ++o) {
        const double scale = double(gamma[o]) / std::sqrt(double(var[o]) + kBatchNormEps);
        for (int64_t i = 0; i < per_output; ++i) conv.weight[o * per_output + i] = float(w[o * per_output + i] * scale);
        conv.bias[o] = float(beta[o] - mean[o] * scale);
    }
    return conv;
}

// A 1x1 Conv2d_BN is a linear layer over pixel rows; with Precision::bf16 its inputs are centred (ops::Linear).
ops::Linear pointwise(const TensorLookup& lookup, const std::string& prefix, int64_t out, int64_t in, bool counters,
                      Precision precision = Precision::fp32) {
    FoldedConv conv = fold_conv_bn(lookup, prefix, out, in, 1, counters);
    return ops::Linear(conv.weight.data(), conv.bias.data(), out, in, precision, true);
}

ops::Conv2d spatial(const TensorLookup& lookup, const std::string& prefix, int64_t out, int64_t in, int64_t kernel,
                    int64_t stride, int64_t groups, bool counters) {
    FoldedConv conv = fold_conv_bn(lookup, prefix, out, in / groups, kernel, counters);
    return ops::Conv2d(conv.weight.data(), conv.bias.data(), out, in, kernel, stride, kernel / 2, groups);
}

struct LayerNorm {
    std::vector<float> gamma, beta;
    float eps = 0;

    LayerNorm() = default;
    LayerNorm(const TensorLookup& lookup, const std::string& prefix, int64_t dim, float eps) : eps(eps) {
        const float* weight = lookup(prefix + ".weight", {dim});
        const float* bias = lookup(prefix + ".bias", {dim});
        gamma.assign(weight, weight + dim);
        beta.assign(bias, bias + dim);
    }
    void operator()(const float* x, float* y, int64_t rows) const {
        ops::layer_norm(x, gamma.data(), beta.data(), y, rows, int64_t(gamma.size()), eps);
    }
    void operator()(const float* x, uint16_t* y_bf16, int64_t rows) const {  // rows only a bf16 product reads
        ops::layer_norm(x, gamma.data(), beta.data(), nullptr, rows, int64_t(gamma.size()), eps, {.y_bf16 = y_bf16});
    }
};

struct MBConv {
    ops::Linear expand, project;  // 1x1 convolutions
    ops::Conv2d depthwise;
};

struct PatchMerging {
    ops::Linear conv1, conv3;
    ops::Conv2d depthwise;
    int64_t in_grid = 0, out_grid = 0, stride = 1;
};

struct TinyVitBlock {
    LayerNorm attn_norm, mlp_norm;
    ops::Linear qkv;        // rows reordered to [q of every head | k of every head | v of every head]
    ops::Linear proj, fc1, fc2;
    ops::Conv2d local_conv;
    std::vector<float> attention_bias;  // heads x T x T, T = window^2: attention_biases[h, idx(i, j)]
};

struct Stage {
    int64_t grid = 0, dim = 0, heads = 0, window = 0;
    std::vector<MBConv> conv_blocks;  // stage 0
    std::vector<TinyVitBlock> blocks; // stages 1..
    bool has_merge = false;
    PatchMerging merge;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Configuration

int TinyVitParams::merge_stride(int stage) const {
    const int out_dim = embed_dims.at(stage + 1);
    return out_dim == 320 || out_dim == 448 || out_dim == 576 ? 1 : 2;
}

int TinyVitParams::total_stride() const {
    int stride = patch_embed_stride() * patch_embed_stride();
    for (size_t stage = 0; stage + 1 < embed_dims.size(); ++stage) stride *= merge_stride(int(stage));
    return stride;
}

std::vector<int> TinyVitParams::stage_grids() const {
    const int s = patch_embed_stride();
    int grid = image_size;
    for (int conv = 0; conv < 2; ++conv) grid = (grid - 1) / s + 1;  // (g + 2 pad - kernel) / s + 1
    std::vector<int> grids{grid};
    for (size_t stage = 0; stage + 1 < embed_dims.size(); ++stage) {
        grid = (grid - 1) / merge_stride(int(stage)) + 1;
        grids.push_back(grid);
    }
    return grids;
}

TinyVitParams mobile_sam_tiny_vit_params() { return TinyVitParams{}; }

TinyVitParams lite_medsam_tiny_vit_params() {
    TinyVitParams params;
    params.image_size = 256;
    params.patch_embed_kernel = 1;
    params.classifier_classes = 0;
    return params;
}

std::vector<int32_t> attention_bias_indices(int window_size) {
    const int tokens = window_size * window_size;
    std::map<std::pair<int, int>, int32_t> offsets;
    std::vector<int32_t> indices(size_t(tokens) * tokens);
    for (int i = 0; i < tokens; ++i)
        for (int j = 0; j < tokens; ++j) {
            const std::pair<int, int> offset{std::abs(i / window_size - j / window_size),
                                             std::abs(i % window_size - j % window_size)};
            auto found = offsets.try_emplace(offset, int32_t(offsets.size())).first;
            indices[size_t(i) * tokens + j] = found->second;
        }
    return indices;
}

Shapes tiny_vit_tensor_shapes(const TinyVitParams& p) {
    Shapes shapes;
    const bool counters = p.has_batch_counters;
    const std::string pe = "image_encoder.patch_embed.seq.";
    const int64_t first = p.embed_dims[0];
    add_conv_bn(shapes, pe + "0", first / 2, kImageChannels, p.patch_embed_kernel, counters);
    add_conv_bn(shapes, pe + "2", first, first / 2, p.patch_embed_kernel, counters);
    for (size_t stage = 0; stage < p.embed_dims.size(); ++stage) {
        const int64_t dim = p.embed_dims[stage];
        for (int b = 0; b < p.depths[stage]; ++b) {
            const std::string block = block_prefix(int(stage), b);
            if (stage == 0) {
                const int64_t hidden = dim * p.mbconv_expand_ratio;
                add_conv_bn(shapes, block + "conv1", hidden, dim, 1, counters);
                add_conv_bn(shapes, block + "conv2", hidden, 1, 3, counters);
                add_conv_bn(shapes, block + "conv3", dim, hidden, 1, counters);
                continue;
            }
            const int64_t window = p.window_sizes[stage], heads = p.num_heads[stage];
            shapes[block + "attn.attention_biases"] = {heads, window * window};
            if (p.has_bias_index_tables)
                shapes[block + "attn.attention_bias_idxs"] = {window * window, window * window};
            add_norm(shapes, block + "attn.norm", dim);
            add_linear(shapes, block + "attn.qkv", 3 * dim, dim);
            add_linear(shapes, block + "attn.proj", dim, dim);
            add_norm(shapes, block + "mlp.norm", dim);
            add_linear(shapes, block + "mlp.fc1", dim * p.mlp_ratio, dim);
            add_linear(shapes, block + "mlp.fc2", dim, dim * p.mlp_ratio);
            add_conv_bn(shapes, block + "local_conv", dim, 1, p.local_conv_size, counters);
        }
        if (stage + 1 < p.embed_dims.size()) {
            const std::string merge = stage_prefix(int(stage)) + "downsample.";
            const int64_t out = p.embed_dims[stage + 1];
            add_conv_bn(shapes, merge + "conv1", out, dim, 1, counters);
            add_conv_bn(shapes, merge + "conv2", out, 1, 3, counters);
            add_conv_bn(shapes, merge + "conv3", out, out, 1, counters);
        }
    }
    if (p.classifier_classes > 0) {
        add_norm(shapes, "image_encoder.norm_head", p.embed_dims.back());
        add_linear(shapes, "image_encoder.head", p.classifier_classes, p.embed_dims.back());
    }
    const int64_t out = p.out_chans;
    shapes["image_encoder.neck.0.weight"] = {out, p.embed_dims.back(), 1, 1};
    add_norm(shapes, "image_encoder.neck.1", out);
    shapes["image_encoder.neck.2.weight"] = {out, out, kNeckKernel, kNeckKernel};
    add_norm(shapes, "image_encoder.neck.3", out);
    return shapes;
}

TinyVitParams detect_tiny_vit_params(const Checkpoint& checkpoint) {
    TinyVitParams p;
    const Tensor& stem = require(checkpoint, "image_encoder.patch_embed.seq.0.c.weight", 4);
    p.patch_embed_kernel = int(stem.shape[2]);
    if (stem.shape[1] != kImageChannels || stem.shape[3] != stem.shape[2] ||
        (p.patch_embed_kernel != 1 && p.patch_embed_kernel != 3))
        throw Error(checkpoint.path, "image_encoder.patch_embed.seq.0.c.weight has shape " + stem.shape_string() +
                                         "; a TinyViT patch embedding has [channels, 3, 3, 3] (MobileSAM) or "
                                         "[channels, 3, 1, 1] (LiteMedSAM)");
    p.embed_dims.clear();
    p.depths.clear();
    p.num_heads.clear();
    p.window_sizes.clear();
    for (int stage = 0; checkpoint.has(block_prefix(stage, 0) + (stage == 0 ? "conv1.c.weight" : "attn.qkv.weight"));
         ++stage) {
        if (size_t(stage) == kMaxStages)
            throw Error(checkpoint.path, "TinyViT checkpoint with more than " + std::to_string(kMaxStages) + " stages");
        if (stage == 0) {
            const Tensor& conv1 = require(checkpoint, block_prefix(0, 0) + "conv1.c.weight", 4);
            p.embed_dims.push_back(int(conv1.shape[1]));
            p.mbconv_expand_ratio = int(conv1.shape[0] / conv1.shape[1]);
            p.depths.push_back(count_blocks(checkpoint, 0, "conv1.c.weight"));
            p.num_heads.push_back(0);
            p.window_sizes.push_back(0);
            continue;
        }
        const std::string block = block_prefix(stage, 0);
        const Tensor& qkv = require(checkpoint, block + "attn.qkv.weight", 2);
        const Tensor& biases = require(checkpoint, block + "attn.attention_biases", 2);
        const int window = int(std::lround(std::sqrt(double(biases.shape[1]))));
        if (int64_t(window) * window != biases.shape[1])
            throw Error(checkpoint.path, block + "attn.attention_biases has shape " + biases.shape_string() +
                                             "; expected [heads, window^2]");
        p.embed_dims.push_back(int(qkv.shape[1]));
        p.num_heads.push_back(int(biases.shape[0]));
        p.window_sizes.push_back(window);
        p.depths.push_back(count_blocks(checkpoint, stage, "attn.qkv.weight"));
        if (stage == 1) {
            p.mlp_ratio = int(require(checkpoint, block + "mlp.fc1.weight", 2).shape[0] / qkv.shape[1]);
            p.local_conv_size = int(require(checkpoint, block + "local_conv.c.weight", 4).shape[2]);
            p.has_bias_index_tables = checkpoint.has(block + "attn.attention_bias_idxs");
        }
    }
    if (p.embed_dims.size() < 2)
        throw Error(checkpoint.path, "TinyViT checkpoint without a convolutional stage and attention stages "
                                     "(image_encoder.layers.0.blocks.0.conv1 / layers.1.blocks.0.attn)");
    p.has_batch_counters = checkpoint.has("image_encoder.patch_embed.seq.0.bn.num_batches_tracked");
    p.classifier_classes =
        checkpoint.has("image_encoder.head.weight") ? int(require(checkpoint, "image_encoder.head.weight", 2).shape[0]) : 0;
    p.out_chans = int(require(checkpoint, "image_encoder.neck.0.weight", 4).shape[0]);
    for (size_t stage = 1; stage < p.embed_dims.size(); ++stage)
        if (p.num_heads[stage] <= 0 || p.embed_dims[stage] % p.num_heads[stage] != 0)
            throw Error(checkpoint.path, "TinyViT stage " + std::to_string(stage) + ": " +
                                             std::to_string(p.num_heads[stage]) + " attention heads do not divide " +
                                             std::to_string(p.embed_dims[stage]) + " channels");
    // The input size leaves no trace in the weights; the official models reshape the last stage to 64 x 64,
    // which fixes it: 64 times the encoder's total stride.
    p.image_size = kEmbeddingGrid * p.total_stride();
    return p;
}

// ---------------------------------------------------------------------------------------------------------------
// The encoder

struct TinyVitEncoder::Impl {
    TinyVitParams params;
    ops::Conv2d embed1, embed2;
    std::vector<Stage> stages;
    ops::Linear neck_conv1;
    ops::Conv2d neck_conv2;
    LayerNorm neck_norm1, neck_norm2;

    struct Workspace {
        std::vector<float> image, x, y, hidden, hidden2, windows;
        // bf16 blocks: per thread, a chunk's normalised rows and (MLP) hidden activation, written in bf16 by the
        // LayerNorm and fc1's GELU epilogue for the bf16 products that read them.
        std::vector<uint16_t> rows_bf16;
    };

    void run_mbconv(const MBConv& block, int64_t grid, int64_t dim, Workspace& ws) const;
    void run_merge(const PatchMerging& merge, Workspace& ws) const;
    template <class Consume>
    void expand_in_strips(const ops::Linear& expand, const ops::Conv2d& depthwise, int64_t stride, int64_t grid,
                          Workspace& ws, Consume&& consume) const;
    void run_block(const TinyVitBlock& block, const Stage& stage, Workspace& ws) const;
    void run_mlp(const TinyVitBlock& block, int64_t pixels, int64_t dim, Workspace& ws) const;
    void attention(const TinyVitBlock& block, const Stage& stage, int64_t windows, const float* qkv, float* out) const;

    mutable WorkspacePool<Workspace> workspaces;
};

TinyVitEncoder::TinyVitEncoder(const TensorLookup& lookup, const TinyVitParams& params,
                               const std::string& checkpoint_path, Precision precision)
    : impl_(std::make_unique<Impl>()) {
    Impl& m = *impl_;
    m.params = params;
    const TinyVitParams& p = params;
    const size_t stage_count = p.embed_dims.size();
    if (stage_count < 2 || p.depths.size() != stage_count || p.num_heads.size() != stage_count ||
        p.window_sizes.size() != stage_count)
        throw Error(checkpoint_path, "TinyViT configuration needs matching embed_dims, depths, num_heads and "
                                     "window_sizes for at least two stages");
    if (p.image_size <= 0 || p.image_size % p.total_stride() != 0)
        throw Error(checkpoint_path, "TinyViT input size " + std::to_string(p.image_size) +
                                         " is not a multiple of the encoder's stride " + std::to_string(p.total_stride()));
    const std::vector<int> grids = p.stage_grids();
    const bool counters = p.has_batch_counters;
    const int64_t first = p.embed_dims[0];
    const std::string pe = "image_encoder.patch_embed.seq.";
    m.embed1 = spatial(lookup, pe + "0", first / 2, kImageChannels, p.patch_embed_kernel, p.patch_embed_stride(), 1, counters);
    m.embed2 = spatial(lookup, pe + "2", first, first / 2, p.patch_embed_kernel, p.patch_embed_stride(), 1, counters);

    for (size_t s = 0; s < stage_count; ++s) {
        Stage stage;
        stage.grid = grids[s];
        stage.dim = p.embed_dims[s];
        stage.heads = p.num_heads[s];
        stage.window = p.window_sizes[s];
        const int64_t dim = stage.dim;
        for (int b = 0; b < p.depths[s]; ++b) {
            const std::string prefix = block_prefix(int(s), b);
            if (s == 0) {
                const int64_t hidden = dim * p.mbconv_expand_ratio;
                // bf16 with centred inputs (ops::Linear): these rows carry channel offsets several times their
                // spread; plainly rounded, the expansion's inputs alone raised LiteMedSAM's bf16 embedding error
                // from 1.0-1.2 % to 1.6-1.7 %, centred the two products add 0.04-0.08 points (bench/NOTES.md).
                stage.conv_blocks.push_back({pointwise(lookup, prefix + "conv1", hidden, dim, counters, precision),
                                             pointwise(lookup, prefix + "conv3", dim, hidden, counters, precision),
                                             spatial(lookup, prefix + "conv2", hidden, hidden, kDepthwiseKernel, 1,
                                                     hidden, counters)});
                continue;
            }
            if (stage.heads <= 0 || dim % stage.heads != 0 || stage.window <= 0)
                throw Error(checkpoint_path, "TinyViT stage " + std::to_string(s) + " has " +
                                                 std::to_string(stage.heads) + " heads for " + std::to_string(dim) +
                                                 " channels and window " + std::to_string(stage.window));
            TinyVitBlock block;
            block.attn_norm = LayerNorm(lookup, prefix + "attn.norm", dim, kLayerNormEps);
            block.mlp_norm = LayerNorm(lookup, prefix + "mlp.norm", dim, kLayerNormEps);
            // The official qkv output holds, per head, [q (head_dim), k (head_dim), v (head_dim)]; regroup the rows
            // so that q, k and v of all heads are each contiguous (head h at columns h * head_dim of each part).
            const int64_t head_dim = dim / stage.heads;
            const float* qkv_w = lookup(prefix + "attn.qkv.weight", {3 * dim, dim});
            const float* qkv_b = lookup(prefix + "attn.qkv.bias", {3 * dim});
            std::vector<float> weight(3 * dim * dim), bias(3 * dim);
            for (int64_t h = 0; h < stage.heads; ++h)
                for (int64_t part = 0; part < 3; ++part)
                    for (int64_t c = 0; c < head_dim; ++c) {
                        const int64_t from = (h * 3 + part) * head_dim + c, to = part * dim + h * head_dim + c;
                        std::copy_n(qkv_w + from * dim, dim, weight.begin() + to * dim);
                        bias[to] = qkv_b[from];
                    }
            block.qkv = ops::Linear(weight.data(), bias.data(), 3 * dim, dim, precision);
            block.proj = ops::Linear(lookup(prefix + "attn.proj.weight", {dim, dim}),
                                     lookup(prefix + "attn.proj.bias", {dim}), dim, dim, precision);
            const int64_t hidden = dim * p.mlp_ratio;
            block.fc1 = ops::Linear(lookup(prefix + "mlp.fc1.weight", {hidden, dim}),
                                    lookup(prefix + "mlp.fc1.bias", {hidden}), hidden, dim, precision);
            block.fc2 = ops::Linear(lookup(prefix + "mlp.fc2.weight", {dim, hidden}),
                                    lookup(prefix + "mlp.fc2.bias", {dim}), dim, hidden, precision);
            block.local_conv = spatial(lookup, prefix + "local_conv", dim, dim, p.local_conv_size, 1, dim, counters);

            const int64_t window = stage.window, tokens = window * window;
            const std::vector<int32_t> indices = attention_bias_indices(int(window));
            if (p.has_bias_index_tables) {
                const float* stored = lookup(prefix + "attn.attention_bias_idxs", {tokens, tokens});
                for (size_t i = 0; i < indices.size(); ++i)
                    if (stored[i] != float(indices[i]))
                        throw Error(checkpoint_path, prefix + "attn.attention_bias_idxs differs from the official "
                                                              "offset table at entry " + std::to_string(i));
            }
            const float* biases = lookup(prefix + "attn.attention_biases", {stage.heads, tokens});
            block.attention_bias.resize(stage.heads * tokens * tokens);
            for (int64_t h = 0; h < stage.heads; ++h)
                for (int64_t i = 0; i < tokens * tokens; ++i)
                    block.attention_bias[h * tokens * tokens + i] = biases[h * tokens + indices[i]];
            stage.blocks.push_back(std::move(block));
        }
        if (s + 1 < stage_count) {
            const std::string prefix = stage_prefix(int(s)) + "downsample.";
            const int64_t out = p.embed_dims[s + 1];
            stage.has_merge = true;
            stage.merge.conv1 = pointwise(lookup, prefix + "conv1", out, dim, counters);
            stage.merge.depthwise = spatial(lookup, prefix + "conv2", out, out, kDepthwiseKernel, p.merge_stride(int(s)), out, counters);
            stage.merge.conv3 = pointwise(lookup, prefix + "conv3", out, out, counters);
            stage.merge.in_grid = grids[s];
            stage.merge.out_grid = grids[s + 1];
            stage.merge.stride = p.merge_stride(int(s));
        }
        m.stages.push_back(std::move(stage));
    }
    if (p.classifier_classes > 0) {  // accepted, unused: the official forward stops at the neck
        const int64_t last = p.embed_dims.back();
        for (const char* name : {"image_encoder.norm_head.weight", "image_encoder.norm_head.bias"}) lookup(name, {last});
        lookup("image_encoder.head.weight", {p.classifier_classes, last});
        lookup("image_encoder.head.bias", {p.classifier_classes});
    }
    const int64_t out = p.out_chans;
    m.neck_conv1 = ops::Linear(lookup("image_encoder.neck.0.weight", {out, p.embed_dims.back(), 1, 1}), nullptr, out,
                               p.embed_dims.back(), precision);
    m.neck_norm1 = LayerNorm(lookup, "image_encoder.neck.1", out, kNeckNormEps);
    m.neck_conv2 = ops::Conv2d(lookup("image_encoder.neck.2.weight", {out, out, kNeckKernel, kNeckKernel}), nullptr,
                               out, out, kNeckKernel, 1, kNeckKernel / 2, 1, precision);
    m.neck_norm2 = LayerNorm(lookup, "image_encoder.neck.3", out, kNeckNormEps);
}

TinyVitEncoder::~TinyVitEncoder() = default;
const TinyVitParams& TinyVitEncoder::params() const { return impl_->params; }
int TinyVitEncoder::embedding_size() const { return int(impl_->stages.back().grid); }

// GELU(depthwise(GELU(expand(x)))), the first half of an MBConv (stride 1) or a PatchMerging, over strips of
// output rows: the expanded activations (stage 0: grid^2 x 4 dim, 64 MB for vit_t) outgrow the caches, so only a
// strip's exist at a time. Output rows y0 .. y0 + rows - 1 read the expanded rows stride y0 - 1 ..
// stride (y0 + rows - 1) + 1, zeros beyond the image (the convolution's zero padding; the convolution pads only the
// columns); the rows that a strip shares with the previous one are carried over. consume(y0, rows, convolved) takes
// each strip's out_grid x rows pixels.
template <class Consume>
void TinyVitEncoder::Impl::expand_in_strips(const ops::Linear& expand, const ops::Conv2d& depthwise, int64_t stride,
                                            int64_t grid, Workspace& ws, Consume&& consume) const {
    const int64_t in_dim = expand.in_features(), hidden = expand.out_features(), row = grid * hidden;
    const int64_t out_grid = depthwise.output_size(grid), strip = std::min(kStripRows, out_grid);
    const int64_t overlap = std::max<int64_t>(0, kDepthwiseKernel - stride);
    ensure_size(ws.hidden, (stride * (strip - 1) + kDepthwiseKernel) * row);
    ensure_size(ws.hidden2, strip * out_grid * hidden);
    float* expanded = ws.hidden.data();
    for (int64_t y0 = 0, rows = 0, count = 0; y0 < out_grid; y0 += rows) {
        if (y0 > 0) std::copy_n(expanded + (count - overlap) * row, overlap * row, expanded);
        const int64_t held = y0 > 0 ? overlap : 0;
        rows = std::min(strip, out_grid - y0);
        count = stride * (rows - 1) + kDepthwiseKernel;
        const int64_t first = stride * y0 - 1;  // the buffer holds input rows first .. first + count - 1
        const int64_t from = std::max(first + held, int64_t{0}), to = std::min(first + count, grid);
        std::fill(expanded + held * row, expanded + (from - first) * row, 0.0f);
        expand.forward(ws.x.data() + from * grid * in_dim, expanded + (from - first) * row, (to - from) * grid,
                       ops::Epilogue::gelu);
        std::fill(expanded + std::max(to - first, held) * row, expanded + count * row, 0.0f);
        depthwise.forward(expanded, ws.hidden2.data(), count, grid, ops::Epilogue::gelu, false);
        consume(y0, rows, ws.hidden2.data());
    }
}

// ws.x (grid^2 x dim) -> GELU(x + project(GELU(depthwise(GELU(expand(x)))))), in place: a strip's output rows
// replace input rows that have been expanded already (the next strip expands from the row below its first).
void TinyVitEncoder::Impl::run_mbconv(const MBConv& block, int64_t grid, int64_t dim, Workspace& ws) const {
    const int64_t x_row = grid * dim;
    expand_in_strips(block.expand, block.depthwise, 1, grid, ws, [&](int64_t y0, int64_t rows, const float* convolved) {
        float* out = ws.x.data() + y0 * x_row;
        block.project.forward(convolved, out, rows * grid, ops::Epilogue::accumulate);
        ops::gelu(out, rows * x_row);
    });
}

// ws.x (in_grid^2 x in_dim) -> ws.x (out_grid^2 x out_dim).
void TinyVitEncoder::Impl::run_merge(const PatchMerging& merge, Workspace& ws) const {
    const int64_t out_row = merge.out_grid * merge.conv3.out_features();
    ensure_size(ws.y, merge.out_grid * out_row);
    expand_in_strips(merge.conv1, merge.depthwise, merge.stride, merge.in_grid, ws,
                     [&](int64_t y0, int64_t rows, const float* convolved) {
                         merge.conv3.forward(convolved, ws.y.data() + y0 * out_row, rows * merge.out_grid);
                     });
    std::swap(ws.x, ws.y);
}

// softmax(scale q k^T + bias_h) v for every window and head, in one attention call, in the precision of the block's
// layers (ops::attention keeps windows of up to 64 tokens fp32); qkv rows are [q | k | v] of 3 * dim.
void TinyVitEncoder::Impl::attention(const TinyVitBlock& block, const Stage& stage, int64_t windows, const float* qkv,
                                     float* out) const {
    const int64_t dim = stage.dim, heads = stage.heads, head_dim = dim / heads;
    const int64_t tokens = stage.window * stage.window, row = 3 * dim;
    const ops::AttentionShape shape{.batch = windows, .heads = heads, .queries = tokens, .keys = tokens,
                                    .head_dim = head_dim, .q_row_stride = row, .k_row_stride = row,
                                    .v_row_stride = row, .out_row_stride = dim, .q_batch_stride = tokens * row,
                                    .k_batch_stride = tokens * row, .v_batch_stride = tokens * row,
                                    .out_batch_stride = tokens * dim};
    ops::attention(qkv, qkv + dim, qkv + 2 * dim, out, shape, 1.0f / std::sqrt(float(head_dim)), nullptr,
                   block.qkv.precision(), block.attention_bias.data());
}

// One TinyViT block on ws.x (grid^2 x dim). The attention half runs a few windows at a time, each thread alone,
// so that their rows, qkv activations and attention output stay in the core's L2 (the whole qkv activation is up
// to 27 MB); the projection's residual is added as the windows go back into the grid.
void TinyVitEncoder::Impl::run_block(const TinyVitBlock& block, const Stage& stage, Workspace& ws) const {
    const int64_t grid = stage.grid, dim = stage.dim, window = stage.window, pixels = grid * grid;
    const int64_t windows = window_count(grid, window), tokens = window * window;
    const int64_t group = std::max<int64_t>(1, kAttentionChunkFloats / (tokens * 3 * dim));
    const int64_t chunks = (windows + group - 1) / group, per_thread = group * tokens * 4 * dim;
    ensure_size(ws.windows, ops::num_threads() * per_thread);
    const bool bf16 = block.qkv.precision() == Precision::bf16;
    if (bf16) ensure_size(ws.rows_bf16, ops::num_threads() * group * tokens * dim);
    // The official block pads with zeros before the attention's LayerNorm, so padding rows enter it as zeros.
    const std::vector<float> zero_row(dim, 0.0f);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t first = c * group, count = std::min(group, windows - first), rows = count * tokens;
        float* normed = ws.windows.data() + omp_get_thread_num() * per_thread;  // then the attention output
        float* qkv = normed + group * tokens * dim;                              // then the projection
        window_partition(ws.x.data(), normed, grid, dim, window, zero_row.data(), first, count);
        if (bf16) {
            uint16_t* normed_bf16 = ws.rows_bf16.data() + omp_get_thread_num() * group * tokens * dim;
            block.attn_norm(normed, normed_bf16, rows);
            block.qkv.forward(normed_bf16, qkv, rows);
        } else {
            block.attn_norm(normed, normed, rows);
            block.qkv.forward(normed, qkv, rows);
        }
        attention(block, stage, count, qkv, normed);
        block.proj.forward(normed, qkv, rows);
        window_unpartition(qkv, ws.x.data(), grid, dim, window, first, count, true);
    }

    ensure_size(ws.y, pixels * dim);
    block.local_conv.forward(ws.x.data(), ws.y.data(), grid, grid);
    std::swap(ws.x, ws.y);

    run_mlp(block, pixels, dim, ws);
}

// x += fc2(GELU(fc1(LayerNorm(x)))) over ws.x (pixels x dim), in chunks of rows that each thread runs alone, so that
// a chunk's normalised rows and hidden activations (and their bf16 copies) stay in the core's L2 instead of
// streaming the whole hidden activation (up to 32 MB) through memory between the two products.
void TinyVitEncoder::Impl::run_mlp(const TinyVitBlock& block, int64_t pixels, int64_t dim, Workspace& ws) const {
    const int64_t hidden = block.fc1.out_features();
    const int64_t chunk = std::max<int64_t>(kMlpMinChunkRows, kMlpChunkFloats / hidden);
    const int64_t chunks = (pixels + chunk - 1) / chunk, per_thread = chunk * (dim + hidden);
    const bool bf16 = block.fc1.precision() == Precision::bf16;
    if (bf16)
        ensure_size(ws.rows_bf16, ops::num_threads() * per_thread);
    else
        ensure_size(ws.hidden, ops::num_threads() * per_thread);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
        float* x = ws.x.data() + c * chunk * dim;
        const int64_t rows = std::min(chunk, pixels - c * chunk);
        const auto mlp = [&](auto* thread_rows) {  // float or bf16 (uint16_t) rows
            auto* normed = thread_rows + omp_get_thread_num() * per_thread;
            auto* activations = normed + chunk * dim;
            block.mlp_norm(x, normed, rows);
            block.fc1.forward(normed, activations, rows, ops::Epilogue::gelu);
            block.fc2.forward(activations, x, rows, ops::Epilogue::accumulate);
        };
        if (bf16)
            mlp(ws.rows_bf16.data());
        else
            mlp(ws.hidden.data());
    }
}

void TinyVitEncoder::encode(const float* image, float* embedding) const {
    const Impl& m = *impl_;
    const TinyVitParams& p = m.params;
    auto lease = m.workspaces.take();
    Impl::Workspace& ws = *lease;
    const int64_t size = p.image_size;
    ws.image.resize(size * size * kImageChannels);
    // planar -> channels-last
    ops::transpose(image, ws.image.data(), kImageChannels, size * size, size * size, kImageChannels);

    const int64_t mid = m.embed1.output_size(size), grid0 = m.embed2.output_size(mid);
    ws.hidden.resize(mid * mid * m.embed1.out_channels());
    m.embed1.forward(ws.image.data(), ws.hidden.data(), size, size, ops::Epilogue::gelu);
    ws.x.resize(grid0 * grid0 * m.embed2.out_channels());
    m.embed2.forward(ws.hidden.data(), ws.x.data(), mid, mid);

    for (size_t s = 0; s < m.stages.size(); ++s) {
        const Stage& stage = m.stages[s];
        for (const MBConv& block : stage.conv_blocks) m.run_mbconv(block, stage.grid, stage.dim, ws);
        for (const TinyVitBlock& block : stage.blocks) m.run_block(block, stage, ws);
        if (stage.has_merge) m.run_merge(stage.merge, ws);
    }

    const int64_t grid = m.stages.back().grid, pixels = grid * grid, out = p.out_chans;
    ensure_size(ws.y, pixels * out);
    ensure_size(ws.hidden, pixels * out);
    m.neck_conv1.forward(ws.x.data(), ws.y.data(), pixels);
    m.neck_norm1(ws.y.data(), ws.y.data(), pixels);
    m.neck_conv2.forward(ws.y.data(), ws.hidden.data(), grid, grid);
    m.neck_norm2(ws.hidden.data(), ws.hidden.data(), pixels);
    ops::transpose(ws.hidden.data(), embedding, pixels, out, out, pixels);  // channels-last -> C x E x E
}

}  // namespace sqasam::sam
