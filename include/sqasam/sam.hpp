#pragma once
// Segment Anything in C++: load an official checkpoint, embed an image once, prompt it many times.
// Coordinates are in original-image pixels, as in the official SamPredictor.predict().
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace sqasam {

// Vit* are the official SAM image encoders; MedSam is a vit_b checkpoint with MedSAM's own preprocessing
// (direct resize to 1024x1024, min-max scaling to [0,1]) and its postprocessing. Auto reads the
// architecture from the checkpoint's tensor shapes (it cannot tell MedSAM from SAM vit_b: say MedSam).
enum class ModelType { Auto, VitB, VitL, VitH, MedSam, Custom };

std::string to_string(ModelType type);
ModelType model_type_from_string(const std::string& name);  // "vit_b", "vit_l", "vit_h", "medsam", "auto"

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

// One prompt's result; K = 3 with multimask output, 1 without. Arrays are row-major K x H x W.
struct MaskPrediction {
    int num_masks = 0, height = 0, width = 0;
    std::vector<float> logits;          // K x H x W at the image's size
    std::vector<uint8_t> masks;         // K x H x W, 1 where logits > 0
    std::vector<float> low_res_logits;  // K x 256 x 256, the decoder's output
    std::vector<float> iou_predictions; // K
    std::vector<float> stability_scores;// K: IoU of (logits > 1) and (logits > -1)
    cv::Mat mask(int k) const;          // CV_8U H x W view-copy of mask k (0/1)
};

struct SamInfo {
    ModelType type = ModelType::Auto;
    int encoder_embed_dim = 0, encoder_depth = 0, encoder_num_heads = 0;
    std::vector<int> global_attn_indexes;
    std::string describe() const;
};

class SamModel;  // the network; defined in src/sam

class Sam {
public:
    // Reads a .pth (PyTorch zip) or .safetensors file; throws sqasam::Error naming the file and the problem.
    static Sam load(const std::string& checkpoint_path, ModelType type = ModelType::Auto);
    ~Sam();
    Sam(Sam&&) noexcept;
    Sam& operator=(Sam&&) noexcept;

    const SamInfo& info() const;
    const SamModel& model() const;

private:
    explicit Sam(std::unique_ptr<SamModel> model, SamInfo info);
    std::unique_ptr<SamModel> model_;
    SamInfo info_;
};

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

    MaskPrediction predict(const Prompt& prompt, bool multimask_output = true) const;
    std::vector<MaskPrediction> predict(const std::vector<Prompt>& prompts, bool multimask_output = true) const;

private:
    struct State;
    const Sam& sam_;
    std::unique_ptr<State> state_;
};

}  // namespace sqasam
