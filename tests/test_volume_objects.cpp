// 3D objects: component counts against scipy.ndimage.label, slice choice, slice axes, and cross-sections that
// carry the 2D prompts.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "sqasam/volume.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

fs::path nnunet() { return fs::path(test::ref_dir()) / "volumes" / "nnunet"; }

// A volume of `size` with the given labelled voxels.
LabelVolume labels_of(std::array<long, 3> size, const std::vector<std::array<long, 4>>& voxels) {
    LabelVolume volume;
    volume.geometry.size = size;
    volume.labels.assign(static_cast<size_t>(size[0] * size[1] * size[2]), 0);
    for (const auto& [i, j, k, label] : voxels)
        volume.labels[static_cast<size_t>((k * size[1] + j) * size[0] + i)] = static_cast<int32_t>(label);
    return volume;
}

}  // namespace

TEST(VolumeObjects, ComponentCountsMatchScipy) {
    const nlohmann::json reference =
        nlohmann::json::parse(test::read_text((fs::path(test::ref_dir()) / "volumes/reference.json").string()));
    for (const char* name : {"case_a", "case_b", "case_c"})
        for (const char* model : {"model_a", "model_b"})
            for (int connectivity : {26, 6}) {
                SCOPED_TRACE(std::string(name) + " " + model + " " + std::to_string(connectivity));
                const LabelVolume labels = read_label_volume((nnunet() / model / (std::string(name) + ".nii.gz")).string());
                VolumeObjectOptions options;
                options.connectivity = connectivity;
                options.slice_axis = 2;
                std::map<int, int> counts;
                std::map<int, long> voxels;
                for (const VolumeObject& object : find_volume_objects(labels, options)) {
                    ++counts[object.class_label];
                    voxels[object.class_label] += object.voxels;
                }
                const auto& expected = reference["nnunet"][name][model]["components"];
                EXPECT_EQ(counts.size(), expected.size());
                for (const auto& [label, count] : expected.items())
                    EXPECT_EQ(counts[std::stoi(label)], count[std::to_string(connectivity)].get<int>()) << label;
                if (std::string(model) == "model_a")
                    for (const auto& [label, count] : reference["nnunet"][name][model]["class_voxels"].items())
                        EXPECT_EQ(voxels[std::stoi(label)], count.get<long>()) << label;
            }
}

TEST(VolumeObjects, DiagonalNeighboursJoinOnlyWith26Connectivity) {
    const LabelVolume labels = labels_of({5, 5, 5}, {{1, 1, 1, 2}, {2, 2, 2, 2}, {4, 4, 4, 1}});
    VolumeObjectOptions options;
    options.slice_axis = 2;
    const auto joined = find_volume_objects(labels, options);
    ASSERT_EQ(joined.size(), 2u);
    EXPECT_EQ(joined[0].class_label, 1);
    EXPECT_EQ(joined[1].class_label, 2);
    EXPECT_EQ(joined[1].voxels, 2);
    EXPECT_EQ(joined[1].n_slices, 2);
    EXPECT_EQ(joined[1].bounds, (std::array<long, 6>{1, 1, 1, 2, 2, 2}));
    options.connectivity = 6;
    const auto apart = find_volume_objects(labels, options);
    ASSERT_EQ(apart.size(), 3u);
    EXPECT_EQ(apart[1].component, 1);  // raster order: (1,1,1) comes before (2,2,2)
    EXPECT_EQ(apart[1].bounds[0], 1);
    EXPECT_EQ(apart[2].component, 2);
    options.min_voxels = 2;
    options.connectivity = 26;
    const auto large = find_volume_objects(labels, options);
    ASSERT_EQ(large.size(), 1u);
    EXPECT_EQ(large[0].class_label, 2);
}

TEST(VolumeObjects, SlicesAreMultiplesOfThePowerOfTwoStepThatFitsTheCap) {
    EXPECT_EQ(choose_slices(100, 124, 10), (std::vector<long>{100, 104, 108, 112, 116, 120, 124}));  // 13 even ones
    EXPECT_EQ(choose_slices(100, 124, 1), (std::vector<long>{112}));
    EXPECT_EQ(choose_slices(101, 103, 1), (std::vector<long>{102}));
    std::vector<long> all;
    for (long s = 100; s <= 124; ++s) all.push_back(s);
    EXPECT_EQ(choose_slices(100, 124, 0), all);
    EXPECT_EQ(choose_slices(100, 124, 25), all);
    EXPECT_EQ(choose_slices(0, 0, 10), (std::vector<long>{0}));
}

TEST(VolumeObjects, EveryObjectGetsEvenlySpacedSlicesOverItsWholeExtent) {
    for (int cap : {1, 2, 3, 5, 10, 16})
        for (long first = 0; first < 40; ++first)
            for (long last = first; last < first + 140; ++last) {
                SCOPED_TRACE("slices " + std::to_string(first) + ".." + std::to_string(last) + ", cap " +
                             std::to_string(cap));
                const std::vector<long> chosen = choose_slices(first, last, cap);
                const long span = last - first + 1;
                ASSERT_FALSE(chosen.empty());
                ASSERT_LE(chosen.size(), static_cast<size_t>(cap));
                if (span <= cap) {
                    ASSERT_EQ(chosen.size(), static_cast<size_t>(span));
                    continue;
                }
                ASSERT_GE(chosen.size(), static_cast<size_t>((cap + 1) / 2));
                // One power-of-two step between them, every multiple of it inside the extent taken.
                const long step = chosen.size() > 1 ? chosen[1] - chosen[0] : 1;
                ASSERT_EQ(step & (step - 1), 0) << step;
                for (size_t s = 0; s < chosen.size(); ++s) {
                    ASSERT_EQ(chosen[s] % step, 0);
                    if (s > 0) ASSERT_EQ(chosen[s] - chosen[s - 1], step);
                }
                ASSERT_GE(chosen.front(), first);
                ASSERT_LE(chosen.back(), last);
                if (chosen.size() > 1) {
                    ASSERT_LT(chosen.front() - first, step);
                    ASSERT_LT(last - chosen.back(), step);
                }
            }
}

TEST(VolumeObjects, SliceAxesAndTheDefaultAxis) {
    VolumeGeometry geometry;
    geometry.size = {4, 3, 2};
    std::vector<uint8_t> voxels(24);
    for (size_t v = 0; v < voxels.size(); ++v) voxels[v] = static_cast<uint8_t>(v);  // v = i + 4 j + 12 k
    const cv::Mat axial = volume_slice(voxels.data(), geometry, 2, 1);
    EXPECT_EQ(axial.size(), cv::Size(4, 3));  // rows j, columns i
    EXPECT_EQ(axial.at<uint8_t>(2, 3), 3 + 4 * 2 + 12);
    const cv::Mat coronal = volume_slice(voxels.data(), geometry, 1, 2);
    EXPECT_EQ(coronal.size(), cv::Size(4, 2));  // rows k, columns i
    EXPECT_EQ(coronal.at<uint8_t>(1, 3), 3 + 8 + 12);
    const cv::Mat sagittal = volume_slice(voxels.data(), geometry, 0, 3);
    EXPECT_EQ(sagittal.size(), cv::Size(3, 2));  // rows k, columns j
    EXPECT_EQ(sagittal.at<uint8_t>(1, 2), 3 + 8 + 12);

    geometry.spacing = {0.8, 0.8, 2.5};
    EXPECT_EQ(default_slice_axis(geometry), 2);
    geometry.spacing = {3.0, 1.0, 1.0};
    EXPECT_EQ(default_slice_axis(geometry), 0);
    geometry.spacing = {1.0, 1.0, 1.0};
    EXPECT_EQ(default_slice_axis(geometry), 2);
}

TEST(VolumeObjects, CrossSectionsCarryThe2dPromptsOfTheirSlice) {
    const LabelVolume labels = read_label_volume((nnunet() / "model_a/case_a.nii.gz").string());
    VolumeObjectOptions options;
    options.slice_axis = 2;
    options.max_slices = 3;
    for (const VolumeObject& object : find_volume_objects(labels, options)) {
        ASSERT_EQ(object.slices.size(), object.cross_sections.size());
        EXPECT_LE(object.slices.size(), 3u);
        for (size_t s = 0; s < object.slices.size(); ++s) {
            const cv::Mat slice = volume_slice(labels.labels.data(), labels.geometry, 2, object.slices[s]);
            // Only this object's pixels of its class: the 2D objects of that mask are what the cross-section holds.
            cv::Mat only = cv::Mat::zeros(slice.size(), CV_32S);
            const PredictedObject& section = object.cross_sections[s];
            only(section.bounds).setTo(1, section.mask);
            EXPECT_EQ(cv::countNonZero((slice == object.class_label)(section.bounds) & (section.mask * 255)),
                      section.area);
            const auto flat = find_objects(only);
            if (flat.size() != 1) continue;  // several 2D pieces: one prompt, not comparable to one 2D object
            EXPECT_EQ(flat[0].bounds, section.bounds);
            EXPECT_EQ(flat[0].area, section.area);
            EXPECT_FLOAT_EQ(flat[0].point.x, section.point.x);
            EXPECT_FLOAT_EQ(flat[0].point.y, section.point.y);
        }
    }
}
