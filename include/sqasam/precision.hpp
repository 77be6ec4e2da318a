#pragma once
// The arithmetic of the image encoder's matrix products.
#include <string>

namespace sqasam {

// fp32: float32 throughout. bf16: both operands of a product rounded to bfloat16 (8 significant bits), products
// accumulated and written in float32; everything between the products (LayerNorm, softmax, GELU, residuals) stays
// float32. bf16 is only for speed, and only some CPUs run it faster: see bf16_speedup().
enum class Precision { fp32, bf16 };

std::string to_string(Precision precision);            // "fp32", "bf16"
Precision precision_from_string(const std::string& name);  // throws sqasam::Error for any other name

// How many times faster bf16 matrix products run than fp32 ones on this CPU at the current thread count (fp32
// time / bf16 time of one ViT-B-sized product), measured once per process in under 0.1 s; 0 where the CPU
// has no bfloat16 matrix instructions. Having them is not enough: AMD Zen 4 (AVX512-BF16) runs bf16 products
// about 1.9x as fast, Intel Xeons with AMX faster still, but Intel Xeons without AMX (AVX512-BF16 alone) at about
// half the fp32 rate (bench/NOTES.md).
double bf16_speedup();
// The least bf16_speedup() for which bf16 is worth its rounding error.
constexpr double kBf16WorthwhileSpeedup = 1.25;
// bf16 where bf16_speedup() >= kBf16WorthwhileSpeedup, else fp32 (the CLI's --precision auto).
Precision fastest_precision();

}  // namespace sqasam
