#pragma once
// The resamplers the official pipelines use, reproduced operation by operation so that our model input is the
// official one bit for bit:
// - SAM's ResizeLongestSide (torchvision resize of a PIL image) = Pillow's bilinear Image.resize;
// - MedSAM's skimage.transform.resize(order=3, anti_aliasing=True, preserve_range=True).astype(uint8);
// - torch's F.interpolate(mode="bilinear", align_corners=False) for the mask logits.
#include <cmath>
#include <utility>
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
    // Source rows the output reads (0 .. source_rows() - 1).
    int source_rows() const { return source_rows_; }
    // The two source rows output row y reads: the same or adjacent ones, non-decreasing in y.
    int first_source_row(int y) const { return y_.first[y]; }
    int second_source_row(int y) const { return y_.second[y]; }

    void interpolate_x(const float* in_row, float* out_row) const;  // one source row, out width wide
    // Output row y from the x passes of its two source rows: out[x] = blend(first[x], second[x], w0, w1) for
    // {w0, w1} = y_weights(y).
    void interpolate_y(const float* first_row, const float* second_row, int y, float* out_row) const;
    std::pair<float, float> y_weights(int y) const { return {y_.first_weight[y], y_.second_weight[y]}; }
    void operator()(const float* in, float* out, std::vector<float>& scratch) const;  // both passes, all rows

private:
    struct Taps {
        std::vector<int> first, second;
        std::vector<float> first_weight, second_weight;
    };
    static Taps taps(int in_n, int out_n, int keep);
    cv::Size in_size_;
    Taps x_, y_;
    int source_rows_ = 0;
    // The x pass in blocks of kBlock outputs whose taps lie within 2 kBlock source values of the block's first
    // tap: vector permutes of those values instead of gathers (slow on many CPUs). Per block its first tap, per
    // output its taps' offsets from it; empty where some block spans more (then the x pass gathers).
    static constexpr int kBlock = 16;
    std::vector<int> block_first_, first_offset_, second_offset_;
};

// One bilinear tap pair: a w0 + b w1, with the fused multiply-add written out. Left to the compiler, the same
// expression contracts differently in different loops (or not at all), and the streamed rows, the whole-image
// passes and the per-pixel formula would differ in the last bit.
inline float blend(float a, float b, float w0, float w1) { return std::fma(b, w1, a * w0); }

// A resampler's output rows one at a time, in increasing order, keeping only the x passes of the last two source
// rows it read (output rows read adjacent source rows, advancing with y). Chained, two resamplers stream an image
// through a few rows of cache instead of writing and rereading whole intermediate images.
class BilinearRowStream {
public:
    explicit BilinearRowStream(const BilinearResampler& resampler);
    // Output row y; source_row(r) gives source row r, read before it is called again. Any order of y is correct;
    // increasing y computes each x pass once.
    template <class SourceRow>
    void row(int y, SourceRow&& source_row, float* out_row) {
        const auto [first, second] = source_rows(y, source_row);
        resampler_.interpolate_y(first, second, y, out_row);
    }
    // The x passes of the two source rows output row y blends (with the resampler's y_weights(y)), for a caller
    // that uses the row's values without storing them.
    template <class SourceRow>
    std::pair<const float*, const float*> source_rows(int y, SourceRow&& source_row) {
        const float* first = x_pass(resampler_.first_source_row(y), source_row);
        return {first, x_pass(resampler_.second_source_row(y), source_row)};
    }

private:
    struct Slot {
        int row = -1;
        std::vector<float> values;
    };
    // Slots by parity: the two rows an output row reads are never two different rows of the same parity.
    template <class SourceRow>
    const float* x_pass(int source_row_index, SourceRow& source_row) {
        Slot& slot = slots_[source_row_index & 1];
        if (slot.row != source_row_index) {
            resampler_.interpolate_x(source_row(source_row_index), slot.values.data());
            slot.row = source_row_index;
        }
        return slot.values.data();
    }
    const BilinearResampler& resampler_;
    Slot slots_[2];
};

}  // namespace sqasam::sam
