#pragma once
// Reading model weights: PyTorch zip checkpoints (through our restricted unpickler) and safetensors.
//
// Loading builds an index only: every tensor's name, shape and source type, checked against the file's layout.
// The values stay in the file, which the Checkpoint keeps open, until a caller reads them, so building a model
// holds the packed model and one tensor in float32 at a time, not the whole state dict beside it.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sqasam::sam {

// Where a tensor's bytes lie in its open checkpoint file (defined in checkpoint.cpp).
struct TensorLocation;

// A named weight: its values are float32, row-major (contiguous) whatever the source strides were.
struct Tensor {
    std::vector<int64_t> shape;
    std::vector<float> data;   // the values when held in memory (tensors built in code); empty for a loaded one
    std::string source_dtype;  // "float32", "float16", "bfloat16", "float64" (also "int64", "int32", ... "bool")
    std::shared_ptr<const TensorLocation> location;  // set by the loaders: where Checkpoint::read finds the values
    int64_t numel() const;
    std::string shape_string() const;  // "[256, 3, 16, 16]"
};

struct Checkpoint {
    std::string path;
    std::map<std::string, Tensor> tensors;

    // Looks a weight up by name and checks its shape; throws sqasam::Error naming the file, key and shapes.
    const Tensor& get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
    // get(), then the values: `data` when it holds them, else read from the file now and not kept. A failed read
    // throws sqasam::Error naming the file and the tensor. Safe to call from several threads.
    std::vector<float> read(const std::string& name, const std::vector<int64_t>& expected_shape) const;
    bool has(const std::string& name) const;
};

// Detects the format from the file's first bytes (zip "PK" or safetensors' 8-byte header length).
Checkpoint load_checkpoint(const std::string& path);
Checkpoint load_torch_zip(const std::string& path);
Checkpoint load_safetensors(const std::string& path);
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors);

// The same readers over bytes in memory, which the Checkpoint copies; `name` stands for the file in error
// messages (the fuzzer uses these).
Checkpoint load_checkpoint_from_memory(const void* data, size_t size, const std::string& name);

}  // namespace sqasam::sam
