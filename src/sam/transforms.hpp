#pragma once
// How an image and its prompts enter the network and how masks come out, for the two pipelines we reproduce:
// - SAM, the official SamPredictor: ResizeLongestSide (Pillow bilinear), (x - mean) / std, zero padding to the
//   square frame; masks upsampled 256 -> frame, cropped to the resized image, upsampled to the original size.
// - MedSAM, MedSAM_Inference.py (github.com/bowang-lab/MedSAM): skimage cubic resize straight to the square
//   frame, min-max scaling to [0, 1]; sigmoid of the 256 x 256 logits upsampled straight to the original size.
// - LiteMedSAM, CVPR24_LiteMedSAM_infer.py (bowang-lab/MedSAM, LiteMedSAM branch): OpenCV INTER_AREA resize of the
//   longest side to the 256 frame, min-max scaling to [0, 1], zero padding; boxes scaled by 256 / max(H, W) and
//   truncated to integers; masks as SAM's (the 256 x 256 logits already are the frame), sigmoid > 0.5 = logit > 0.
#include <vector>

#include <opencv2/core.hpp>

#include "sam/image_resize.hpp"
#include "sam/sam_model.hpp"
#include "sqasam/sam.hpp"

namespace sqasam::sam {

enum class Processing { Sam, MedSam, LiteMedSam };
Processing processing_for(ModelType type);

// Where the image lies in the network's square input frame (frame_size = SamHyperParams::image_size).
struct ImageFrame {
    cv::Size original_size;  // the image as given
    cv::Size input_size;     // the resized image, at the frame's top-left corner (the whole frame for MedSAM)
    int frame_size = 1024;
};

struct ModelInput {
    std::vector<float> tensor;  // 3 x frame_size x frame_size, planar RGB
    ImageFrame frame;
};

// `image`: CV_8UC3 RGB or CV_8UC1 gray (used as three equal channels); anything else is an Error.
ModelInput sam_model_input(const cv::Mat& image, int frame_size);
ModelInput medsam_model_input(const cv::Mat& image, int frame_size);
ModelInput lite_medsam_model_input(const cv::Mat& image, int frame_size);
ModelInput model_input(const cv::Mat& image, int frame_size, Processing processing);  // one of the three
// MedSAM's steps after its resize: (x - min) / max(max - min, 1e-8) of the frame_size x frame_size RGB image,
// computed in double and rounded to float as numpy / torch.tensor(...).float() do.
std::vector<float> medsam_tensor(const cv::Mat& resized_rgb);

// Prompt coordinates from original-image pixels to the frame: SamPredictor's apply_coords (x * new_w / old_w) or
// MedSAM's box / [W, H, W, H] * frame_size, in double, then float, or LiteMedSAM's int(v * frame_size / max(W, H))
// (its official script maps boxes only; points get the same mapping).
FramePrompt to_frame_prompt(const Prompt& prompt, const ImageFrame& frame, Processing processing);

// The decoder's outputs a MaskOutput keeps, of its `decoder_masks` (single-mask output first): [first, first + count).
struct MaskRange {
    int first = 0, count = 0;
};
MaskRange mask_range(MaskOutput output, int decoder_masks);

// How one image's masks come out of the decoder's low_res x low_res logits: the frame, the pipeline and its
// resamplings, built once per image and shared by all its prompts.
class MaskUpsampling {
public:
    MaskUpsampling(const ImageFrame& frame, int low_res, Processing processing);
    const ImageFrame& frame() const { return frame_; }
    Processing processing() const { return processing_; }
    int low_res() const { return low_res_; }
    // The top rows of the low-res logits that postprocess() reads: SAM and LiteMedSAM crop the frame to the
    // resized image, so the rows under the frame's padding are not needed; MedSAM resamples the whole square.
    int rows_read() const { return rows_read_; }
    // SAM and LiteMedSAM: low res -> frame (cropped to the resized image), then -> original size. MedSAM: only
    // to_original, low res -> original size.
    const BilinearResampler& to_frame() const { return to_frame_; }
    const BilinearResampler& to_original() const { return to_original_; }

private:
    ImageFrame frame_;
    Processing processing_;
    int low_res_;
    BilinearResampler to_frame_, to_original_;
    int rows_read_;
};

// The decoder's masks that options.output keeps (low_res wide logits, the top rows_read() rows at least) at the
// original size: masks (logit > 0), stability scores and, as options ask, the logits and the low-res logits (which
// needs all low_res rows).
// SAM: logits = bilinear low_res -> frame, crop to input_size, bilinear -> original size (postprocess_masks).
// MedSAM: p = bilinear(sigmoid(low-res logits)) -> original size, masks = p > 0.5 as MedSAM thresholds, and
// logits = log(p / (1 - p)) (limited to +-kMaxLogOdds where p rounds to 0 or 1), so masks = logits > 0 holds too.
// Stability scores follow SAM's calculate_stability_score (threshold 0, offset 1): the number of pixels with
// logit > 1 over the number with logit > -1, 0 when none exceeds -1.
inline constexpr float kMaxLogOdds = 20.0f;
MaskPrediction postprocess(const DecoderOutput& decoded, const MaskUpsampling& upsampling,
                           const PredictOptions& options);

// decode + postprocess of prompts on an image whose embedding the decoder has prepared.
std::vector<MaskPrediction> predict_masks(const SamModel& model, const MaskUpsampling& upsampling,
                                          const DecoderImage& image, const std::vector<Prompt>& prompts,
                                          const PredictOptions& options);

}  // namespace sqasam::sam
