#include "sam/hyper_params.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include "sqasam/error.hpp"

namespace sqasam::sam {
namespace {

using Shapes = std::map<std::string, std::vector<int64_t>>;

void add_linear(Shapes& shapes, const std::string& prefix, int64_t out, int64_t in) {
    shapes[prefix + ".weight"] = {out, in};
    shapes[prefix + ".bias"] = {out};
}

void add_norm(Shapes& shapes, const std::string& prefix, int64_t channels) {
    shapes[prefix + ".weight"] = {channels};
    shapes[prefix + ".bias"] = {channels};
}

// segment_anything's MLP: num_layers Linear layers input -> hidden ... -> output.
void add_mlp(Shapes& shapes, const std::string& prefix, int64_t input, int64_t hidden, int64_t output, int layers) {
    for (int i = 0; i < layers; ++i)
        add_linear(shapes, prefix + ".layers." + std::to_string(i), i == layers - 1 ? output : hidden,
                   i == 0 ? input : hidden);
}

void add_decoder_attention(Shapes& shapes, const std::string& prefix, int64_t dim, int64_t internal_dim) {
    for (const char* projection : {"q_proj", "k_proj", "v_proj"})
        add_linear(shapes, prefix + "." + projection, internal_dim, dim);
    add_linear(shapes, prefix + ".out_proj", dim, internal_dim);
}

// The indices N of every "<prefix>N." key, in order.
std::set<int> numbered_children(const Checkpoint& checkpoint, const std::string& prefix) {
    std::set<int> indices;
    for (auto it = checkpoint.tensors.lower_bound(prefix);
         it != checkpoint.tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
        size_t end = prefix.size();
        while (end < it->first.size() && std::isdigit(static_cast<unsigned char>(it->first[end]))) ++end;
        if (end == prefix.size() || end - prefix.size() > 6 || end >= it->first.size() || it->first[end] != '.')
            continue;
        indices.insert(std::stoi(it->first.substr(prefix.size(), end - prefix.size())));
    }
    return indices;
}

// A tensor detection relies on: present, of the given rank.
const Tensor& shape_source(const Checkpoint& checkpoint, const std::string& name, size_t rank) {
    auto found = checkpoint.tensors.find(name);
    if (found == checkpoint.tensors.end())
        throw Error(checkpoint.path, "missing tensor '" + name + "', needed to tell the SAM architecture");
    if (found->second.shape.size() != rank)
        throw Error(checkpoint.path, "tensor '" + name + "' has shape " + found->second.shape_string() + ", expected " +
                                         std::to_string(rank) + " dimensions");
    for (int64_t dim : found->second.shape)
        if (dim <= 0)
            throw Error(checkpoint.path, "tensor '" + name + "' has an empty shape " + found->second.shape_string());
    return found->second;
}

[[noreturn]] void not_sam(const Checkpoint& checkpoint) {
    std::string problem =
        "not a SAM checkpoint: it has neither 'image_encoder.patch_embed.proj.weight' (SAM's ViT) nor "
        "'image_encoder.patch_embed.seq.0.c.weight' (MobileSAM's and LiteMedSAM's TinyViT)";
    if (!checkpoint.tensors.empty())
        problem += " (its first tensor is '" + checkpoint.tensors.begin()->first + "')";
    throw Error(checkpoint.path, problem);
}

int to_int(int64_t value, const Checkpoint& checkpoint, const std::string& what) {
    if (value <= 0 || value > (int64_t{1} << 24))
        throw Error(checkpoint.path, "implausible " + what + " " + std::to_string(value));
    return static_cast<int>(value);
}

// The ViT image encoder's tensors.
void add_vit_encoder(Shapes& shapes, const SamHyperParams& hp) {
    const int64_t dim = hp.encoder_embed_dim, grid = hp.embedding_size(), head_dim = dim / hp.encoder_num_heads;
    const std::string encoder = "image_encoder.";
    shapes[encoder + "pos_embed"] = {1, grid, grid, dim};
    shapes[encoder + "patch_embed.proj.weight"] = {dim, 3, hp.patch_size, hp.patch_size};
    shapes[encoder + "patch_embed.proj.bias"] = {dim};
    for (int b = 0; b < hp.encoder_depth; ++b) {
        const std::string block = encoder + "blocks." + std::to_string(b) + ".";
        const bool global = std::count(hp.global_attn_indexes.begin(), hp.global_attn_indexes.end(), b) > 0;
        const int64_t span = global ? grid : hp.window_size;
        add_norm(shapes, block + "norm1", dim);
        shapes[block + "attn.rel_pos_h"] = {2 * span - 1, head_dim};
        shapes[block + "attn.rel_pos_w"] = {2 * span - 1, head_dim};
        add_linear(shapes, block + "attn.qkv", 3 * dim, dim);
        add_linear(shapes, block + "attn.proj", dim, dim);
        add_norm(shapes, block + "norm2", dim);
        add_linear(shapes, block + "mlp.lin1", dim * hp.mlp_ratio, dim);
        add_linear(shapes, block + "mlp.lin2", dim, dim * hp.mlp_ratio);
    }
    const int64_t out = hp.prompt_embed_dim;
    shapes[encoder + "neck.0.weight"] = {out, dim, 1, 1};
    add_norm(shapes, encoder + "neck.1", out);
    shapes[encoder + "neck.2.weight"] = {out, out, 3, 3};
    add_norm(shapes, encoder + "neck.3", out);
}

}  // namespace

Shapes sam_tensor_shapes(const SamHyperParams& hp) {
    Shapes shapes;
    if (hp.encoder_kind == EncoderKind::TinyVit) shapes = tiny_vit_tensor_shapes(hp.tiny_vit);
    else add_vit_encoder(shapes, hp);
    const int64_t out = hp.prompt_embed_dim;
    const std::string prompt = "prompt_encoder.";
    shapes[prompt + "pe_layer.positional_encoding_gaussian_matrix"] = {2, out / 2};
    for (int i = 0; i < 4; ++i) shapes[prompt + "point_embeddings." + std::to_string(i) + ".weight"] = {1, out};
    shapes[prompt + "not_a_point_embed.weight"] = {1, out};
    shapes[prompt + "no_mask_embed.weight"] = {1, out};
    const int64_t mask_quarter = kMaskInChans / 4;
    shapes[prompt + "mask_downscaling.0.weight"] = {mask_quarter, 1, 2, 2};
    shapes[prompt + "mask_downscaling.0.bias"] = {mask_quarter};
    add_norm(shapes, prompt + "mask_downscaling.1", mask_quarter);
    shapes[prompt + "mask_downscaling.3.weight"] = {kMaskInChans, mask_quarter, 2, 2};
    shapes[prompt + "mask_downscaling.3.bias"] = {kMaskInChans};
    add_norm(shapes, prompt + "mask_downscaling.4", kMaskInChans);
    shapes[prompt + "mask_downscaling.6.weight"] = {out, kMaskInChans, 1, 1};
    shapes[prompt + "mask_downscaling.6.bias"] = {out};

    const std::string decoder = "mask_decoder.";
    const int64_t cross_dim = out / kAttentionDownsampleRate;
    for (int l = 0; l < hp.decoder_depth; ++l) {
        const std::string layer = decoder + "transformer.layers." + std::to_string(l) + ".";
        add_decoder_attention(shapes, layer + "self_attn", out, out);
        add_norm(shapes, layer + "norm1", out);
        add_decoder_attention(shapes, layer + "cross_attn_token_to_image", out, cross_dim);
        add_norm(shapes, layer + "norm2", out);
        add_linear(shapes, layer + "mlp.lin1", hp.decoder_mlp_dim, out);
        add_linear(shapes, layer + "mlp.lin2", out, hp.decoder_mlp_dim);
        add_norm(shapes, layer + "norm3", out);
        add_norm(shapes, layer + "norm4", out);
        add_decoder_attention(shapes, layer + "cross_attn_image_to_token", out, cross_dim);
    }
    add_decoder_attention(shapes, decoder + "transformer.final_attn_token_to_image", out, cross_dim);
    add_norm(shapes, decoder + "transformer.norm_final_attn", out);
    const int64_t mask_tokens = hp.num_multimask_outputs + 1;
    shapes[decoder + "iou_token.weight"] = {1, out};
    shapes[decoder + "mask_tokens.weight"] = {mask_tokens, out};
    shapes[decoder + "output_upscaling.0.weight"] = {out, out / 4, 2, 2};  // ConvTranspose2d: (in, out, k, k)
    shapes[decoder + "output_upscaling.0.bias"] = {out / 4};
    add_norm(shapes, decoder + "output_upscaling.1", out / 4);
    shapes[decoder + "output_upscaling.3.weight"] = {out / 4, out / 8, 2, 2};
    shapes[decoder + "output_upscaling.3.bias"] = {out / 8};
    for (int64_t k = 0; k < mask_tokens; ++k)
        add_mlp(shapes, decoder + "output_hypernetworks_mlps." + std::to_string(k), out, out, out / 8, 3);
    add_mlp(shapes, decoder + "iou_prediction_head", out, kIouHeadHiddenDim, mask_tokens, kIouHeadDepth);
    return shapes;
}

void check_sam_tensors(const Checkpoint& checkpoint, const SamHyperParams& hp) {
    const Shapes expected = sam_tensor_shapes(hp);
    for (const auto& [name, shape] : expected) checkpoint.get(name, shape);
    for (const auto& entry : checkpoint.tensors)
        if (!expected.count(entry.first))
            throw Error(checkpoint.path, "unexpected tensor '" + entry.first + "' " + entry.second.shape_string() +
                                             ": not part of the SAM model that the other tensors describe");
}

namespace {

// A TinyViT image encoder: its input size and stride set the frame, and the ViT-only fields are cleared so that
// nothing can take it for SAM's vit_b (whose values are the defaults).
void use_tiny_vit(SamHyperParams& hp, const TinyVitParams& tiny_vit) {
    hp.encoder_kind = EncoderKind::TinyVit;
    hp.tiny_vit = tiny_vit;
    hp.image_size = tiny_vit.image_size;
    hp.patch_size = tiny_vit.total_stride();
    hp.prompt_embed_dim = tiny_vit.out_chans;
    hp.encoder_embed_dim = hp.encoder_depth = hp.encoder_num_heads = hp.window_size = hp.mlp_ratio = 0;
    hp.global_attn_indexes.clear();
}

// The ViT image encoder's hyper-parameters and the prompt embedding width, from its tensor shapes.
void detect_vit_encoder(const Checkpoint& checkpoint, SamHyperParams& hp) {
    if (!checkpoint.has("image_encoder.patch_embed.proj.weight")) not_sam(checkpoint);
    const Tensor& patch = shape_source(checkpoint, "image_encoder.patch_embed.proj.weight", 4);
    if (patch.shape[1] != 3 || patch.shape[2] != patch.shape[3])
        throw Error(checkpoint.path, "image_encoder.patch_embed.proj.weight has shape " + patch.shape_string() +
                                         "; expected [embed_dim, 3, patch, patch]");
    hp.encoder_embed_dim = to_int(patch.shape[0], checkpoint, "image encoder width");
    hp.patch_size = to_int(patch.shape[2], checkpoint, "patch size");
    const Tensor& pos = shape_source(checkpoint, "image_encoder.pos_embed", 4);
    hp.image_size = to_int(pos.shape[1] * hp.patch_size, checkpoint, "image size");
    const int64_t grid = hp.embedding_size();

    const std::set<int> blocks = numbered_children(checkpoint, "image_encoder.blocks.");
    if (blocks.empty()) throw Error(checkpoint.path, "SAM checkpoint without image_encoder.blocks");
    hp.encoder_depth = *blocks.rbegin() + 1;  // a gap shows up as a missing tensor in check_sam_tensors
    hp.global_attn_indexes.clear();
    int64_t head_dim = 0;
    int window = 0;
    for (int b = 0; b < hp.encoder_depth; ++b) {
        const std::string name = "image_encoder.blocks." + std::to_string(b) + ".attn.rel_pos_h";
        const Tensor& rel_pos = shape_source(checkpoint, name, 2);
        if (rel_pos.shape[0] % 2 == 0)
            throw Error(checkpoint.path, name + " has shape " + rel_pos.shape_string() + "; expected 2*size-1 rows");
        const int64_t span = (rel_pos.shape[0] + 1) / 2;
        if (b == 0) head_dim = rel_pos.shape[1];
        if (span == grid) {
            hp.global_attn_indexes.push_back(b);
        } else if (window == 0) {
            window = to_int(span, checkpoint, "attention window");
        } else if (span != window) {
            throw Error(checkpoint.path, name + " has shape " + rel_pos.shape_string() + ", but earlier blocks use " +
                                             std::to_string(window) + "x" + std::to_string(window) + " windows");
        }
    }
    if (window != 0) hp.window_size = window;
    if (hp.encoder_embed_dim % head_dim != 0)
        throw Error(checkpoint.path, "attention head width " + std::to_string(head_dim) +
                                         " does not divide the image encoder width " +
                                         std::to_string(hp.encoder_embed_dim));
    hp.encoder_num_heads = static_cast<int>(hp.encoder_embed_dim / head_dim);
    const Tensor& lin1 = shape_source(checkpoint, "image_encoder.blocks.0.mlp.lin1.weight", 2);
    hp.mlp_ratio = to_int(lin1.shape[0] / hp.encoder_embed_dim, checkpoint, "MLP ratio");
    hp.prompt_embed_dim = to_int(shape_source(checkpoint, "image_encoder.neck.0.weight", 4).shape[0], checkpoint,
                                 "prompt embedding width");
}

}  // namespace

SamHyperParams detect_hyper_params(const Checkpoint& checkpoint) {
    SamHyperParams hp;
    if (checkpoint.has("image_encoder.patch_embed.seq.0.c.weight"))  // MobileSAM / LiteMedSAM
        use_tiny_vit(hp, detect_tiny_vit_params(checkpoint));
    else
        detect_vit_encoder(checkpoint, hp);

    const std::set<int> layers = numbered_children(checkpoint, "mask_decoder.transformer.layers.");
    if (layers.empty()) throw Error(checkpoint.path, "SAM checkpoint without mask_decoder.transformer.layers");
    hp.decoder_depth = *layers.rbegin() + 1;
    hp.decoder_mlp_dim =
        to_int(shape_source(checkpoint, "mask_decoder.transformer.layers.0.mlp.lin1.weight", 2).shape[0], checkpoint,
               "mask decoder MLP width");
    // decoder_num_heads leaves no trace in the shapes (heads split one projection); the official value stays.
    hp.num_multimask_outputs = to_int(shape_source(checkpoint, "mask_decoder.mask_tokens.weight", 2).shape[0] - 1,
                                      checkpoint, "number of multimask outputs");
    check_sam_tensors(checkpoint, hp);
    return hp;
}

SamHyperParams hyper_params_for(ModelType type) {
    SamHyperParams hp;  // defaults are vit_b
    switch (type) {
        case ModelType::VitB:
        case ModelType::MedSam: return hp;
        case ModelType::VitL:
            hp.encoder_embed_dim = 1024;
            hp.encoder_depth = 24;
            hp.encoder_num_heads = 16;
            hp.global_attn_indexes = {5, 11, 17, 23};
            return hp;
        case ModelType::VitH:
            hp.encoder_embed_dim = 1280;
            hp.encoder_depth = 32;
            hp.encoder_num_heads = 16;
            hp.global_attn_indexes = {7, 15, 23, 31};
            return hp;
        case ModelType::VitT: use_tiny_vit(hp, mobile_sam_tiny_vit_params()); return hp;
        case ModelType::LiteMedSam: use_tiny_vit(hp, lite_medsam_tiny_vit_params()); return hp;
        case ModelType::Auto:
        case ModelType::Custom: break;
    }
    throw Error("",
                "model type auto/custom has no fixed architecture; read it from the checkpoint "
                "(detect_hyper_params)");
}

}  // namespace sqasam::sam
