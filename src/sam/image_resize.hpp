#pragma once
// The resamplers the official pipelines use, reproduced operation by operation so that our model input is the
// official one bit for bit:
// - SAM's ResizeLongestSide (torchvision resize of a PIL image) = Pillow's bilinear Image.resize;
// - MedSAM's skimage.transform.resize(order=3, anti_aliasing=True, preserve_range=True).astype(uint8);
// - torch's F.interpolate(mode="bilinear", align_corners=False) for the mask logits.
#include <vector>

#include <opencv2/core.hpp>

namespace sqasam::sam {

// Pillow 9.4 Image.resize(size, Image.BILINEAR) of an 8-bit image (CV_8UC1..CV_8UC4): the triangle filter is
// widened by the scale factor when shrinking (antialiasing), coefficients are 22-bit fixed point, and the
// horizontal pass is rounded to 8 bits before the vertical one, all as Pillow's libImaging/Resample.c does.
cv::Mat pillow_resize_bilinear(const cv::Mat& image, cv::Size size);

// skimage 0.19 transform.resize(image, size, order=3, mode="reflect", anti_aliasing=True, preserve_range=True)
// followed by .astype(uint8), for an 8-bit image (CV_8UC1..CV_8UC4): scipy.ndimage's Gaussian prefilter
// (sigma = max(0, (factor - 1) / 2) per axis, mirror boundary), cubic B-spline prefilter and zoom (grid_mode,
// mirror), clipping to the input range, truncation to uint8. Computed in double in scipy's order of operations.
cv::Mat skimage_resize_cubic(const cv::Mat& image, cv::Size size);

// torch.nn.functional.interpolate(mode="bilinear", align_corners=False) of a planar float image from in_size to
// full_size, keeping only its top-left crop_size corner (crop_size <= full_size): the crop SAM's postprocess_masks
// takes, without computing the rows and columns it drops. Tap indices and weights are computed once, as
// upsample_bilinear2d does on the CPU (a float scale, the source position in double, clamped at 0). The work is
// split in two passes with the per-pixel formula's arithmetic unchanged: each needed source row is interpolated
// along x (t = a w0 + b w1), then each output row is interpolated along y from two of those (t0 h0 + t1 h1).
class BilinearResampler {
public:
    BilinearResampler(cv::Size in_size, cv::Size full_size, cv::Size crop_size);
    cv::Size in_size() const { return in_size_; }
    cv::Size out_size() const { return {int(x_.first.size()), int(y_.first.size())}; }
    // Source rows the output reads (0 .. source_rows() - 1); the x pass writes source_rows() x out width floats.
    int source_rows() const { return source_rows_; }

    void interpolate_x(const float* in, float* rows) const;              // all needed source rows, in parallel
    void interpolate_y(const float* rows, int y, float* out_row) const;  // output row y from the x pass
    void operator()(const float* in, float* out, std::vector<float>& scratch) const;  // both passes

private:
    struct Taps {
        std::vector<int> first, second;
        std::vector<float> first_weight, second_weight;
    };
    static Taps taps(int in_n, int out_n, int keep);
    cv::Size in_size_;
    Taps x_, y_;
    int source_rows_ = 0;
};

}  // namespace sqasam::sam
