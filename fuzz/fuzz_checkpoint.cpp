// libFuzzer entry: arbitrary bytes through format detection, the zip reader, the restricted unpickler, the
// safetensors reader, architecture detection and reading every indexed tensor's values. Every rejection must be a
// sqasam::Error; any other exception, crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>

#include "sam/checkpoint.hpp"
#include "sam/sam_model.hpp"
#include "sqasam/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        sqasam::sam::Checkpoint checkpoint = sqasam::sam::load_checkpoint_from_memory(data, size, "fuzz-input");
        for (const auto& [name, tensor] : checkpoint.tensors) {
            try {  // values are read on demand: a bad storage must not hide the tensors after it
                checkpoint.read(name, tensor.shape);
            } catch (const sqasam::Error&) {
            }
        }
        sqasam::sam::detect_hyper_params(checkpoint);
    } catch (const sqasam::Error&) {
    }
    return 0;
}
