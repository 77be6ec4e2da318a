// The SAM engine as the scorer's mask source. Kept apart so that code scoring with another mask source does not
// pull in the engine.
#include "sqasam/sqa.hpp"

namespace sqasam {

Segmenter sam_segmenter(SamPredictor& predictor) {
    return [&predictor](const cv::Mat& rgb) -> MaskSource {
        predictor.set_image(rgb);
        return [&predictor](const std::vector<Prompt>& prompts) {
            return predictor.predict(prompts, {.output = MaskOutput::All});
        };
    };
}

}  // namespace sqasam
