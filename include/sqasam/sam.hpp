#pragma once
// Segment Anything in C++: load an official checkpoint, embed an image once, prompt it many times.
// Coordinates are in original-image pixels, as in the official SamPredictor.predict().
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "sqasam/precision.hpp"

namespace sqasam {

// Vit* are the official SAM image encoders; MedSam is a vit_b checkpoint with MedSAM's own preprocessing
// (direct resize to 1024x1024, min-max scaling to [0,1]) and its postprocessing. Auto reads the
// architecture from the checkpoint's tensor shapes (it cannot tell MedSAM from SAM vit_b: say MedSam); it reports
// Custom for shapes that match no official encoder (such as `sqasam make-test-model`'s small one).
// VitT is MobileSAM (TinyViT encoder, SAM's pipeline at 1024); LiteMedSam is LiteMedSAM (TinyViT encoder at a
// 256 input with the official CVPR24_LiteMedSAM_infer.py pre- and postprocessing); Auto tells both apart.
enum class ModelType { Auto, VitB, VitL, VitH, MedSam, VitT, LiteMedSam, Custom };

std::string to_string(ModelType type);
// "vit_b", "vit_l", "vit_h", "medsam", "vit_t", "lite_medsam", "auto"
ModelType model_type_from_string(const std::string& name);

struct PointPrompt {
    float x = 0, y = 0;
    int label = 1;  // 1 foreground, 0 background
};

struct BoxPrompt {
    float x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // XYXY, pixel coordinates
};

struct Prompt {
    std::vector<PointPrompt> points;
    std::optional<BoxPrompt> box;
};

// Which of the mask decoder's outputs a prediction holds. SAM's decoder computes all of them in one pass and the
// official multimask_output flag only picks: the single-mask output (False) or the 3 others (True).
enum class MaskOutput {
    Multimask,  // the 3 multimask outputs, multimask_output=True (the official default)
    Single,     // the single-mask output, multimask_output=False
    All,        // all 4 at the cost of one: mask 0 is Single's, masks 1..3 are Multimask's
};

struct PredictOptions {
    MaskOutput output = MaskOutput::Multimask;
    // Also fill MaskPrediction::logits (K x H x W floats), as the official predict(return_logits=True) returns
    // logits instead of masks. Off, no full-size floats are kept.
    bool return_logits = false;
    // Also fill MaskPrediction::low_res_logits (K x 256 x 256, the decoder's output, as the official predict
    // returns). Off, the decoder skips the low-res rows under the frame's padding, which no mask reads.
    bool return_low_res_logits = false;
};

// One prompt's result: K masks (3, 1 or 4 by MaskOutput). Arrays are row-major K x H x W.
// For MedSam, logits are the log-odds of MedSAM's upsampled probability (it upsamples sigmoid(low_res_logits),
// not the logits), within +-20, so that masks = logits > 0 still holds.
struct MaskPrediction {
    int num_masks = 0, height = 0, width = 0;
    std::vector<float> logits;          // K x H x W at the image's size, with PredictOptions::return_logits only
    std::vector<uint8_t> masks;         // K x H x W, 1 where the logit at the image's size is > 0
    std::vector<float> low_res_logits;  // K x 256 x 256, the decoder's output, with return_low_res_logits only
    std::vector<float> iou_predictions; // K
    // K: |logits > 1| / |logits > -1| at the image's size, the IoU of the mask thresholded one logit unit above
    // and below 0 (SAM's calculate_stability_score); 0 when no pixel exceeds -1.
    std::vector<float> stability_scores;
    cv::Mat mask(int k) const;          // CV_8U H x W copy of mask k (0/1)
};

struct SamInfo {
    ModelType type = ModelType::Auto;
    bool tiny_vit = false;  // TinyViT encoder: the fields below describe its last stage, depth counts all blocks
    int image_size = 1024;  // the network's square input
    int encoder_embed_dim = 0, encoder_depth = 0, encoder_num_heads = 0;
    std::vector<int> global_attn_indexes;
    // "vit_b: ViT encoder, embed 768, depth 12, 12 heads, global attention at 2,5,8,11",
    // "vit_t: TinyViT encoder, 1024-pixel input, last stage 320 wide with 10 heads, 12 blocks"
    std::string describe() const;
};

namespace sam {
class SamModel;  // the network; defined in src/sam
}

class Sam {
public:
    // Reads a .pth (PyTorch zip) or .safetensors file; throws sqasam::Error naming the file and the problem.
    // The image encoder, the mask decoder's large products (over image rows and upscaled pixels) and its token
    // MLPs compute in `precision` (bf16 falls back to fp32, with a warning, on CPUs without it); the rest of the
    // decoder is fp32.
    static Sam load(const std::string& checkpoint_path, ModelType type = ModelType::Auto,
                    Precision precision = Precision::fp32);
    ~Sam();
    Sam(Sam&&) noexcept;
    Sam& operator=(Sam&&) noexcept;

    const SamInfo& info() const;
    const sam::SamModel& model() const;

private:
    explicit Sam(std::unique_ptr<sam::SamModel> model, SamInfo info);
    std::unique_ptr<sam::SamModel> model_;
    SamInfo info_;
};

// Embeds one image at a time (the slow part) and answers any number of prompts on it. Keeps a reference to
// `sam`, which must outlive it.
class SamPredictor {
public:
    explicit SamPredictor(const Sam& sam);
    ~SamPredictor();

    // rgb: CV_8UC3 in RGB order (or CV_8UC1, used as three equal channels).
    void set_image(const cv::Mat& rgb);
    bool has_image() const;
    cv::Size original_size() const;
    // The 256 x 64 x 64 image embedding of the last set_image().
    const std::vector<float>& image_embedding() const;

    // A prompt needs a point or a box; labels are 0 or 1; a box has x0 <= x1, y0 <= y1 (sqasam::Error otherwise).
    MaskPrediction predict(const Prompt& prompt, const PredictOptions& options = {}) const;
    // Many prompts on the image at once: the same results as one at a time, in less time per prompt.
    std::vector<MaskPrediction> predict(const std::vector<Prompt>& prompts, const PredictOptions& options = {}) const;

private:
    struct State;
    const Sam& sam_;
    std::unique_ptr<State> state_;
};

}  // namespace sqasam
