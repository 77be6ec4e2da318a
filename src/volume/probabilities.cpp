// The Model-Confidence baseline of a volume, from a float probability volume or nnU-Net's CASE.npz.
#include <zip.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>

#include "io/npy.hpp"
#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"

namespace sqasam {
namespace {

struct ZipDiscard {
    void operator()(zip_t* archive) const { zip_discard(archive); }
};
struct ZipFileClose {
    void operator()(zip_file_t* file) const { zip_fclose(file); }
};

constexpr const char* kProbabilitiesEntry = "probabilities.npy";  // nnU-Net v2's np.savez_compressed key

// Mean over voxels of the largest class probability, streaming `probabilities` (C x K x J x I, in C or Fortran
// order: nnU-Net's transposes can leave it either way) so that only the running maximum (one float per voxel) is
// held.
double npz_confidence(const std::string& path, const VolumeGeometry& geometry) {
    int code = 0;
    std::unique_ptr<zip_t, ZipDiscard> archive(zip_open(path.c_str(), ZIP_RDONLY, &code));
    if (!archive) throw Error(path, "not a readable .npz (zip) archive; the file may be truncated");
    const zip_int64_t index = zip_name_locate(archive.get(), kProbabilitiesEntry, 0);
    if (index < 0) throw Error(path, "no 'probabilities' array in the .npz (nnU-Net writes it with --save_probabilities)");
    std::unique_ptr<zip_file_t, ZipFileClose> entry(zip_fopen_index(archive.get(), static_cast<zip_uint64_t>(index), 0));
    if (!entry) throw Error(path, "cannot open the 'probabilities' array in the .npz");
    auto read = [&](char* out, size_t count) {
        size_t done = 0;
        while (done < count) {
            const zip_int64_t n = zip_fread(entry.get(), out + done, count - done);
            if (n <= 0) throw Error(path, "the 'probabilities' array ends early or is damaged");
            done += static_cast<size_t>(n);
        }
    };
    const NpyHeader header = read_npy_header(read, path);
    const std::vector<int64_t> grid{geometry.size[2], geometry.size[1], geometry.size[0]};
    if (header.shape.size() != 4 || !std::equal(grid.begin(), grid.end(), header.shape.begin() + 1)) {
        std::string shape;
        for (int64_t d : header.shape) shape += (shape.empty() ? "" : " x ") + std::to_string(d);
        throw Error(path, "probabilities of shape " + shape + " do not match the image: expected C x " +
                              std::to_string(grid[0]) + " x " + std::to_string(grid[1]) + " x " +
                              std::to_string(grid[2]) + " (classes, k, j, i)");
    }
    size_t element = 0;
    if (header.descr == "<f2") element = 2;
    else if (header.descr == "<f4") element = 4;
    else if (header.descr == "<f8") element = 8;
    else throw Error(path, "probabilities of type " + header.descr + "; expected float16, float32 or float64");

    const size_t voxels = static_cast<size_t>(geometry.voxels());
    const size_t classes = static_cast<size_t>(header.shape[0]), total = classes * voxels;
    const size_t nx = static_cast<size_t>(geometry.size[0]), ny = static_cast<size_t>(geometry.size[1]),
                 nz = static_cast<size_t>(geometry.size[2]);
    // Our voxel index (i fastest) of the array's element e: in C order e = c N + v; in Fortran order
    // e = c + C (k + K (j + J i)).
    auto voxel_of = [&](size_t e) -> size_t {
        if (!header.fortran_order) return e % voxels;
        size_t rest = e / classes;
        const size_t k = rest % nz;
        rest /= nz;
        const size_t j = rest % ny, i = rest / ny;
        return i + nx * (j + ny * k);
    };
    std::vector<float> best(voxels, 0.0f);
    constexpr size_t kChunk = 1 << 16;
    std::vector<char> bytes(kChunk * element);
    for (size_t begin = 0; begin < total; begin += kChunk) {
        const size_t n = std::min(kChunk, total - begin);
        read(bytes.data(), n * element);
        for (size_t v = 0; v < n; ++v) {
            float p = 0;
            if (element == 2) {
                cv::float16_t half;
                std::memcpy(&half, bytes.data() + 2 * v, 2);
                p = static_cast<float>(half);
            } else if (element == 4) {
                std::memcpy(&p, bytes.data() + 4 * v, 4);
            } else {
                double d = 0;
                std::memcpy(&d, bytes.data() + 8 * v, 8);
                p = static_cast<float>(d);
            }
            if (!(p >= 0.0f && p <= 1.0f)) throw Error(path, "probabilities outside [0, 1] (or NaN)");
            float& running = best[voxel_of(begin + v)];
            running = std::max(running, p);
        }
    }
    if (header.shape[0] == 1)  // one foreground map: max(p, 1 - p)
        for (float& p : best) p = std::max(p, 1.0f - p);
    double sum = 0;
    for (float p : best) sum += p;
    return sum / static_cast<double>(voxels);
}

bool has_npz_extension(const std::string& path) {
    const std::string ext = std::filesystem::path(path).extension().string();
    return ext == ".npz" || ext == ".NPZ";
}

}  // namespace

double volume_model_confidence(const std::string& path, const VolumeGeometry& geometry) {
    if (has_npz_extension(path)) return npz_confidence(path, geometry);
    const ImageVolume probability = read_image_volume(path);
    const std::string difference = geometry_difference(probability.geometry, geometry);
    if (!difference.empty()) throw Error(path, "probability volume on another grid than the image: " + difference);
    double sum = 0;
    for (float p : probability.voxels) {
        if (!(p >= 0.0f && p <= 1.0f)) throw Error(path, "probabilities outside [0, 1] (or NaN)");
        sum += std::max(p, 1.0f - p);
    }
    return sum / static_cast<double>(probability.voxels.size());
}

}  // namespace sqasam
