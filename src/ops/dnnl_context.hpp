#pragma once
// The one oneDNN engine of the process and each thread's stream, shared by every op that runs oneDNN primitives.
#include <oneapi/dnnl/dnnl.hpp>

namespace sqasam::ops {

const dnnl::engine& cpu_engine();
dnnl::stream& thread_stream();

}  // namespace sqasam::ops
