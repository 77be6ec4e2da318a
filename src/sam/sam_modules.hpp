#pragma once
// Single stages of SamModel, for the module tests against the official PyTorch blocks. Each runs the same code
// encode_image() and decode() run. Encoder activations are channels-last rows (batch x H x W x D); images and
// embeddings are channels-first (C x H x W), as in the official code.
#include <cstdint>
#include <vector>

#include "sam/sam_model.hpp"

namespace sqasam::sam {

struct SamModelProbe {
    // Block `block`'s Attention module (qkv, attention with relative positions, proj) on `batch` square grids of
    // its window size (global blocks: the whole token grid).
    static std::vector<float> encoder_attention(const SamModel& model, int block, const std::vector<float>& x,
                                                int64_t batch);
    static std::vector<float> encoder_block(const SamModel& model, int block, const std::vector<float>& x);
    static std::vector<float> neck(const SamModel& model, const std::vector<float>& x);  // -> C x E x E

    static std::vector<float> sparse_embedding(const SamModel& model, const FramePrompt& prompt);  // n x C
    static std::vector<float> dense_positional_encoding(const SamModel& model);                    // E*E x C
    static std::vector<float> no_mask_embedding(const SamModel& model);                            // C

    // src, pos: C x E x E; tokens: n x C. Outputs: queries n x C, keys E*E x C. fp32 models only (with bf16
    // products the last keys exist only rounded): std::logic_error otherwise.
    static void two_way_transformer(const SamModel& model, const std::vector<float>& src, const std::vector<float>& pos,
                                    const std::vector<float>& tokens, std::vector<float>& queries,
                                    std::vector<float>& keys);
    static std::vector<float> upscale(const SamModel& model, const std::vector<float>& src);  // C x E x E -> C/8 x 4E x 4E
    static DecoderOutput mask_decoder(const SamModel& model, const float* embedding, const std::vector<float>& sparse,
                                      bool multimask);
};

}  // namespace sqasam::sam
