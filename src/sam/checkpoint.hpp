#pragma once
// Reading model weights: PyTorch zip checkpoints (through our restricted unpickler) and safetensors.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sqasam::sam {

// A named weight, converted to float32 on load, row-major (contiguous) whatever the source strides were.
struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;
    std::string source_dtype;  // "float32", "float16", "bfloat16", "float64" (also "int64", "int32", ... "bool")
    int64_t numel() const;
    std::string shape_string() const;  // "[256, 3, 16, 16]"
};

struct Checkpoint {
    std::string path;
    std::map<std::string, Tensor> tensors;

    // Looks a weight up by name and checks its shape; throws sqasam::Error naming the file, key and shapes.
    const Tensor& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
    bool has(const std::string& name) const;
};

// Detects the format from the file's first bytes (zip "PK" or safetensors' 8-byte header length).
Checkpoint load_checkpoint(const std::string& path);
Checkpoint load_torch_zip(const std::string& path);
Checkpoint load_safetensors(const std::string& path);
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors);

// The same readers over bytes already in memory; `name` stands for the file in error messages (the fuzzer uses
// these).
Checkpoint load_checkpoint_from_memory(const void* data, size_t size, const std::string& name);

}  // namespace sqasam::sam
