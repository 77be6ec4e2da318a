// libFuzzer entry: arbitrary bytes through format detection, the zip reader, the restricted unpickler, the
// safetensors reader and architecture detection. Every rejection must be a sqasam::Error; any other exception,
// crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>

#include "sam/checkpoint.hpp"
#include "sam/sam_model.hpp"
#include "sqasam/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        sqasam::sam::Checkpoint checkpoint = sqasam::sam::load_checkpoint_from_memory(data, size, "fuzz-input");
        sqasam::sam::detect_hyper_params(checkpoint);
    } catch (const sqasam::Error&) {
    }
    return 0;
}
