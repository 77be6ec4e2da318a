#pragma once
// The resamplers the official pipelines use, reproduced operation by operation so that our model input is the
// official one bit for bit:
// - SAM's ResizeLongestSide (torchvision resize of a PIL image) = Pillow's bilinear Image.resize;
// - MedSAM's skimage.transform.resize(order=3, anti_aliasing=True, preserve_range=True).astype(uint8);
// - torch's F.interpolate(mode="bilinear", align_corners=False) for the mask logits.
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
// full_size, returning only its top-left crop_size corner (crop_size <= full_size): the crop SAM's
// postprocess_masks takes, without computing the rows and columns it drops.
void interpolate_bilinear(const float* in, cv::Size in_size, float* out, cv::Size full_size, cv::Size crop_size);

}  // namespace sqasam::sam
