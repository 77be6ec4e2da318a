// Reading volumes with ITK: NIfTI, NRRD, MetaImage files and DICOM series folders, with their geometry.
// The ImageIO is picked by extension (no factory registration), so only the linked formats are ever tried.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <type_traits>

#include <zlib.h>

#include <itkGDCMImageIO.h>
#include <itkGDCMSeriesFileNames.h>
#include <itkImage.h>
#include <itkImageFileReader.h>
#include <itkImageSeriesReader.h>
#include <itkMetaDataObject.h>
#include <itkMetaImageIO.h>
#include <itkNiftiImageIO.h>
#include <itkNrrdImageIO.h>
#include <itkVectorImage.h>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"
#include "volume/volume_internal.hpp"

namespace sqasam {
namespace fs = std::filesystem;
using volume_detail::FlaggedError;

namespace {

const std::array<std::string, 6> kVolumeExtensions{".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"};

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    return text;
}

bool ends_with(const std::string& text, const std::string& tail) {
    return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// ITK warns on stderr about things like non-orthogonal NIfTI sforms it then handles; the results record problems.
void quiet_itk() {
    static const bool silenced = [] {
        itk::Object::GlobalWarningDisplayOff();
        return true;
    }();
    (void)silenced;
}

itk::ImageIOBase::Pointer image_io_for(const fs::path& path) {
    const std::string name = lower(path.filename().string());
    if (ends_with(name, ".nii") || ends_with(name, ".nii.gz")) return itk::NiftiImageIO::New().GetPointer();
    if (ends_with(name, ".nrrd") || ends_with(name, ".nhdr")) return itk::NrrdImageIO::New().GetPointer();
    if (ends_with(name, ".mha") || ends_with(name, ".mhd")) return itk::MetaImageIO::New().GetPointer();
    throw Error(path.string(), "not a volume file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd)");
}

constexpr uint64_t kNiftiHeader = 348;

std::string promise_broken(uint64_t voxel_bytes, uint64_t total) {
    return "the header promises " + std::to_string(voxel_bytes) + " bytes of voxels, the file holds " +
           std::to_string(total) + " bytes in all";
}

// ITK's NIfTI reader takes a file that ends early as the whole file (the missing voxels come out as zeros), so a
// NIfTI file must hold at least the header and the voxel bytes its header promises, and a .gz one a complete
// gzip stream.
void check_nifti_complete(const std::string& path, uint64_t voxel_bytes) {
    if (!ends_with(lower(path), ".gz")) {
        const uint64_t size = fs::file_size(path);
        if (size < kNiftiHeader + voxel_bytes) throw Error(path, promise_broken(voxel_bytes, size));
        return;
    }
    gzFile file = gzopen(path.c_str(), "rb");
    if (!file) throw Error(path, "cannot open the file");
    std::vector<char> buffer(1 << 20);
    uint64_t total = 0;
    int n = 0;
    while ((n = gzread(file, buffer.data(), static_cast<unsigned>(buffer.size()))) > 0) total += static_cast<uint64_t>(n);
    int code = Z_OK;
    const std::string message = gzerror(file, &code);
    gzclose(file);
    if (n < 0 || code == Z_BUF_ERROR)
        throw Error(path, "truncated or damaged gzip data (" + (code == Z_BUF_ERROR ? "the file ends mid-stream" : message) +
                              ", " + std::to_string(total) + " bytes decompressed)");
    if (total < kNiftiHeader + voxel_bytes) throw Error(path, promise_broken(voxel_bytes, total));
}

template <typename Image>
VolumeGeometry geometry_of(const Image* image) {
    VolumeGeometry geometry;
    const auto size = image->GetLargestPossibleRegion().GetSize();
    for (int a = 0; a < 3; ++a) {
        geometry.size[a] = static_cast<long>(size[a]);
        geometry.spacing[a] = image->GetSpacing()[a];
        geometry.origin[a] = image->GetOrigin()[a];
        for (int b = 0; b < 3; ++b) geometry.direction[3 * a + b] = image->GetDirection()(a, b);
    }
    return geometry;
}

template <typename Pixel>
struct RawVolume {
    VolumeGeometry geometry;
    std::vector<Pixel> voxels;
};

// The file's shape as its header gives it: how many volumes (4th dimension x components per voxel) it holds.
struct FileShape {
    unsigned dimensions = 0;
    long volumes = 1;
    unsigned components = 1;
};

FileShape read_shape(itk::ImageIOBase* io, const std::string& path) {
    io->SetFileName(path);
    io->ReadImageInformation();
    FileShape shape;
    shape.dimensions = io->GetNumberOfDimensions();
    shape.components = io->GetNumberOfComponents();
    if (shape.dimensions > 4) throw Error(path, std::to_string(shape.dimensions) + "D images are not supported");
    if (shape.dimensions == 4) shape.volumes = static_cast<long>(io->GetDimensions(3));
    shape.volumes *= shape.components;
    return shape;
}

template <typename Image>
typename itk::ImageFileReader<Image>::Pointer reader_of(itk::ImageIOBase* io, const std::string& path) {
    auto reader = itk::ImageFileReader<Image>::New();
    reader->SetImageIO(io);
    reader->SetFileName(path);
    return reader;
}

// Reads one 3D volume of the file as Pixel: the whole file when it holds one, else volume `channel` (of the 4th
// dimension, or of the components per voxel).
template <typename Pixel>
RawVolume<Pixel> read_file(const std::string& path, std::optional<int> channel, const char* channel_option_hint) {
    quiet_itk();
    if (fs::is_directory(path)) throw Error(path, "is a folder, not a volume file");
    if (!fs::exists(path)) throw Error(path, "no such file");
    itk::ImageIOBase::Pointer io = image_io_for(path);
    RawVolume<Pixel> raw;
    try {
        const FileShape shape = read_shape(io, path);
        if (dynamic_cast<itk::NiftiImageIO*>(io.GetPointer())) check_nifti_complete(path, io->GetImageSizeInBytes());
        if (shape.dimensions < 3)
            throw Error(path, "a " + std::to_string(shape.dimensions) + "D image, not a volume");
        if (shape.volumes > 1 && !channel)
            throw FlaggedError("multichannel_image", path,
                               "holds " + std::to_string(shape.volumes) + " volumes (" +
                                   (shape.components > 1 ? "components per voxel" : "4D") + "); choose one with " +
                                   channel_option_hint);
        const int pick = channel.value_or(0);
        if (pick < 0 || pick >= shape.volumes)
            throw Error(path, "has " + std::to_string(shape.volumes) + " volume(s); channel " + std::to_string(pick) +
                                  " does not exist");
        if (shape.components > 1) {
            using Image = itk::VectorImage<Pixel, 3>;
            auto reader = reader_of<Image>(io, path);
            reader->Update();
            const Image* image = reader->GetOutput();
            raw.geometry = geometry_of(image);
            raw.voxels.resize(static_cast<size_t>(raw.geometry.voxels()));
            const Pixel* buffer = image->GetBufferPointer();
            for (size_t v = 0; v < raw.voxels.size(); ++v) raw.voxels[v] = buffer[v * shape.components + pick];
        } else if (shape.dimensions == 4) {
            using Image = itk::Image<Pixel, 4>;
            auto reader = reader_of<Image>(io, path);
            reader->UpdateOutputInformation();
            auto region = reader->GetOutput()->GetLargestPossibleRegion();
            region.SetIndex(3, region.GetIndex(3) + pick);
            region.SetSize(3, 1);
            reader->GetOutput()->SetRequestedRegion(region);
            reader->Update();
            const Image* image = reader->GetOutput();
            raw.geometry = geometry_of(image);
            raw.voxels.resize(static_cast<size_t>(raw.geometry.voxels()));
            const auto buffered = image->GetBufferedRegion();
            const Pixel* buffer = image->GetBufferPointer() +
                                  (region.GetIndex(3) - buffered.GetIndex(3)) * static_cast<long>(raw.voxels.size());
            std::copy(buffer, buffer + raw.voxels.size(), raw.voxels.begin());
        } else {
            using Image = itk::Image<Pixel, 3>;
            auto reader = reader_of<Image>(io, path);
            reader->Update();
            const Image* image = reader->GetOutput();
            raw.geometry = geometry_of(image);
            const Pixel* buffer = image->GetBufferPointer();
            raw.voxels.assign(buffer, buffer + raw.geometry.voxels());
        }
    } catch (const itk::ExceptionObject& e) {
        throw Error(path, std::string("cannot read the volume: ") + e.GetDescription());
    }
    return raw;
}

ImageVolume read_dicom_series(const std::string& folder) {
    quiet_itk();
    ImageVolume volume;
    try {
        auto names = itk::GDCMSeriesFileNames::New();
        names->SetUseSeriesDetails(false);
        names->SetDirectory(folder);
        const std::vector<std::string> series = names->GetSeriesUIDs();
        if (series.empty()) throw Error(folder, "no DICOM series in the folder");
        if (series.size() > 1) {
            std::string uids;
            for (const std::string& uid : series) uids += (uids.empty() ? "" : ", ") + uid;
            throw FlaggedError("multiple_series", folder,
                               std::to_string(series.size()) + " DICOM series in one folder (" + uids +
                                   "); put each series in a folder of its own");
        }
        auto io = itk::GDCMImageIO::New();
        using Image = itk::Image<float, 3>;
        auto reader = itk::ImageSeriesReader<Image>::New();
        reader->SetImageIO(io);
        reader->SetFileNames(names->GetFileNames(series.front()));
        reader->Update();
        const Image* image = reader->GetOutput();
        volume.geometry = geometry_of(image);
        const float* buffer = image->GetBufferPointer();
        volume.voxels.assign(buffer, buffer + volume.geometry.voxels());
        std::string modality;
        if (itk::ExposeMetaData<std::string>(io->GetMetaDataDictionary(), "0008|0060", modality)) {
            modality.erase(modality.find_last_not_of(' ') + 1);
            volume.modality = modality;
        }
    } catch (const itk::ExceptionObject& e) {
        throw Error(folder, std::string("cannot read the DICOM series: ") + e.GetDescription());
    }
    return volume;
}

bool is_integer_component(itk::IOComponentEnum type) {
    using C = itk::IOComponentEnum;
    return type == C::UCHAR || type == C::CHAR || type == C::USHORT || type == C::SHORT || type == C::UINT ||
           type == C::INT || type == C::ULONG || type == C::LONG || type == C::ULONGLONG || type == C::LONGLONG;
}

// The binary-mask value of an unsigned 8/16-bit type (0 for other types: they have none).
int32_t binary_full_scale(itk::IOComponentEnum type) {
    if (type == itk::IOComponentEnum::UCHAR) return 255;
    if (type == itk::IOComponentEnum::USHORT) return 65535;
    return 0;
}

}  // namespace

bool is_volume_path(const fs::path& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) return true;
    const std::string name = lower(path.filename().string());
    return std::any_of(kVolumeExtensions.begin(), kVolumeExtensions.end(),
                       [&](const std::string& ext) { return ends_with(name, ext) && name.size() > ext.size(); });
}

std::string volume_stem(const fs::path& path) {
    const std::string name = path.filename().string();
    const std::string lowered = lower(name);
    for (const std::string& ext : kVolumeExtensions)
        if (ends_with(lowered, ext)) return name.substr(0, name.size() - ext.size());
    return name;
}

ImageVolume read_image_volume(const std::string& path, std::optional<int> channel) {
    if (fs::is_directory(path)) return read_dicom_series(path);
    RawVolume<float> raw = read_file<float>(path, channel, "--channel");
    ImageVolume volume;
    volume.geometry = raw.geometry;
    volume.voxels = std::move(raw.voxels);
    return volume;
}

LabelVolume read_label_volume(const std::string& path, std::optional<double> soft_threshold) {
    quiet_itk();
    if (fs::is_directory(path)) throw Error(path, "is a folder; label volumes must be files");
    itk::IOComponentEnum type;
    try {
        itk::ImageIOBase::Pointer io = image_io_for(path);
        if (!fs::exists(path)) throw Error(path, "no such file");
        read_shape(io, path);
        type = io->GetComponentType();
    } catch (const itk::ExceptionObject& e) {
        throw Error(path, std::string("cannot read the volume: ") + e.GetDescription());
    }
    LabelVolume volume;
    if (is_integer_component(type)) {
        RawVolume<int32_t> raw = read_file<int32_t>(path, std::nullopt, "a 3D label volume");
        volume.geometry = raw.geometry;
        volume.labels = std::move(raw.voxels);
        if (std::any_of(volume.labels.begin(), volume.labels.end(), [](int32_t v) { return v < 0; }))
            throw Error(path, "label volume has negative values");
        const int32_t full = binary_full_scale(type);
        const bool binary = full > 0 && std::all_of(volume.labels.begin(), volume.labels.end(),
                                                    [full](int32_t v) { return v == 0 || v == full; });
        volume.kind = binary ? MapKind::Binary : MapKind::Labels;
        if (binary)
            for (int32_t& v : volume.labels) v = v == full ? 1 : 0;
        return volume;
    }
    RawVolume<float> raw = read_file<float>(path, std::nullopt, "a 3D label volume");
    volume.geometry = raw.geometry;
    const cv::Mat values(1, static_cast<int>(raw.voxels.size()), CV_32F, raw.voxels.data());
    LabelMap map = label_map_from_values(values, MaskReading{std::nullopt, soft_threshold}, path);
    raw.voxels = {};
    volume.kind = map.kind;
    volume.labels.assign(map.labels.ptr<int32_t>(0), map.labels.ptr<int32_t>(0) + map.labels.total());
    return volume;
}

}  // namespace sqasam
