// The C++ SAM network against the official PyTorch blocks, block by block and as a whole, on the small random
// model tests/reference/gen_modules.py writes (a 3-block encoder on the full 1024 input, the official decoder).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "sam/checkpoint.hpp"
#include "sam/sam_model.hpp"
#include "sam/sam_modules.hpp"
#include "sqasam/error.hpp"
#include "test_support.hpp"

namespace sqasam::sam {
namespace {

std::string module_file(const std::string& name) { return test::ref_dir() + "/modules/" + name; }

std::vector<float> npy(const std::string& name) { return test::read_npy(module_file(name + ".npy")).values; }

// C x N (channels-first) to N x C rows.
std::vector<float> channels_last(const std::vector<float>& x, int64_t channels) {
    const int64_t n = int64_t(x.size()) / channels;
    std::vector<float> out(x.size());
    for (int64_t c = 0; c < channels; ++c)
        for (int64_t i = 0; i < n; ++i) out[i * channels + c] = x[c * n + i];
    return out;
}

SamHyperParams small_config() {
    std::ifstream in(module_file("config.json"));
    auto config = nlohmann::json::parse(in);
    SamHyperParams hp;
    hp.image_size = config["image_size"];
    hp.patch_size = config["patch_size"];
    hp.encoder_embed_dim = config["encoder_embed_dim"];
    hp.encoder_depth = config["encoder_depth"];
    hp.encoder_num_heads = config["encoder_num_heads"];
    hp.global_attn_indexes = config["encoder_global_attn_indexes"].get<std::vector<int>>();
    hp.window_size = config["window_size"];
    hp.prompt_embed_dim = config["prompt_embed_dim"];
    hp.decoder_depth = config["decoder_depth"];
    hp.decoder_num_heads = config["decoder_num_heads"];
    hp.decoder_mlp_dim = config["decoder_mlp_dim"];
    hp.num_multimask_outputs = config["num_multimask_outputs"];
    return hp;
}

// Records a measured error in the test report (--gtest_output=xml) so the margins stay visible.
void record(const std::string& what, double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", value);
    ::testing::Test::RecordProperty(what, text);
}

void expect_relative_l2(const std::vector<float>& ours, const std::vector<float>& reference, double tolerance,
                        const std::string& what = "relative_l2") {
    ASSERT_EQ(ours.size(), reference.size());
    const double error = test::relative_l2(ours, reference);
    record(what, error);
    EXPECT_LE(error, tolerance);
}

FramePrompt prompt_from_reference(const std::string& name) {
    FramePrompt prompt;
    prompt.point_xy = npy("prompt_" + name + "_coords");
    for (float label : npy("prompt_" + name + "_labels")) prompt.point_labels.push_back(int(label));
    if (std::ifstream(module_file("prompt_" + name + "_box.npy"))) {
        auto box = npy("prompt_" + name + "_box");
        prompt.has_box = true;
        std::copy(box.begin(), box.end(), prompt.box);
    }
    return prompt;
}

const char* const kPrompts[] = {"points", "box", "point_box"};

class SamModules : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        checkpoint_ = std::make_unique<Checkpoint>(load_checkpoint(module_file("sam_small.pth")));
        hp_ = small_config();
        model_ = std::make_unique<SamModel>(*checkpoint_, hp_);
    }
    static void TearDownTestSuite() {
        model_.reset();
        checkpoint_.reset();
    }
    static const SamModel& model() { return *model_; }
    static int64_t dim() { return hp_.encoder_embed_dim; }

    // Decoder logits within 1e-3 of the largest logit, IoU predictions within 1e-4.
    static void expect_decoder_matches(const DecoderOutput& ours, const std::string& tag) {
        auto masks = npy(tag + "_masks"), iou = npy(tag + "_iou");
        ASSERT_EQ(ours.low_res_logits.size(), masks.size()) << tag;
        const double logit_error = test::max_abs_diff(ours.low_res_logits, masks) / test::max_abs(masks);
        record(tag + "_logits_max_diff_over_max", logit_error);
        EXPECT_LE(logit_error, 1e-3) << tag;
        ASSERT_EQ(ours.iou_predictions.size(), iou.size()) << tag;
        const double iou_error = test::max_abs_diff(ours.iou_predictions, iou);
        record(tag + "_iou_max_diff", iou_error);
        EXPECT_LE(iou_error, 1e-4) << tag;
    }

    static std::unique_ptr<Checkpoint> checkpoint_;
    static std::unique_ptr<SamModel> model_;
    static SamHyperParams hp_;
};

std::unique_ptr<Checkpoint> SamModules::checkpoint_;
std::unique_ptr<SamModel> SamModules::model_;
SamHyperParams SamModules::hp_;

TEST_F(SamModules, WindowedAttentionWithRelativePositions) {
    auto x = npy("attn_window_in");
    const int64_t windows = int64_t(x.size()) / (hp_.window_size * hp_.window_size * dim());
    EXPECT_EQ(windows, 25);  // 64 tokens padded to 70: 5 x 5 windows
    expect_relative_l2(SamModelProbe::encoder_attention(model(), 0, x, windows), npy("attn_window_out"), 1e-5);
}

TEST_F(SamModules, GlobalAttentionWithRelativePositions) {
    expect_relative_l2(SamModelProbe::encoder_attention(model(), 1, npy("attn_global_in"), 1), npy("attn_global_out"), 1e-5);
}

TEST_F(SamModules, WindowedBlock) {
    expect_relative_l2(SamModelProbe::encoder_block(model(), 0, npy("block_window_in")), npy("block_window_out"), 1e-5);
}

TEST_F(SamModules, GlobalBlock) {
    expect_relative_l2(SamModelProbe::encoder_block(model(), 1, npy("block_global_in")), npy("block_global_out"), 1e-5);
}

TEST_F(SamModules, Neck) {
    expect_relative_l2(SamModelProbe::neck(model(), npy("neck_in")), npy("neck_out"), 1e-5);
}

TEST_F(SamModules, ImageEncoder) {
    auto input = npy("encoder_in"), reference = npy("encoder_out");
    std::vector<float> embedding(reference.size());
    model().encode_image(input.data(), embedding.data());
    expect_relative_l2(embedding, reference, 1e-4);
    // A second image through the reused buffers gives the same result.
    std::vector<float> again(reference.size());
    model().encode_image(input.data(), again.data());
    EXPECT_EQ(again, embedding);
}

TEST_F(SamModules, DensePositionalEncodingAndNoMaskEmbedding) {
    const int64_t channels = hp_.prompt_embed_dim;
    auto pe = SamModelProbe::dense_positional_encoding(model());
    auto reference = channels_last(npy("dense_pe"), channels);
    ASSERT_EQ(pe.size(), reference.size());
    EXPECT_LE(test::max_abs_diff(pe, reference), 1e-5);
    auto dense = channels_last(npy("dense_embedding"), channels);
    auto no_mask = SamModelProbe::no_mask_embedding(model());
    for (size_t i = 0; i < dense.size(); ++i) ASSERT_EQ(dense[i], no_mask[i % channels]);
}

TEST_F(SamModules, SparsePromptEmbeddings) {
    for (const char* name : kPrompts) {
        auto ours = SamModelProbe::sparse_embedding(model(), prompt_from_reference(name));
        auto reference = npy(std::string("prompt_") + name + "_sparse");
        ASSERT_EQ(ours.size(), reference.size()) << name;
        record(std::string(name) + "_max_diff", test::max_abs_diff(ours, reference));
        EXPECT_LE(test::max_abs_diff(ours, reference), 1e-5) << name;
    }
}

TEST_F(SamModules, TwoWayTransformer) {
    std::vector<float> queries, keys;
    SamModelProbe::two_way_transformer(model(), npy("transformer_src"), npy("transformer_pos"), npy("transformer_tokens"),
                                       queries, keys);
    expect_relative_l2(queries, npy("transformer_queries"), 1e-5, "queries_relative_l2");
    expect_relative_l2(keys, npy("transformer_keys"), 1e-5, "keys_relative_l2");
}

TEST_F(SamModules, OutputUpscaling) {
    expect_relative_l2(SamModelProbe::upscale(model(), npy("upscaling_in")), npy("upscaling_out"), 1e-5);
}

TEST_F(SamModules, MaskDecoderOnReferenceEmbedding) {
    auto embedding = npy("encoder_out");
    for (const char* name : kPrompts)
        for (bool multimask : {true, false}) {
            auto sparse = npy(std::string("prompt_") + name + "_sparse");
            std::string tag = std::string("decoder_") + name + (multimask ? "_multi" : "_single");
            expect_decoder_matches(SamModelProbe::mask_decoder(model(), embedding.data(), sparse, multimask), tag);
        }
}

// The whole network: our embedding of the reference input, our prompt encoding, our decoder.
TEST_F(SamModules, FullModelFromImageAndPrompts) {
    auto input = npy("encoder_in");
    std::vector<float> embedding(npy("encoder_out").size());
    model().encode_image(input.data(), embedding.data());
    for (const char* name : kPrompts)
        for (bool multimask : {true, false}) {
            auto output = model().decode(embedding.data(), prompt_from_reference(name), multimask);
            EXPECT_EQ(output.low_res_logits.size(), size_t(multimask ? 3 : 1) * 256 * 256);
            expect_decoder_matches(output, std::string("decoder_") + name + (multimask ? "_multi" : "_single"));
        }
}

// Several prompts in one decode() call, some decoded in one pass together, against the reference one by one.
TEST_F(SamModules, BatchedDecodeMatchesTheReference) {
    auto embedding = npy("encoder_out");
    const DecoderImage image = model().prepare_decoder(embedding.data());
    std::vector<FramePrompt> prompts;
    for (int repeat = 0; repeat < 2; ++repeat)
        for (const char* name : kPrompts) prompts.push_back(prompt_from_reference(name));
    const std::vector<DecoderOutput> all = model().decode(image, prompts);
    ASSERT_EQ(all.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
        const std::string name = kPrompts[i % std::size(kPrompts)];
        EXPECT_EQ(all[i].iou_predictions.size(), size_t(hp_.num_multimask_outputs + 1));
        for (bool multimask : {true, false})
            expect_decoder_matches(select_masks(all[i], multimask),
                                   "decoder_" + name + (multimask ? "_multi" : "_single"));
    }
}

// Asked for the top rows of the low-res planes, decode() upscales only the bands that reach them: the same values
// as the top of the full planes, bit for bit (the upscaling is local), and the same IoU predictions.
TEST_F(SamModules, TopRowsAreTheTopOfTheFullPlanes) {
    auto embedding = npy("encoder_out");
    const DecoderImage image = model().prepare_decoder(embedding.data());
    const std::vector<FramePrompt> prompts = {prompt_from_reference("box")};
    const DecoderOutput full = model().decode(image, prompts).front();
    const size_t masks = full.iou_predictions.size(), side = 256, full_plane = side * side;
    ASSERT_EQ(full.low_res_logits.size(), masks * full_plane);
    for (int rows_needed : {1, 145, 249, 256}) {
        SCOPED_TRACE(rows_needed);
        const DecoderOutput top = model().decode(image, prompts, rows_needed).front();
        EXPECT_EQ(top.iou_predictions, full.iou_predictions);
        const size_t plane = top.low_res_logits.size() / masks, rows = plane / side;
        ASSERT_EQ(plane, rows * side);
        EXPECT_GE(rows, size_t(rows_needed));
        EXPECT_LE(rows, side);
        for (size_t k = 0; k < masks; ++k) {
            const auto ours = top.low_res_logits.begin() + k * plane;
            EXPECT_TRUE(std::equal(ours, ours + plane, full.low_res_logits.begin() + k * full_plane)) << k;
        }
    }
}

TEST_F(SamModules, DecodeNeedsAnImageOfThisModel) {
    auto embedding = npy("encoder_out");
    const SamModel other(*checkpoint_, hp_);
    const DecoderImage foreign = other.prepare_decoder(embedding.data());
    const std::vector<FramePrompt> prompts = {prompt_from_reference("box")};
    EXPECT_THROW(model().decode(foreign, prompts), Error);
    EXPECT_THROW(model().decode(DecoderImage(), prompts), Error);
}

TEST_F(SamModules, ConcurrentDecodesMatchSerialOnes) {
    auto embedding = npy("encoder_out");
    const DecoderImage image = model().prepare_decoder(embedding.data());
    std::vector<FramePrompt> prompts;
    for (const char* name : kPrompts) prompts.push_back(prompt_from_reference(name));
    std::vector<DecoderOutput> serial, concurrent(prompts.size());
    for (const auto& prompt : prompts) serial.push_back(model().decode(image, {prompt}).front());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < prompts.size(); ++i)
        threads.emplace_back([&, i] { concurrent[i] = model().decode(image, {prompts[i]}).front(); });
    for (auto& thread : threads) thread.join();
    for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_LE(test::max_abs_diff(concurrent[i].low_res_logits, serial[i].low_res_logits), 1e-5) << kPrompts[i];
        EXPECT_LE(test::max_abs_diff(concurrent[i].iou_predictions, serial[i].iou_predictions), 1e-6) << kPrompts[i];
    }
}

TEST_F(SamModules, RejectsBadPointLabels) {
    FramePrompt prompt;
    prompt.point_xy = {10, 20};
    prompt.point_labels = {2};
    std::vector<float> embedding(hp_.prompt_embed_dim * 64 * 64, 0.0f);
    EXPECT_THROW(model().decode(embedding.data(), prompt, true), Error);
    prompt.point_labels = {1, 1};  // two labels, one point
    EXPECT_THROW(model().decode(embedding.data(), prompt, true), Error);
}

void expect_load_error(const Checkpoint& checkpoint, const SamHyperParams& hp, const std::string& mention) {
    try {
        SamModel model(checkpoint, hp);
        ADD_FAILURE() << "loaded a checkpoint that should fail (" << mention << ")";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find(mention), std::string::npos) << error.what();
        EXPECT_EQ(error.file(), checkpoint.path);
    }
}

TEST_F(SamModules, EveryCheckpointTensorMustBeKnown) {
    Checkpoint extra = *checkpoint_;
    extra.tensors["image_encoder.blocks.3.norm1.weight"] = extra.tensors.at("image_encoder.blocks.0.norm1.weight");
    expect_load_error(extra, hp_, "image_encoder.blocks.3.norm1.weight");

    Checkpoint missing = *checkpoint_;
    missing.tensors.erase("mask_decoder.iou_token.weight");
    expect_load_error(missing, hp_, "mask_decoder.iou_token.weight");

    Checkpoint misshapen = *checkpoint_;
    misshapen.tensors.at("image_encoder.blocks.1.attn.rel_pos_h").shape = {27, 16};
    expect_load_error(misshapen, hp_, "image_encoder.blocks.1.attn.rel_pos_h");

    SamHyperParams deeper = hp_;
    deeper.encoder_depth = 4;  // the checkpoint has only three blocks
    expect_load_error(*checkpoint_, deeper, "image_encoder.blocks.3");

    Checkpoint without_mask_input = *checkpoint_;  // mask_downscaling is optional: mask prompts are not used
    std::erase_if(without_mask_input.tensors, [](const auto& entry) {
        return entry.first.rfind("prompt_encoder.mask_downscaling.", 0) == 0;
    });
    EXPECT_NO_THROW(SamModel(without_mask_input, hp_));
}

}  // namespace
}  // namespace sqasam::sam
