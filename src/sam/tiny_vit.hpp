#pragma once
// TinyViT, the image encoder of MobileSAM (model type vit_t: 1024 x 1024 input) and LiteMedSAM (lite_medsam:
// 256 x 256 input), after MobileSAM's mobile_sam/modeling/tiny_vit_sam.py and LiteMedSAM's tiny_vit_sam.py.
// Both produce SAM's 256 x 64 x 64 image embedding for the standard prompt encoder and mask decoder; they differ
// only in the patch embedding (two 3x3 stride-2 convolutions vs two 1x1 convolutions).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sam/checkpoint.hpp"
#include "sqasam/precision.hpp"

namespace sqasam::sam {

struct TinyVitParams {
    int image_size = 1024;
    int patch_embed_kernel = 3;  // 3: two 3x3 stride-2 convolutions (MobileSAM); 1: two 1x1 ones (LiteMedSAM)
    std::vector<int> embed_dims{64, 128, 160, 320};  // per stage; stage 0 is convolutional (MBConv blocks)
    std::vector<int> depths{2, 2, 6, 2};
    // Stage 0 has no attention: 0 there (the official lists carry unused values, 2 heads and window 7).
    std::vector<int> num_heads{0, 4, 5, 10};
    std::vector<int> window_sizes{0, 7, 14, 7};
    int mlp_ratio = 4;
    int mbconv_expand_ratio = 4;
    int local_conv_size = 3;
    int out_chans = 256;  // the neck's, i.e. the embedding's channels
    // Optional tensors of the checkpoint, which the encoder then checks (attention_bias_idxs against the table
    // it computes) or accepts unused (BatchNorm's num_batches_tracked counters only matter in training).
    bool has_bias_index_tables = false;
    bool has_batch_counters = true;
    // MobileSAM's TinyViT keeps the ImageNet classifier (norm_head, head) in its state dict; its forward never uses
    // it. 0: no classifier tensors.
    int classifier_classes = 1000;

    int patch_embed_stride() const { return patch_embed_kernel == 1 ? 1 : 2; }
    // The official PatchMerging keeps the resolution when it widens to 320, 448 or 576 channels (MobileSAM's
    // change so that the last stage stays at 64 x 64), and halves it otherwise.
    int merge_stride(int stage) const;   // the merge after `stage` (0 .. stages - 2)
    int total_stride() const;              // input pixels per embedding pixel: 16 (vit_t) or 4 (lite_medsam)
    std::vector<int> stage_grids() const;  // each stage's square grid side; the last one is the embedding's
};

// The official configurations: vit_t (MobileSAM, 1024 input, with the classifier) and lite_medsam (LiteMedSAM,
// 256 input, without).
TinyVitParams mobile_sam_tiny_vit_params();
TinyVitParams lite_medsam_tiny_vit_params();

// Reads the configuration off the tensor shapes of a checkpoint whose image encoder is a TinyViT
// (image_encoder.patch_embed.seq.* and image_encoder.layers.*); throws sqasam::Error naming the file otherwise.
TinyVitParams detect_tiny_vit_params(const Checkpoint& checkpoint);

// Every image_encoder.* tensor of the official state dict for these parameters, with its shape.
std::map<std::string, std::vector<int64_t>> tiny_vit_tensor_shapes(const TinyVitParams& params);

// The attention-bias index table of a window_size x window_size window, as the official Attention builds
// attention_bias_idxs: entry (i, j) numbers the offset (|dy|, |dx|) between tokens i and j in order of first
// appearance. Row-major, window_size^4 entries.
std::vector<int32_t> attention_bias_indices(int window_size);

// Hands out a tensor's values by state-dict name after checking its shape (SamModel passes its weight reader,
// which also records the tensors used).
using TensorLookup = std::function<const float*(const std::string& name, const std::vector<int64_t>& shape)>;

class TinyVitEncoder {
public:
    // With Precision::bf16 the attention stages' linear layers, the convolutional stage's 1x1 convolutions (with
    // centred inputs, ops::Linear) and the neck's two convolutions compute in bf16. The patch mergings' 1x1
    // convolutions stay fp32: with the real LiteMedSAM weights the plainly rounded 1x1 convolutions (BatchNorm
    // folded in) caused most of the bf16 error (embedding relative L2 2.5% -> 1.1%, worst mask IoU on three real
    // images 0.991 -> 0.997), and centring the mergings' too saved no measurable time. The 7 x 7 window attention,
    // the patch embedding and the depthwise convolutions are fp32 too (ops::attention runs 14 x 14 windows in bf16).
    TinyVitEncoder(const TensorLookup& lookup, const TinyVitParams& params, const std::string& checkpoint_path,
                   Precision precision = Precision::fp32);
    ~TinyVitEncoder();
    const TinyVitParams& params() const;
    int embedding_size() const;  // 64

    // image: 3 x S x S preprocessed (S = image_size); embedding: out_chans x E x E (E = embedding_size()).
    void encode(const float* image, float* embedding) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sqasam::sam
