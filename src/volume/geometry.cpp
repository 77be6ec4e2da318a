// Volume grids: comparing them, choosing the slice axis, cutting slices.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "sqasam/volume.hpp"
#include "volume/volume_internal.hpp"

namespace sqasam {
namespace {

std::string number(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.6g", value);
    return text;
}

std::string triple(const double* values, const char* separator) {
    return number(values[0]) + separator + number(values[1]) + separator + number(values[2]);
}

std::string size_text(const std::array<long, 3>& size) {
    return std::to_string(size[0]) + "x" + std::to_string(size[1]) + "x" + std::to_string(size[2]);
}

}  // namespace

std::string to_string(const VolumeGeometry& geometry) {
    return size_text(geometry.size) + " @ " + triple(geometry.spacing.data(), "x") + " mm";
}

std::string geometry_difference(const VolumeGeometry& a, const VolumeGeometry& b, const GeometryTolerance& tolerance) {
    if (a.size != b.size) return "size " + size_text(a.size) + " vs " + size_text(b.size);
    for (int axis = 0; axis < 3; ++axis)
        if (std::abs(a.spacing[axis] - b.spacing[axis]) > tolerance.spacing * std::max(a.spacing[axis], b.spacing[axis]))
            return "spacing " + triple(a.spacing.data(), "x") + " vs " + triple(b.spacing.data(), "x") + " mm";
    const double unit = std::min({a.spacing[0], a.spacing[1], a.spacing[2]});
    for (int axis = 0; axis < 3; ++axis)
        if (std::abs(a.origin[axis] - b.origin[axis]) > tolerance.origin * unit)
            return "origin (" + triple(a.origin.data(), ", ") + ") vs (" + triple(b.origin.data(), ", ") + ") mm";
    for (int e = 0; e < 9; ++e)
        if (std::abs(a.direction[e] - b.direction[e]) > tolerance.direction)
            return "direction (" + triple(a.direction.data(), ", ") + "; " + triple(a.direction.data() + 3, ", ") +
                   "; " + triple(a.direction.data() + 6, ", ") + ") vs (" + triple(b.direction.data(), ", ") + "; " +
                   triple(b.direction.data() + 3, ", ") + "; " + triple(b.direction.data() + 6, ", ") + ")";
    return "";
}

int default_slice_axis(const VolumeGeometry& geometry) {
    int axis = 2;
    for (int a = 1; a >= 0; --a)
        if (geometry.spacing[a] > geometry.spacing[axis]) axis = a;
    return axis;
}

cv::Mat volume_slice(const uint8_t* voxels, const VolumeGeometry& geometry, int axis, long index) {
    return volume_detail::extract_plane(voxels, geometry.size, axis, index, CV_8U);
}

cv::Mat volume_slice(const int32_t* voxels, const VolumeGeometry& geometry, int axis, long index) {
    return volume_detail::extract_plane(voxels, geometry.size, axis, index, CV_32S);
}

}  // namespace sqasam
