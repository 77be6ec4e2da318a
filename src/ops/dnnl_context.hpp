#pragma once
// The one oneDNN engine of the process and each thread's stream, shared by every op that runs oneDNN primitives,
// and the conversion of their bf16 operands.
#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>

namespace sqasam::ops {

const dnnl::engine& cpu_engine();
dnnl::stream& thread_stream();

// count floats rounded to bfloat16 (to nearest, ties to even) into a per-thread buffer that grows, never shrinks
// (fresh pages are slow); valid until the calling thread's next call.
const uint16_t* to_bf16_scratch(const float* a, int64_t count);

}  // namespace sqasam::ops
