// sqasam make-test-model: a small random-weight SAM as .safetensors, to try the whole pipeline (segment, score)
// without downloading a checkpoint. Its masks mean nothing.
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <numbers>
#include <random>
#include <string>

#include "cli/commands.hpp"
#include "sam/checkpoint.hpp"
#include "sam/hyper_params.hpp"
#include "sam/sam_model.hpp"

namespace sqasam::cli {
namespace {

// The official image/prompt/decoder geometry with a tiny encoder: embed 64, depth 2, 2 heads, block 1 global.
sam::SamHyperParams test_model_hyper_params() {
    sam::SamHyperParams hp;
    hp.encoder_embed_dim = 64;
    hp.encoder_depth = 2;
    hp.encoder_num_heads = 2;
    hp.global_attn_indexes = {1};
    return hp;
}

// Standard normal numbers from a specified engine (Box-Muller), so a seed gives the same file everywhere.
class Gaussian {
public:
    explicit Gaussian(uint64_t seed) : engine_(seed) {}
    float operator()() {
        const double u1 = (static_cast<double>(engine_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
        const double u2 = static_cast<double>(engine_() >> 11) * 0x1.0p-53;
        return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
    }

private:
    std::mt19937_64 engine_;
};

bool ends_with(const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Roughly the official initialisation, with no zero or unit tensors (every term of the network matters), and the
// mask hypernetworks' last layers scaled up so that logits reach trained-like magnitudes instead of +-0.3.
float scale_for(const std::string& name, const std::vector<int64_t>& shape) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    const bool hypernetwork_output = name.find("output_hypernetworks_mlps") != std::string::npos &&
                                     name.find(".layers.2.") != std::string::npos;
    if (name.find("positional_encoding_gaussian_matrix") != std::string::npos) return 1.0f;
    if (name.find("pos_embed") != std::string::npos || name.find("rel_pos") != std::string::npos) return 0.05f;
    if (shape.size() == 1) return hypernetwork_output ? 1.5f : 0.05f;
    for (const char* embedding : {"point_embeddings.", "not_a_point_embed.", "no_mask_embed.", "iou_token.",
                                  "mask_tokens."})
        if (name.find(embedding) != std::string::npos) return 1.0f;  // nn.Embedding tables: N(0, 1)
    return (hypernetwork_output ? 30.0f : 1.0f) / std::sqrt(3.0f * static_cast<float>(fan_in));
}

void make_test_model(const std::string& out, uint64_t seed) {
    const sam::SamHyperParams hp = test_model_hyper_params();
    Gaussian gaussian(seed);
    std::map<std::string, sam::Tensor> tensors;
    for (const auto& [name, shape] : sam::sam_tensor_shapes(hp)) {
        sam::Tensor& tensor = tensors[name];
        tensor.shape = shape;
        tensor.source_dtype = "float32";
        tensor.data.resize(static_cast<size_t>(tensor.numel()));
        const float scale = scale_for(name, shape);
        // LayerNorm gains stay near one.
        const float offset = shape.size() == 1 && ends_with(name, ".weight") ? 1.0f : 0.0f;
        for (float& v : tensor.data) v = offset + scale * gaussian();
    }
    sam::save_safetensors(out, tensors);
    std::cout << "wrote " << out << ": a random-weight SAM (encoder embed " << hp.encoder_embed_dim << ", depth "
              << hp.encoder_depth << ", " << hp.encoder_num_heads << " heads) for pipeline checks only; "
              << "its masks mean nothing\n";
}

}  // namespace

void add_test_model_command(CLI::App& app) {
    auto out = std::make_shared<std::string>();
    auto seed = std::make_shared<uint64_t>(0);
    CLI::App* cmd = app.add_subcommand(
        "make-test-model",
        "Write a small random-weight SAM (.safetensors) to try the pipeline without a real checkpoint; its masks "
        "mean nothing");
    cmd->add_option("--out", *out, "output .safetensors file")->required();
    cmd->add_option("--seed", *seed, "random seed")->capture_default_str();
    cmd->callback([out, seed] { make_test_model(*out, *seed); });
}

}  // namespace sqasam::cli
