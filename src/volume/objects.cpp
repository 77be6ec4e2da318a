// The objects of a label volume: each class's 3D components, the slices they are scored on, and their 2D
// cross-sections there with the prompts of sqa's 2D objects.
#include <algorithm>
#include <map>

#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"
#include "volume/volume_internal.hpp"

namespace sqasam {
namespace {

using Box = std::array<long, 6>;  // i0, j0, k0, i1, j1, k1 inclusive

void extend(Box& box, long i, long j, long k) {
    box[0] = std::min(box[0], i), box[1] = std::min(box[1], j), box[2] = std::min(box[2], k);
    box[3] = std::max(box[3], i), box[4] = std::max(box[4], j), box[5] = std::max(box[5], k);
}

constexpr Box kEmptyBox{1L << 40, 1L << 40, 1L << 40, -1, -1, -1};

std::map<int, Box> class_boxes(const LabelVolume& labels) {
    std::map<int, Box> boxes;
    const auto& size = labels.geometry.size;
    const int32_t* v = labels.labels.data();
    for (long k = 0; k < size[2]; ++k)
        for (long j = 0; j < size[1]; ++j)
            for (long i = 0; i < size[0]; ++i, ++v)
                if (*v != 0) extend(boxes.try_emplace(*v, kEmptyBox).first->second, i, j, k);
    return boxes;
}

// The 2D cross-section of component `id` on plane `index` (in box coordinates) of the component volume, as an
// object of the full slice: bounds offset by the box's in-plane corner.
PredictedObject cross_section(const std::vector<int32_t>& components, const std::array<long, 3>& extent,
                              const Box& box, int axis, long index, int class_label, int id) {
    const cv::Mat plane = volume_detail::extract_plane(components.data(), extent, axis, index, CV_32S);
    const cv::Mat inside = plane == id;
    PredictedObject object;
    object.class_label = class_label;
    object.component = id;
    const cv::Rect bounds = cv::boundingRect(inside);
    inside(bounds).convertTo(object.mask, CV_8U, 1.0 / 255.0);
    object.area = cv::countNonZero(object.mask);
    const cv::Moments moments = cv::moments(object.mask, true);
    const cv::Point2d centroid(moments.m10 / moments.m00, moments.m01 / moments.m00);
    const auto [row_axis, col_axis] = volume_detail::row_col_axes(axis);
    object.bounds = bounds + cv::Point(static_cast<int>(box[col_axis]), static_cast<int>(box[row_axis]));
    object.point = prompt_point(object.mask, centroid) + cv::Point2f(object.bounds.tl());
    return object;
}

}  // namespace

std::vector<long> choose_slices(long first, long last, int max_slices) {
    // The smallest power-of-two step that leaves at most max_slices multiples of it in [first, last]. Such an
    // interval always holds a multiple of the chosen step: the one below it left two or more.
    long step = 1;
    auto count = [&](long s) { return last / s - (first + s - 1) / s + 1; };  // first >= 0
    while (max_slices > 0 && count(step) > max_slices) step *= 2;
    std::vector<long> chosen;
    for (long slice = (first + step - 1) / step * step; slice <= last; slice += step) chosen.push_back(slice);
    return chosen;
}

std::vector<VolumeObject> find_volume_objects(const LabelVolume& labels, const VolumeObjectOptions& options) {
    if (options.connectivity != 6 && options.connectivity != 26)
        throw Error("", "3D connectivity must be 6 or 26, not " + std::to_string(options.connectivity));
    const int axis = options.slice_axis;
    if (axis < 0 || axis > 2) throw Error("", "slice axis must be 0, 1 or 2");
    std::vector<VolumeObject> objects;
    std::vector<int32_t> components;
    for (const auto& [class_label, box] : class_boxes(labels)) {
        const long count = volume_detail::label_components(labels, class_label, box, options.connectivity, components);
        const std::array<long, 3> extent{box[3] - box[0] + 1, box[4] - box[1] + 1, box[5] - box[2] + 1};
        std::vector<VolumeObject> found(static_cast<size_t>(count));
        for (VolumeObject& object : found) object.bounds = kEmptyBox;
        const int32_t* id = components.data();
        for (long k = 0; k < extent[2]; ++k)
            for (long j = 0; j < extent[1]; ++j)
                for (long i = 0; i < extent[0]; ++i, ++id) {
                    if (*id == 0) continue;
                    VolumeObject& object = found[static_cast<size_t>(*id - 1)];
                    ++object.voxels;
                    extend(object.bounds, box[0] + i, box[1] + j, box[2] + k);
                }
        for (long c = 0; c < count; ++c) {
            VolumeObject& object = found[static_cast<size_t>(c)];
            if (object.voxels < options.min_voxels) continue;
            object.class_label = class_label;
            object.component = static_cast<int>(c + 1);
            // A connected component's slices along an axis are one run, from its first to its last.
            object.n_slices = static_cast<int>(object.bounds[axis + 3] - object.bounds[axis] + 1);
            for (long slice : choose_slices(object.bounds[axis], object.bounds[axis + 3], options.max_slices)) {
                object.slices.push_back(slice);
                object.cross_sections.push_back(
                    cross_section(components, extent, box, axis, slice - box[axis], class_label, object.component));
            }
            objects.push_back(std::move(object));
        }
    }
    return objects;
}

}  // namespace sqasam
