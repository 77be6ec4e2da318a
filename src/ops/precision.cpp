// Names of the precisions, for options and reports, and which one is faster on this CPU.
#include <algorithm>
#include <chrono>
#include <limits>
#include <random>
#include <vector>

#include "ops/ops.hpp"
#include "sqasam/error.hpp"
#include "sqasam/precision.hpp"

namespace sqasam {

std::string to_string(Precision precision) { return precision == Precision::bf16 ? "bf16" : "fp32"; }

Precision precision_from_string(const std::string& name) {
    if (name == "fp32") return Precision::fp32;
    if (name == "bf16") return Precision::bf16;
    throw Error("", "unknown precision '" + name + "' (expected fp32 or bf16)");
}

double bf16_speedup() {
    static const double speedup = [] {
        if (!ops::bf16_supported()) return 0.0;
        // A ViT-B-sized product (512 of the encoder's 768-wide rows by a 768 x 768 weight, 0.6 GFLOP): big enough
        // that the kernels' inner loops decide its time, small enough that the measurement takes under 0.1 s.
        // Calls alternate between the precisions and each keeps its fastest, so a passing load hits both alike.
        constexpr int64_t kRows = 512, kDim = 768;
        constexpr int kCalls = 5;
        std::mt19937 rng(0);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> x(kRows * kDim), weight(kDim * kDim), y(kRows * kDim);
        for (float& v : x) v = normal(rng);
        for (float& v : weight) v = 0.02f * normal(rng);
        ops::PackedMatrix fp32, bf16;
        fp32.pack(weight.data(), kDim, kDim, kDim, true, Precision::fp32);
        bf16.pack(weight.data(), kDim, kDim, kDim, true, Precision::bf16);
        double best_fp32 = std::numeric_limits<double>::infinity(), best_bf16 = best_fp32;
        for (int call = 0; call <= kCalls; ++call) {  // call 0 warms up: primitive creation, first touches
            for (const ops::PackedMatrix* matrix : {&fp32, &bf16}) {
                const auto start = std::chrono::steady_clock::now();
                matrix->multiply(x.data(), y.data(), kRows);
                const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                double& best = matrix == &fp32 ? best_fp32 : best_bf16;
                if (call > 0) best = std::min(best, seconds);
            }
        }
        return best_fp32 / best_bf16;
    }();
    return speedup;
}

Precision fastest_precision() { return bf16_speedup() >= kBf16WorthwhileSpeedup ? Precision::bf16 : Precision::fp32; }

}  // namespace sqasam
