#pragma once
// The arithmetic of the image encoder's matrix products.
#include <string>

namespace sqasam {

// fp32: float32 throughout. bf16: both operands of a product rounded to bfloat16 (8 significant bits, twice the
// product rate on CPUs with AVX512-BF16), products accumulated and written in float32; everything between the
// products (LayerNorm, softmax, GELU, residuals) stays float32.
enum class Precision { fp32, bf16 };

std::string to_string(Precision precision);            // "fp32", "bf16"
Precision precision_from_string(const std::string& name);  // throws sqasam::Error for any other name

}  // namespace sqasam
