#pragma once
// The SAM network (image encoder, prompt encoder, mask decoder), in the official implementation's frame:
// a 3 x 1024 x 1024 normalised, zero-padded input, and prompts in that 1024-pixel input frame.
#include <memory>
#include <string>
#include <vector>

#include "sam/checkpoint.hpp"
#include "sam/tiny_vit.hpp"
#include "sqasam/sam.hpp"

namespace sqasam::sam {

// The image encoder: SAM's ViT (the encoder_* fields below) or TinyViT (MobileSAM, LiteMedSAM: `tiny_vit`).
enum class EncoderKind { Vit, TinyVit };

struct SamHyperParams {
    EncoderKind encoder_kind = EncoderKind::Vit;
    TinyVitParams tiny_vit;  // used when encoder_kind is TinyVit
    int image_size = 1024;
    int patch_size = 16;  // input pixels per embedding pixel (TinyViT: its total stride, 16 or 4)
    int encoder_embed_dim = 768;
    int encoder_depth = 12;
    int encoder_num_heads = 12;
    int window_size = 14;
    std::vector<int> global_attn_indexes{2, 5, 8, 11};
    int mlp_ratio = 4;
    int prompt_embed_dim = 256;  // neck output channels, decoder width
    int decoder_depth = 2;
    int decoder_num_heads = 8;
    int decoder_mlp_dim = 2048;
    int num_multimask_outputs = 3;
    int embedding_size() const { return image_size / patch_size; }  // 64
    int low_res_size() const { return embedding_size() * 4; }       // 256
};

// Reads the hyper-parameters off the tensor shapes (embed dim, depth, global blocks, head dim).
SamHyperParams detect_hyper_params(const Checkpoint& checkpoint);
// The official vit_b / vit_l / vit_h (medsam = vit_b), vit_t (MobileSAM) and lite_medsam (LiteMedSAM).
SamHyperParams hyper_params_for(ModelType type);

// One prompt in the 1024 input frame (already resized, +0.5 is applied inside as the official code does).
struct FramePrompt {
    std::vector<float> point_xy;     // 2 * n_points
    std::vector<int> point_labels;   // n_points: 1, 0 (or -1 for padding, added internally)
    bool has_box = false;
    float box[4] = {0, 0, 0, 0};
};

// The mask decoder's outputs for one prompt: K = num_multimask_outputs + 1 masks in mask-token order (token 0 is
// the official multimask_output=False output, tokens 1.. the multimask ones), or the ones a selection kept.
struct DecoderOutput {
    // K x R x 256: all R = 256 rows of each low-res plane, or the top rows decode() was asked for (rounded up to
    // whole grid rows, 4 low-res rows each)
    std::vector<float> low_res_logits;
    std::vector<float> iou_predictions; // K
};
// The official multimask_output selection from all outputs: tokens 1.. (true) or token 0 (false).
DecoderOutput select_masks(const DecoderOutput& all, bool multimask_output);

// The mask decoder's work that depends on the image embedding alone, done once per image and shared by all its
// prompts: the image tokens (embedding + no-mask dense embedding), with the positional encoding, and the first
// two-way layer's projections of them (that layer sees the image before any prompt has changed it).
class DecoderImage {
public:
    DecoderImage();
    ~DecoderImage();
    DecoderImage(DecoderImage&&) noexcept;
    DecoderImage& operator=(DecoderImage&&) noexcept;
    bool empty() const { return !data_; }

    struct Data;  // defined with the decoder (sam_model.cpp)

private:
    friend class SamModel;
    std::unique_ptr<Data> data_;
};

class SamModel {
public:
    // The image encoder, the mask decoder's products over all image rows or upscaled pixels and its token MLPs
    // compute in `precision` (bf16: see sqasam::Precision; it falls back to fp32 with a warning where the CPU lacks
    // bf16). The prompt encoder and the decoder's other few-token products, norms and softmaxes are fp32.
    SamModel(const Checkpoint& checkpoint, const SamHyperParams& hp, Precision precision = Precision::fp32);
    ~SamModel();
    const SamHyperParams& hyper_params() const;
    int64_t decoder_mask_count() const;  // K of a full DecoderOutput
    Precision encoder_precision() const;  // the constructor's precision after any fallback (the decoder's too)

    // input: 3 x S x S (S = image_size) preprocessed; embedding: prompt_embed_dim x E x E.
    void encode_image(const float* input, float* embedding) const;

    DecoderImage prepare_decoder(const float* embedding) const;
    // All K outputs for each prompt. Prompts are decoded together (those with the same number of sparse rows in
    // one pass); each result equals the one of decoding that prompt alone. The image must come from this model's
    // prepare_decoder(). Safe to call from several threads at once. rows_needed > 0: only the top rows_needed rows
    // of the low-res planes are needed (the output upscaling is local, each row depends on its grid row alone), so
    // the rows below, e.g. those of the frame's padding, may be left out (see DecoderOutput).
    std::vector<DecoderOutput> decode(const DecoderImage& image, const std::vector<FramePrompt>& prompts,
                                      int rows_needed = 0) const;
    // One prompt with the official selection, preparing the image for this call alone.
    DecoderOutput decode(const float* embedding, const FramePrompt& prompt, bool multimask_output) const;

private:
    friend struct SamModelProbe;  // single stages for the module tests (sam/sam_modules.hpp)
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sqasam::sam
