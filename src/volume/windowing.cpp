// Intensities to 8-bit gray, as MedSAM's pre_CT_MR.py prepares CT and MR volumes for its slices.
#include <algorithm>
#include <cmath>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"

namespace sqasam {
namespace {

constexpr double kCtMinimumBelow = -500;  // Auto: a minimum below this is Hounsfield units (air is -1000)

// numpy.percentile(values, q) with its default (linear) method, including numpy's lerp, which interpolates from
// the upper neighbour when the fraction is 0.5 or more. Selects in place (values are reordered); q in [0, 100].
double numpy_percentile(std::vector<float>& values, double q) {
    const double position = (q / 100.0) * static_cast<double>(values.size() - 1);
    const double below = std::floor(position);
    const double t = position - below;
    const auto lower = values.begin() + static_cast<long>(below);
    std::nth_element(values.begin(), lower, values.end());
    const double a = *lower;
    const double b = t > 0 ? *std::min_element(lower + 1, values.end()) : a;
    const double difference = b - a;
    return t >= 0.5 ? b - difference * (1 - t) : a + difference * t;
}

Modality resolve(const ImageVolume& image, Modality asked) {
    if (asked != Modality::Auto) return asked;
    if (image.modality == "CT") return Modality::CT;
    if (image.modality == "MR") return Modality::MR;
    const auto minimum = std::min_element(image.voxels.begin(), image.voxels.end());
    return minimum != image.voxels.end() && *minimum < kCtMinimumBelow ? Modality::CT : Modality::MR;
}

}  // namespace

std::string to_string(Modality modality) {
    switch (modality) {
        case Modality::Auto: return "auto";
        case Modality::CT: return "ct";
        case Modality::MR: return "mr";
    }
    return "?";
}

Modality modality_from_string(const std::string& name) {
    if (name == "auto") return Modality::Auto;
    if (name == "ct") return Modality::CT;
    if (name == "mr") return Modality::MR;
    throw Error("", "unknown modality '" + name + "' (choose one of auto, ct, mr)");
}

WindowedVolume window_volume(const ImageVolume& image, const WindowRule& rule) {
    if (rule.width <= 0) throw Error("", "the CT window width must be positive");
    WindowedVolume out;
    out.geometry = image.geometry;
    out.modality = resolve(image, rule.modality);
    out.gray.assign(image.voxels.size(), 0);
    if (out.modality == Modality::CT) {
        out.low = rule.level - rule.width / 2;
        out.high = rule.level + rule.width / 2;
    } else {
        std::vector<float> positive;
        for (float v : image.voxels)
            if (v > 0) positive.push_back(v);
        if (positive.empty()) return out;  // nothing but background: an all-black volume
        out.low = numpy_percentile(positive, 0.5);
        out.high = numpy_percentile(positive, 99.5);
    }
    // MedSAM scales by the clipped volume's own minimum and maximum, which are the bounds unless the volume does
    // not reach them.
    double minimum = out.high, maximum = out.low;
    for (float v : image.voxels) {
        const double clipped = std::clamp<double>(v, out.low, out.high);
        minimum = std::min(minimum, clipped);
        maximum = std::max(maximum, clipped);
    }
    if (maximum <= minimum) return out;  // a constant volume: all black
    const bool keep_zero = out.modality == Modality::MR;
    for (size_t v = 0; v < image.voxels.size(); ++v) {
        if (keep_zero && image.voxels[v] == 0) continue;
        const double clipped = std::clamp<double>(image.voxels[v], out.low, out.high);
        out.gray[v] = static_cast<uint8_t>((clipped - minimum) / (maximum - minimum) * 255.0);
    }
    return out;
}

}  // namespace sqasam
