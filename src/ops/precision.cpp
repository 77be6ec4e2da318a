// Names of the precisions, for options and reports.
#include "sqasam/error.hpp"
#include "sqasam/precision.hpp"

namespace sqasam {

std::string to_string(Precision precision) { return precision == Precision::bf16 ? "bf16" : "fp32"; }

Precision precision_from_string(const std::string& name) {
    if (name == "fp32") return Precision::fp32;
    if (name == "bf16") return Precision::bf16;
    throw Error("", "unknown precision '" + name + "' (expected fp32 or bf16)");
}

}  // namespace sqasam
