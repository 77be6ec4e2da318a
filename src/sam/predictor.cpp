// The public SAM API (include/sqasam/sam.hpp) over the network (sam_model) and the official pipelines
// (transforms).
#include <cstring>
#include <optional>
#include <sstream>

#include "sam/checkpoint.hpp"
#include "sam/sam_model.hpp"
#include "sam/transforms.hpp"
#include "sqasam/error.hpp"
#include "sqasam/sam.hpp"

namespace sqasam {
namespace {

bool same_tiny_vit(const sam::TinyVitParams& a, const sam::TinyVitParams& b) {
    return a.image_size == b.image_size && a.patch_embed_kernel == b.patch_embed_kernel &&
           a.embed_dims == b.embed_dims && a.depths == b.depths && a.num_heads == b.num_heads &&
           a.window_sizes == b.window_sizes;
}

bool same_encoder(const sam::SamHyperParams& a, const sam::SamHyperParams& b) {
    if (a.encoder_kind != b.encoder_kind) return false;
    if (a.encoder_kind == sam::EncoderKind::TinyVit) return same_tiny_vit(a.tiny_vit, b.tiny_vit);
    return a.encoder_embed_dim == b.encoder_embed_dim && a.encoder_depth == b.encoder_depth &&
           a.encoder_num_heads == b.encoder_num_heads && a.global_attn_indexes == b.global_attn_indexes;
}

// The official encoder whose shapes these are, or Custom.
ModelType official_type(const sam::SamHyperParams& hp) {
    for (ModelType type : {ModelType::VitB, ModelType::VitL, ModelType::VitH, ModelType::VitT, ModelType::LiteMedSam})
        if (same_encoder(hp, sam::hyper_params_for(type))) return type;
    return ModelType::Custom;
}

SamInfo info_for(ModelType type, const sam::SamHyperParams& hp) {
    SamInfo info;
    info.type = type;
    info.image_size = hp.image_size;
    if (hp.encoder_kind == sam::EncoderKind::TinyVit) {
        info.tiny_vit = true;
        info.encoder_embed_dim = hp.tiny_vit.embed_dims.back();
        info.encoder_num_heads = hp.tiny_vit.num_heads.back();
        for (int depth : hp.tiny_vit.depths) info.encoder_depth += depth;
        return info;
    }
    info.encoder_embed_dim = hp.encoder_embed_dim;
    info.encoder_depth = hp.encoder_depth;
    info.encoder_num_heads = hp.encoder_num_heads;
    info.global_attn_indexes = hp.global_attn_indexes;
    return info;
}

}  // namespace

std::string to_string(ModelType type) {
    switch (type) {
        case ModelType::Auto: return "auto";
        case ModelType::VitB: return "vit_b";
        case ModelType::VitL: return "vit_l";
        case ModelType::VitH: return "vit_h";
        case ModelType::MedSam: return "medsam";
        case ModelType::VitT: return "vit_t";
        case ModelType::LiteMedSam: return "lite_medsam";
        case ModelType::Custom: return "custom";
    }
    return "unknown";
}

ModelType model_type_from_string(const std::string& name) {
    for (ModelType type : {ModelType::Auto, ModelType::VitB, ModelType::VitL, ModelType::VitH, ModelType::MedSam,
                           ModelType::VitT, ModelType::LiteMedSam})
        if (name == to_string(type)) return type;
    throw Error("", "unknown model type '" + name +
                        "' (expected vit_b, vit_l, vit_h, medsam, vit_t, lite_medsam or auto)");
}

std::string SamInfo::describe() const {
    std::ostringstream out;
    if (tiny_vit) {
        out << to_string(type) << ": TinyViT encoder, " << image_size << "-pixel input, last stage "
            << encoder_embed_dim << " wide with " << encoder_num_heads << " heads, " << encoder_depth << " blocks";
        if (type == ModelType::LiteMedSam) out << "; LiteMedSAM pre- and postprocessing";
        return out.str();
    }
    out << to_string(type) << ": ViT encoder, embed " << encoder_embed_dim << ", depth " << encoder_depth << ", "
        << encoder_num_heads << " heads, global attention at ";
    for (size_t i = 0; i < global_attn_indexes.size(); ++i) out << (i ? "," : "") << global_attn_indexes[i];
    if (type == ModelType::MedSam) out << "; MedSAM pre- and postprocessing";
    return out.str();
}

cv::Mat MaskPrediction::mask(int k) const {
    if (k < 0 || k >= num_masks) throw Error("", "mask index " + std::to_string(k) + " out of range");
    cv::Mat out(height, width, CV_8U);
    std::memcpy(out.data, masks.data() + static_cast<size_t>(k) * height * width, static_cast<size_t>(height) * width);
    return out;
}

// ---- Sam ----

Sam::Sam(std::unique_ptr<sam::SamModel> model, SamInfo info) : model_(std::move(model)), info_(std::move(info)) {}
Sam::~Sam() = default;
Sam::Sam(Sam&&) noexcept = default;
Sam& Sam::operator=(Sam&&) noexcept = default;

Sam Sam::load(const std::string& checkpoint_path, ModelType type, Precision precision) {
    const sam::Checkpoint checkpoint = sam::load_checkpoint(checkpoint_path);
    const sam::SamHyperParams detected = sam::detect_hyper_params(checkpoint);
    const ModelType found = official_type(detected);
    if (type == ModelType::Auto || type == ModelType::Custom) {
        type = found;
    } else if (!same_encoder(detected, sam::hyper_params_for(type))) {
        const std::string asked = type == ModelType::MedSam ? "medsam (a vit_b encoder)" : to_string(type);
        throw Error(checkpoint_path,
                    "not a " + asked + " checkpoint (found " + info_for(found, detected).describe() + ")");
    }
    return Sam(std::make_unique<sam::SamModel>(checkpoint, detected, precision), info_for(type, detected));
}

const SamInfo& Sam::info() const { return info_; }
const sam::SamModel& Sam::model() const { return *model_; }

// ---- SamPredictor ----

struct SamPredictor::State {
    // The image's frame and how its masks come out; set last, so it holds a value when an image is set.
    std::optional<sam::MaskUpsampling> upsampling;
    std::vector<float> embedding;
    sam::DecoderImage decoder_image;  // the decoder's per-image work, shared by all prompts
};

SamPredictor::SamPredictor(const Sam& sam) : sam_(sam), state_(std::make_unique<State>()) {}
SamPredictor::~SamPredictor() = default;

void SamPredictor::set_image(const cv::Mat& rgb) {
    const sam::SamHyperParams& hp = sam_.model().hyper_params();
    const sam::Processing processing = sam::processing_for(sam_.info().type);
    const sam::ModelInput input = sam::model_input(rgb, hp.image_size, processing);
    state_->upsampling.reset();
    state_->embedding.resize(static_cast<size_t>(hp.prompt_embed_dim) * hp.embedding_size() * hp.embedding_size());
    sam_.model().encode_image(input.tensor.data(), state_->embedding.data());
    state_->decoder_image = sam_.model().prepare_decoder(state_->embedding.data());
    state_->upsampling.emplace(input.frame, hp.low_res_size(), processing);
}

bool SamPredictor::has_image() const { return state_->upsampling.has_value(); }

cv::Size SamPredictor::original_size() const {
    return state_->upsampling ? state_->upsampling->frame().original_size : cv::Size();
}

const std::vector<float>& SamPredictor::image_embedding() const {
    if (!has_image()) throw Error("", "image_embedding() called before set_image()");
    return state_->embedding;
}

MaskPrediction SamPredictor::predict(const Prompt& prompt, const PredictOptions& options) const {
    return std::move(predict(std::vector<Prompt>{prompt}, options).front());
}

std::vector<MaskPrediction> SamPredictor::predict(const std::vector<Prompt>& prompts,
                                                  const PredictOptions& options) const {
    if (!has_image()) throw Error("", "predict() called before set_image()");
    return sam::predict_masks(sam_.model(), *state_->upsampling, state_->decoder_image, prompts, options);
}

}  // namespace sqasam
