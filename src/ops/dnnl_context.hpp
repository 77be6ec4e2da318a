#pragma once
// The one oneDNN engine of the process and each thread's stream, shared by every op that runs oneDNN primitives,
// and the conversion of their bf16 operands.
#include <bit>
#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>

namespace sqasam::ops {

const dnnl::engine& cpu_engine();
dnnl::stream& thread_stream();

// Round to nearest, ties to even (as vcvtneps2bf16), by adding just under half a bf16 unit plus the kept
// part's lowest bit and truncating; NaN stays a quiet NaN. Branch-free, so loops over it vectorise.
inline uint16_t to_bf16(float x) {
    const uint32_t bits = std::bit_cast<uint32_t>(x);
    const uint16_t rounded = uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    return x != x ? uint16_t(0x7fc0) : rounded;
}

// count floats rounded to bfloat16 (to nearest, ties to even) into a per-thread buffer that grows, never shrinks
// (fresh pages are slow); valid until the calling thread's next call.
const uint16_t* to_bf16_scratch(const float* a, int64_t count);

}  // namespace sqasam::ops
