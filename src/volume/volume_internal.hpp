#pragma once
// Pieces the volume files share; ITK stays inside itk_io.cpp and components.cpp.
#include <array>
#include <string>

#include <opencv2/core.hpp>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"

namespace sqasam::volume_detail {

// A per-case problem that has its own flag in the results (multichannel_image, multiple_series, ...).
class FlaggedError : public Error {
public:
    FlaggedError(std::string flag, const std::string& file, const std::string& problem)
        : Error(file, problem), flag_(std::move(flag)) {}
    const std::string& flag() const { return flag_; }

private:
    std::string flag_;
};

// The axes of a slice's rows and columns: the two others, the slower one for rows.
inline std::array<int, 2> row_col_axes(int axis) {
    switch (axis) {
        case 0: return {2, 1};
        case 1: return {2, 0};
        default: return {1, 0};
    }
}

// The plane `index` along `axis` of a volume of `size` (i fastest) as a rows x cols matrix of `type`.
template <typename T>
cv::Mat extract_plane(const T* voxels, const std::array<long, 3>& size, int axis, long index, int type) {
    const auto [row_axis, col_axis] = row_col_axes(axis);
    const std::array<long, 3> stride{1, size[0], size[0] * size[1]};
    cv::Mat plane(static_cast<int>(size[row_axis]), static_cast<int>(size[col_axis]), type);
    const T* base = voxels + index * stride[axis];
    for (int r = 0; r < plane.rows; ++r) {
        T* out = plane.ptr<T>(r);
        const T* row = base + r * stride[row_axis];
        for (int c = 0; c < plane.cols; ++c) out[c] = row[c * stride[col_axis]];
    }
    return plane;
}

// 3D connected components of one class inside a box of the label volume (ITK's ConnectedComponentImageFilter):
// `components` gets a component id per voxel of the box (0 outside the class), ids 1..count in raster order of
// their first voxel; returns count.
long label_components(const LabelVolume& labels, int class_label, const std::array<long, 6>& box, int connectivity,
                      std::vector<int32_t>& components);

}  // namespace sqasam::volume_detail
