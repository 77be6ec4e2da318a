// libFuzzer entry: arbitrary bytes as the JSON header of a safetensors file with 256 data bytes after it, through
// the safetensors reader and reading every indexed tensor's values. Every rejection must be a sqasam::Error; any
// other exception, a crash (a stack overflow on deep nesting, say) or a sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "sam/checkpoint.hpp"
#include "sqasam/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0 || data[0] != '{') return 0;  // anything else is not detected as safetensors
    constexpr size_t kDataBytes = 256;
    const uint64_t header_size = size;
    std::vector<uint8_t> file(8 + size + kDataBytes);
    std::memcpy(file.data(), &header_size, 8);
    std::memcpy(file.data() + 8, data, size);
    for (size_t i = 0; i < kDataBytes; ++i) file[8 + size + i] = static_cast<uint8_t>(i * 37);
    try {
        const sqasam::sam::Checkpoint checkpoint =
            sqasam::sam::load_checkpoint_from_memory(file.data(), file.size(), "fuzz-input");
        for (const auto& [name, tensor] : checkpoint.tensors) checkpoint.read(name, tensor.shape);
    } catch (const sqasam::Error&) {
    }
    return 0;
}
