// Reading volumes (every format, DICOM, 4D, broken files), their geometry against SimpleITK and nibabel, label
// and probability volumes, and the windowing against MedSAM's rules in numpy. References: gen_volumes.py.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"
#include "test_support.hpp"
#include "volume/volume_internal.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

fs::path volumes_dir() { return fs::path(test::ref_dir()) / "volumes"; }
fs::path formats() { return volumes_dir() / "formats"; }

nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(test::read_text(path.string())); }

void expect_geometry(const VolumeGeometry& g, const nlohmann::json& reference, double tolerance,
                     const std::string& what) {
    for (int a = 0; a < 3; ++a) {
        if (reference.contains("size")) EXPECT_EQ(g.size[a], reference["size"][a].get<long>()) << what;
        EXPECT_NEAR(g.spacing[a], reference["spacing"][a].get<double>(), tolerance) << what << " spacing " << a;
        EXPECT_NEAR(g.origin[a], reference["origin"][a].get<double>(), tolerance) << what << " origin " << a;
    }
    for (int e = 0; e < 9; ++e)
        EXPECT_NEAR(g.direction[e], reference["direction"][e].get<double>(), tolerance) << what << " direction " << e;
}

// Voxels [k, j, i] from numpy against ours (i fastest): the same order in memory.
void expect_voxels(const std::vector<float>& ours, const fs::path& npy) {
    const test::NpyArray reference = test::read_npy(npy.string());
    ASSERT_EQ(ours.size(), reference.values.size());
    for (size_t v = 0; v < ours.size(); ++v) ASSERT_EQ(ours[v], reference.values[v]) << npy << " voxel " << v;
}

}  // namespace

TEST(VolumeIo, EveryFormatGivesTheSameVoxelsAndSimpleItksGeometry) {
    const nlohmann::json geometry = read_json(formats() / "geometry.json");
    for (const char* name : {"vol.nii.gz", "vol.nii", "vol.nrrd", "vol.nhdr", "vol.mha", "vol.mhd"}) {
        SCOPED_TRACE(name);
        const ImageVolume volume = read_image_volume((formats() / name).string());
        expect_geometry(volume.geometry, geometry["sitk"], 1e-6, name);
        expect_voxels(volume.voxels, formats() / "vol.npy");
    }
}

TEST(VolumeIo, NiftiGeometryMatchesNibabelsAffine) {
    const nlohmann::json geometry = read_json(formats() / "geometry.json");
    const ImageVolume volume = read_image_volume((formats() / "vol.nii.gz").string());
    // nibabel's affine holds float32 spacing: 1e-6 of relative precision.
    expect_geometry(volume.geometry, geometry["nibabel"], 1e-6, "nibabel");
}

TEST(VolumeIo, DicomSeriesFolderReadsAsOneVolumeWithItsModality) {
    const nlohmann::json geometry = read_json(formats() / "geometry.json");
    const ImageVolume volume = read_image_volume((formats() / "dicom").string());
    expect_geometry(volume.geometry, geometry["dicom"], 1e-4, "dicom");
    EXPECT_EQ(volume.modality, "CT");
    expect_voxels(volume.voxels, formats() / "vol.npy");
}

TEST(VolumeIo, DicomFolderWithTwoSeriesIsFlagged) {
    try {
        read_image_volume((formats() / "dicom_two").string());
        FAIL() << "two series were read as one";
    } catch (const volume_detail::FlaggedError& e) {
        EXPECT_EQ(e.flag(), "multiple_series");
        EXPECT_NE(std::string(e.what()).find("2 DICOM series"), std::string::npos) << e.what();
    }
}

TEST(VolumeIo, FourDimensionalImageNeedsAChannel) {
    try {
        read_image_volume((formats() / "vol4d.nii.gz").string());
        FAIL() << "a 4D image was read without a channel";
    } catch (const volume_detail::FlaggedError& e) {
        EXPECT_EQ(e.flag(), "multichannel_image");
        EXPECT_NE(std::string(e.what()).find("3 volumes"), std::string::npos) << e.what();
    }
    const ImageVolume second = read_image_volume((formats() / "vol4d.nii.gz").string(), 1);
    EXPECT_EQ(second.geometry.size, (std::array<long, 3>{20, 16, 7}));
    expect_voxels(second.voxels, formats() / "vol4d_1.npy");
    EXPECT_THROW(read_image_volume((formats() / "vol4d.nii.gz").string(), 3), Error);
}

TEST(VolumeIo, BrokenFilesAreErrorsNamingTheFile) {
    for (const char* name : {"truncated.nii.gz", "short_data.nii", "missing.nii.gz"}) {
        SCOPED_TRACE(name);
        const std::string path = (formats() / name).string();
        try {
            read_image_volume(path);
            FAIL() << "read a broken file";
        } catch (const Error& e) {
            EXPECT_EQ(e.file(), path);
        }
    }
    EXPECT_THROW(read_image_volume((formats() / "geometry.json").string()), Error);
}

TEST(VolumeIo, LabelVolumesFollowTheirType) {
    const LabelVolume labels = read_label_volume((formats() / "labels_u8.nii.gz").string());
    EXPECT_EQ(labels.kind, MapKind::Labels);
    long ones = 0, threes = 0;
    for (int32_t v : labels.labels) ones += v == 1, threes += v == 3;
    EXPECT_EQ(ones, 4 * 6 * 3);
    EXPECT_EQ(threes, 4 * 2 * 4);

    const LabelVolume as_float = read_label_volume((formats() / "labels_float.nii.gz").string());
    EXPECT_EQ(as_float.kind, MapKind::Labels);
    EXPECT_EQ(as_float.labels, labels.labels);

    // {0, 255} in 8 bits is a binary mask: foreground label 1 wherever any class was.
    const LabelVolume binary = read_label_volume((formats() / "labels_binary255.nii.gz").string());
    EXPECT_EQ(binary.kind, MapKind::Binary);
    for (size_t v = 0; v < labels.labels.size(); ++v) ASSERT_EQ(binary.labels[v], labels.labels[v] == 3 ? 1 : 0);

    const LabelVolume soft = read_label_volume((formats() / "soft.nii.gz").string());
    EXPECT_EQ(soft.kind, MapKind::Soft);
    const test::NpyArray thresholded = test::read_npy((formats() / "soft_thresholded.npy").string());
    for (size_t v = 0; v < soft.labels.size(); ++v) ASSERT_EQ(soft.labels[v], thresholded.values[v]);

    EXPECT_THROW(read_label_volume((formats() / "negative.nii.gz").string()), Error);
}

TEST(VolumeIo, GeometryDifferencesAreNamed) {
    VolumeGeometry a;
    a.size = {10, 10, 5};
    VolumeGeometry b = a;
    EXPECT_EQ(geometry_difference(a, b), "");
    b.origin[0] += 1e-5;  // far below the tolerance
    EXPECT_EQ(geometry_difference(a, b), "");
    b.spacing[2] = 1.5;
    EXPECT_NE(geometry_difference(a, b).find("spacing"), std::string::npos);
    b = a;
    b.size[2] = 4;
    EXPECT_NE(geometry_difference(a, b).find("size 10x10x5 vs 10x10x4"), std::string::npos);
    b = a;
    b.direction[0] = -1;
    EXPECT_NE(geometry_difference(a, b).find("direction"), std::string::npos);
}

TEST(VolumeIo, NnunetProbabilitiesGiveNumpysModelConfidence) {
    const nlohmann::json reference = read_json(volumes_dir() / "reference.json");
    const fs::path root = volumes_dir() / "nnunet";
    for (const char* name : {"case_a", "case_b", "case_c"}) {
        SCOPED_TRACE(name);
        const LabelVolume pred = read_label_volume((root / "model_a" / (std::string(name) + ".nii.gz")).string());
        const double confidence =
            volume_model_confidence((root / "model_a" / (std::string(name) + ".npz")).string(), pred.geometry);
        // float16 probabilities summed in float32 by us, in float64 by numpy.
        EXPECT_NEAR(confidence, reference["nnunet"][name]["model_a"]["model_confidence"].get<double>(), 1e-6);
    }
    VolumeGeometry wrong;
    wrong.size = {40, 48, 12};  // i and j swapped: the npz is [c, k, j, i]
    EXPECT_THROW(volume_model_confidence((root / "model_a/case_a.npz").string(), wrong), Error);
    EXPECT_THROW(volume_model_confidence((root / "model_a/case_a.nii.gz").string(), wrong), Error);
}

TEST(VolumeWindowing, CtAndMrFollowMedsamsRules) {
    const ImageVolume ct = read_image_volume((volumes_dir() / "nnunet/imagesTs/case_a_0000.nii.gz").string());
    const WindowedVolume ct_gray = window_volume(ct, {});
    EXPECT_EQ(ct_gray.modality, Modality::CT);  // auto: the minimum is far below -500
    const test::NpyArray ct_reference = test::read_npy((volumes_dir() / "window_ct.npy").string());
    ASSERT_EQ(ct_gray.gray.size(), ct_reference.values.size());
    for (size_t v = 0; v < ct_gray.gray.size(); ++v) ASSERT_EQ(ct_gray.gray[v], ct_reference.values[v]) << v;

    const ImageVolume mr = read_image_volume((volumes_dir() / "mr.nii.gz").string());
    const WindowedVolume mr_gray = window_volume(mr, {});
    EXPECT_EQ(mr_gray.modality, Modality::MR);
    const test::NpyArray mr_reference = test::read_npy((volumes_dir() / "window_mr.npy").string());
    ASSERT_EQ(mr_gray.gray.size(), mr_reference.values.size());
    for (size_t v = 0; v < mr_gray.gray.size(); ++v) ASSERT_EQ(mr_gray.gray[v], mr_reference.values[v]) << v;

    // Asked for explicitly, CT windowing applies whatever the intensities.
    WindowRule rule;
    rule.modality = Modality::CT;
    rule.level = 100;
    rule.width = 50;
    const WindowedVolume narrow = window_volume(mr, rule);
    EXPECT_EQ(narrow.low, 75);
    EXPECT_EQ(narrow.high, 125);
}
