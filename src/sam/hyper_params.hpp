#pragma once
// The tensor layout of an official SAM state dict, derived from its hyper-parameters (detect_hyper_params and
// hyper_params_for are declared in sam/sam_model.hpp).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "sam/checkpoint.hpp"
#include "sam/sam_model.hpp"

namespace sqasam::sam {

// Sizes the official build (segment_anything/build_sam.py) fixes and SamHyperParams does not carry.
constexpr int kIouHeadHiddenDim = 256;
constexpr int kIouHeadDepth = 3;
constexpr int kMaskInChans = 16;
constexpr int kAttentionDownsampleRate = 2;

// Every tensor Sam.state_dict() holds for these hyper-parameters, with its shape.
std::map<std::string, std::vector<int64_t>> sam_tensor_shapes(const SamHyperParams& hp);

// Throws sqasam::Error naming the checkpoint and the first missing, unexpected or misshapen tensor.
void check_sam_tensors(const Checkpoint& checkpoint, const SamHyperParams& hp);

}  // namespace sqasam::sam
