// 3D connected components of one class with ITK, inside the class's bounding box.
#include <algorithm>
#include <map>

#include <itkConnectedComponentImageFilter.h>
#include <itkImage.h>

#include "volume/volume_internal.hpp"

namespace sqasam::volume_detail {

long label_components(const LabelVolume& labels, int class_label, const std::array<long, 6>& box, int connectivity,
                      std::vector<int32_t>& components) {
    using Mask = itk::Image<uint8_t, 3>;
    using Components = itk::Image<int32_t, 3>;
    const std::array<long, 3> extent{box[3] - box[0] + 1, box[4] - box[1] + 1, box[5] - box[2] + 1};
    const std::array<long, 3>& size = labels.geometry.size;

    auto mask = Mask::New();
    Mask::RegionType region;
    region.SetSize({static_cast<itk::SizeValueType>(extent[0]), static_cast<itk::SizeValueType>(extent[1]),
                    static_cast<itk::SizeValueType>(extent[2])});
    mask->SetRegions(region);
    mask->Allocate();
    uint8_t* out = mask->GetBufferPointer();
    for (long k = 0; k < extent[2]; ++k)
        for (long j = 0; j < extent[1]; ++j) {
            const int32_t* row = labels.labels.data() + ((box[2] + k) * size[1] + box[1] + j) * size[0] + box[0];
            for (long i = 0; i < extent[0]; ++i) *out++ = row[i] == class_label;
        }

    auto filter = itk::ConnectedComponentImageFilter<Mask, Components>::New();
    filter->SetInput(mask);
    filter->SetFullyConnected(connectivity == 26);
    filter->SetBackgroundValue(0);
    filter->Update();
    const int32_t* ids = filter->GetOutput()->GetBufferPointer();
    const size_t count = static_cast<size_t>(extent[0] * extent[1] * extent[2]);

    // Renumber by first voxel in raster order, whatever order the filter produced, so ids are reproducible.
    std::map<int32_t, int32_t> renumbered;
    components.resize(count);
    for (size_t v = 0; v < count; ++v) {
        const int32_t id = ids[v];
        if (id == 0) {
            components[v] = 0;
            continue;
        }
        auto [it, inserted] = renumbered.try_emplace(id, static_cast<int32_t>(renumbered.size() + 1));
        components[v] = it->second;
    }
    return static_cast<long>(renumbered.size());
}

}  // namespace sqasam::volume_detail
