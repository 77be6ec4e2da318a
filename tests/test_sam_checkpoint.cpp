// Checkpoint reading: torch.save archives through the restricted unpickler, safetensors, hostile and damaged
// files, values read on demand, and reading the SAM architecture off tensor shapes. Inputs come from
// tests/reference/gen_checkpoints.py.
#include <gtest/gtest.h>
#include <zip.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "sam/checkpoint.hpp"
#include "sam/hyper_params.hpp"
#include "sam/sam_model.hpp"
#include "sqasam/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam::sam;

namespace {

using sqasam::test::error_of;

std::string checkpoints_dir() { return sqasam::test::ref_dir() + "/checkpoints"; }
std::string checkpoint_file(const std::string& name) { return checkpoints_dir() + "/" + name; }

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_bytes(path)); }

// Every tensor must equal the float32 .npy torch wrote for it, bit for bit, and nothing may be extra or missing.
void expect_matches_npy_folder(const Checkpoint& checkpoint, const std::string& folder) {
    size_t files = 0;
    for (const auto& entry : fs::directory_iterator(folder)) {
        ++files;
        const std::string key = entry.path().stem().string();
        ASSERT_TRUE(checkpoint.has(key)) << key;
        const Tensor& tensor = checkpoint.tensors.at(key);
        sqasam::test::NpyArray expected = sqasam::test::read_npy(entry.path().string());
        ASSERT_EQ(expected.dtype, "<f4") << key;
        EXPECT_EQ(tensor.shape, expected.shape) << key;
        const std::vector<float> values = checkpoint.read(key, tensor.shape);
        ASSERT_EQ(values.size(), expected.values.size()) << key;
        EXPECT_EQ(std::memcmp(values.data(), expected.values.data(), values.size() * sizeof(float)), 0)
            << key << " differs from torch's float32 values";
    }
    EXPECT_GT(files, 0u);
    EXPECT_EQ(checkpoint.tensors.size(), files);
}

SamHyperParams hyper_params_from_json(const nlohmann::json& j) {
    SamHyperParams hp;
    hp.image_size = j.at("image_size");
    hp.patch_size = j.at("patch_size");
    hp.encoder_embed_dim = j.at("encoder_embed_dim");
    hp.encoder_depth = j.at("encoder_depth");
    hp.encoder_num_heads = j.at("encoder_num_heads");
    hp.window_size = j.at("window_size");
    hp.global_attn_indexes = j.at("global_attn_indexes").get<std::vector<int>>();
    hp.mlp_ratio = j.at("mlp_ratio");
    hp.prompt_embed_dim = j.at("prompt_embed_dim");
    hp.decoder_depth = j.at("decoder_depth");
    hp.decoder_num_heads = j.at("decoder_num_heads");
    hp.decoder_mlp_dim = j.at("decoder_mlp_dim");
    hp.num_multimask_outputs = j.at("num_multimask_outputs");
    return hp;
}

void expect_same_hyper_params(const SamHyperParams& actual, const SamHyperParams& expected) {
    EXPECT_EQ(actual.image_size, expected.image_size);
    EXPECT_EQ(actual.patch_size, expected.patch_size);
    EXPECT_EQ(actual.encoder_embed_dim, expected.encoder_embed_dim);
    EXPECT_EQ(actual.encoder_depth, expected.encoder_depth);
    EXPECT_EQ(actual.encoder_num_heads, expected.encoder_num_heads);
    EXPECT_EQ(actual.window_size, expected.window_size);
    EXPECT_EQ(actual.global_attn_indexes, expected.global_attn_indexes);
    EXPECT_EQ(actual.mlp_ratio, expected.mlp_ratio);
    EXPECT_EQ(actual.prompt_embed_dim, expected.prompt_embed_dim);
    EXPECT_EQ(actual.decoder_depth, expected.decoder_depth);
    EXPECT_EQ(actual.decoder_num_heads, expected.decoder_num_heads);
    EXPECT_EQ(actual.decoder_mlp_dim, expected.decoder_mlp_dim);
    EXPECT_EQ(actual.num_multimask_outputs, expected.num_multimask_outputs);
}

// A checkpoint that has the official tensor names and shapes but no values (full-size files are too big for CI).
Checkpoint shapes_only(const nlohmann::json& shapes, const std::string& name) {
    Checkpoint checkpoint;
    checkpoint.path = name;
    for (const auto& item : shapes.items())
        checkpoint.tensors[item.key()].shape = item.value().get<std::vector<int64_t>>();
    return checkpoint;
}

// A copy of a torch.save archive with every entry deflated (torch.save stores them), so reads must inflate.
void write_deflated_copy(const std::string& from, const std::string& to) {
    int code = 0;
    zip_t* source = zip_open(from.c_str(), ZIP_RDONLY, &code);
    ASSERT_NE(source, nullptr) << from;
    zip_t* target = zip_open(to.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
    ASSERT_NE(target, nullptr) << to;
    for (zip_int64_t i = 0; i < zip_get_num_entries(source, 0); ++i) {
        const auto index = static_cast<zip_uint64_t>(i);
        zip_source_t* entry = zip_source_zip(target, source, index, 0, 0, -1);
        ASSERT_NE(entry, nullptr);
        const zip_int64_t added = zip_file_add(target, zip_get_name(source, index, ZIP_FL_ENC_RAW), entry, 0);
        ASSERT_GE(added, 0);
        ASSERT_EQ(zip_set_file_compression(target, static_cast<zip_uint64_t>(added), ZIP_CM_DEFLATE, 9), 0);
    }
    ASSERT_EQ(zip_close(target), 0) << zip_strerror(target);
    zip_discard(source);
}

std::string safetensors_bytes(const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    const uint64_t size = header.size();
    std::memcpy(out.data(), &size, 8);
    return out + header + data;
}

}  // namespace

TEST(TorchZip, SmallSamStateDictIsBitExact) {
    Checkpoint checkpoint = load_checkpoint(checkpoint_file("small_sam.pth"));
    EXPECT_EQ(checkpoint.path, checkpoint_file("small_sam.pth"));
    expect_matches_npy_folder(checkpoint, checkpoint_file("small_sam"));
    for (const auto& entry : checkpoint.tensors) EXPECT_EQ(entry.second.source_dtype, "float32") << entry.first;
}

// Transposed, sliced, strided, permuted, shared-storage, 0-d and empty tensors, under three pickle layouts.
class TorchZipViews : public testing::TestWithParam<const char*> {};

TEST_P(TorchZipViews, AreCopiedContiguously) {
    expect_matches_npy_folder(load_checkpoint(checkpoint_file(GetParam())), checkpoint_file("views"));
}

INSTANTIATE_TEST_SUITE_P(Layouts, TorchZipViews,
                         testing::Values("views.pth", "views_protocol4.pth", "wrapped.pth", "byteorder_little.pth",
                                         "byteorder_big.pth"));

TEST(TorchZip, ReducedPrecisionAndIntegerTensorsConvertLikeTorch) {
    Checkpoint checkpoint = load_torch_zip(checkpoint_file("dtypes.pth"));
    expect_matches_npy_folder(checkpoint, checkpoint_file("dtypes"));
    EXPECT_EQ(checkpoint.tensors.at("half").source_dtype, "float16");
    EXPECT_EQ(checkpoint.tensors.at("bfloat16").source_dtype, "bfloat16");
    EXPECT_EQ(checkpoint.tensors.at("double").source_dtype, "float64");
    EXPECT_EQ(checkpoint.tensors.at("int64").source_dtype, "int64");
    EXPECT_EQ(checkpoint.tensors.at("bool").source_dtype, "bool");
}

TEST(TorchZip, FromMemoryEqualsFromFile) {
    const std::string bytes = read_bytes(checkpoint_file("views.pth"));
    Checkpoint from_memory = load_checkpoint_from_memory(bytes.data(), bytes.size(), "in-memory");
    Checkpoint from_file = load_checkpoint(checkpoint_file("views.pth"));
    ASSERT_EQ(from_memory.tensors.size(), from_file.tensors.size());
    for (const auto& [key, tensor] : from_file.tensors) {
        EXPECT_EQ(from_memory.tensors.at(key).shape, tensor.shape) << key;
        EXPECT_EQ(from_memory.read(key, tensor.shape), from_file.read(key, tensor.shape)) << key;
    }
}

// ---- values read on demand -------------------------------------------------------------------------------------

TEST(OnDemand, ReadingTwiceGivesTheSameValuesAndKeepsNone) {
    const Checkpoint checkpoint = load_checkpoint(checkpoint_file("small_sam.pth"));
    for (const auto& [key, tensor] : checkpoint.tensors) {
        EXPECT_TRUE(tensor.data.empty()) << key << ": loading must leave the values in the file";
        EXPECT_EQ(checkpoint.read(key, tensor.shape), checkpoint.read(key, tensor.shape)) << key;
        EXPECT_TRUE(tensor.data.empty()) << key << ": reading must not keep the values";
    }
}

TEST(OnDemand, ThreadsCanReadOneCheckpointAtOnce) {
    const Checkpoint checkpoint = load_checkpoint(checkpoint_file("small_sam.pth"));
    std::map<std::string, std::vector<float>> expected;
    for (const auto& [key, tensor] : checkpoint.tensors) expected[key] = checkpoint.read(key, tensor.shape);
    auto count_mismatches = [&](int& count) {
        for (int round = 0; round < 20; ++round)
            for (const auto& [key, tensor] : checkpoint.tensors) {
                try {
                    count += checkpoint.read(key, tensor.shape) != expected.at(key);
                } catch (const sqasam::Error&) {
                    ++count;  // a read torn by the other thread
                }
            }
    };
    std::vector<int> mismatches(2, 0);
    std::thread other(count_mismatches, std::ref(mismatches[0]));
    count_mismatches(mismatches[1]);
    other.join();
    EXPECT_EQ(mismatches, std::vector<int>(2, 0));
}

TEST(OnDemand, DeflatedArchivesAreInflatedAndSkipped) {
    const std::string path = sqasam::test::temp_dir("deflated_checkpoint") + "/views_deflated.pth";
    write_deflated_copy(checkpoint_file("views.pth"), path);
    expect_matches_npy_folder(load_checkpoint(path), checkpoint_file("views"));
}

// The index is built from the zip's central directory at the end of the file; the bytes of storages are read
// later, so damage there shows when a tensor is read, and the error must say which one.
TEST(OnDemand, AFileCutShortAfterLoadingNamesTheTensorThatCannotBeRead) {
    const std::string path = sqasam::test::temp_dir("cut_checkpoint") + "/small_sam.pth";
    fs::copy_file(checkpoint_file("small_sam.pth"), path, fs::copy_options::overwrite_existing);
    const Checkpoint checkpoint = load_checkpoint(path);
    fs::resize_file(path, fs::file_size(path) / 2);
    int readable = 0, unreadable = 0;
    for (const auto& [key, tensor] : checkpoint.tensors) {
        try {
            const std::vector<float> values = checkpoint.read(key, tensor.shape);
            const auto expected = sqasam::test::read_npy(checkpoint_file("small_sam/" + key + ".npy")).values;
            EXPECT_EQ(values, expected) << key;
            ++readable;
        } catch (const sqasam::Error& e) {
            const std::string message = e.what();
            EXPECT_EQ(e.file(), path);
            EXPECT_NE(message.find("cannot read tensor '" + key + "'"), std::string::npos) << message;
            ++unreadable;
        }
    }
    EXPECT_GT(readable, 0);
    EXPECT_GT(unreadable, 0);
}

TEST(OnDemand, InMemoryValuesMustFitTheirShape) {
    Checkpoint checkpoint = load_checkpoint(checkpoint_file("views.pth"));
    checkpoint.tensors.at("scalar").data = {1.0f, 2.0f};
    std::string message = error_of([&] { checkpoint.read("scalar", {}); });
    EXPECT_NE(message.find("tensor 'scalar' [] holds 2 values"), std::string::npos) << message;

    checkpoint.tensors.at("sliced").shape = {6, 3};  // a loaded view's strides belong to its shape in the file
    message = error_of([&] { checkpoint.read("sliced", {6, 3}); });
    EXPECT_NE(message.find("'sliced' was given shape [6, 3] after loading"), std::string::npos) << message;
}

// The model packs each weight as it is read; what it built from the file must equal what it builds from values
// held in memory (a pointer the reader let go too early would not), and the checkpoint must stay readable.
TEST(OnDemand, ModelBuiltFromTheFileEqualsOneBuiltFromMemory) {
    const Checkpoint from_file = load_checkpoint(checkpoint_file("small_sam.pth"));
    Checkpoint in_memory = from_file;
    for (auto& [key, tensor] : in_memory.tensors) {
        tensor.data = from_file.read(key, tensor.shape);
        tensor.location = nullptr;
    }
    const SamHyperParams hp = detect_hyper_params(from_file);
    const SamModel file_model(from_file, hp), memory_model(in_memory, hp);
    for (const auto& [key, tensor] : from_file.tensors) EXPECT_TRUE(tensor.data.empty()) << key;

    std::vector<float> image(3 * hp.image_size * hp.image_size);
    for (size_t i = 0; i < image.size(); ++i) image[i] = std::sin(0.37f * static_cast<float>(i));
    const size_t embedding_size = size_t(hp.prompt_embed_dim) * hp.embedding_size() * hp.embedding_size();
    std::vector<float> file_embedding(embedding_size), memory_embedding(embedding_size);
    file_model.encode_image(image.data(), file_embedding.data());
    memory_model.encode_image(image.data(), memory_embedding.data());
    EXPECT_EQ(file_embedding, memory_embedding);

    FramePrompt prompt;
    prompt.point_xy = {20.0f, 30.0f};
    prompt.point_labels = {1};
    const DecoderOutput file_masks = file_model.decode(file_embedding.data(), prompt, true);
    const DecoderOutput memory_masks = memory_model.decode(memory_embedding.data(), prompt, true);
    EXPECT_EQ(file_masks.low_res_logits, memory_masks.low_res_logits);
    EXPECT_EQ(file_masks.iou_predictions, memory_masks.iou_predictions);

    expect_matches_npy_folder(from_file, checkpoint_file("small_sam"));
}

// A weight that is NaN or infinite would make every score NaN: the model refuses it at load, naming the tensor
// (the checkpoint reader itself keeps such values: torch files may hold them in tensors no model reads).
TEST(Checkpoint, NonFiniteWeightsAreRefusedByName) {
    const Checkpoint original = load_checkpoint(checkpoint_file("small_sam.pth"));
    const SamHyperParams hp = detect_hyper_params(original);
    const std::string key = "mask_decoder.iou_prediction_head.layers.0.weight";
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
        Checkpoint damaged = original;
        Tensor& tensor = damaged.tensors.at(key);
        tensor.data = original.read(key, tensor.shape);
        tensor.location = nullptr;
        tensor.data[7] = bad;
        const std::string error = error_of([&] { SamModel model(damaged, hp); });
        EXPECT_NE(error.find("tensor '" + key + "' holds a non-finite value"), std::string::npos) << error;
        EXPECT_NE(error.find("at index 7"), std::string::npos) << error;
    }
}

class HostilePickle : public testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(HostilePickle, IsRefusedWithoutRunningAnything) {
    const auto [file, global] = GetParam();
    const std::string message = error_of([&] { load_checkpoint(checkpoint_file(file)); });
    EXPECT_NE(message.find(checkpoint_file(file)), std::string::npos) << message;
    EXPECT_NE(message.find(std::string("'") + global + "'"), std::string::npos) << message;
    EXPECT_NE(message.find("refusing"), std::string::npos) << message;
    // Python's own pickle.load would have run `echo pwned > pwned_marker`.
    EXPECT_FALSE(fs::exists(checkpoint_file("pwned_marker")));
}

INSTANTIATE_TEST_SUITE_P(Globals, HostilePickle,
                         testing::Values(std::pair{"hostile_reduce.pth", "posix.system"},
                                         std::pair{"hostile_stack_global.pth", "builtins.eval"}));

TEST(TorchZip, WholePickledModuleIsRefusedWithAHint) {
    const std::string message = error_of([] { load_checkpoint(checkpoint_file("whole_module.pth")); });
    EXPECT_NE(message.find("'torch.nn.modules.linear.Linear'"), std::string::npos) << message;
    EXPECT_NE(message.find("torch.save(model.state_dict(), path)"), std::string::npos) << message;
}

TEST(TorchZip, DamagedFilesGiveClearErrors) {
    std::string truncated = error_of([] { load_checkpoint(checkpoint_file("truncated.pth")); });
    EXPECT_NE(truncated.find("truncated"), std::string::npos) << truncated;
    EXPECT_NE(truncated.find("truncated.pth"), std::string::npos) << truncated;

    std::string short_storage = error_of([] { load_checkpoint(checkpoint_file("short_storage.pth")); });
    EXPECT_NE(short_storage.find("short_storage/data/0"), std::string::npos) << short_storage;
    EXPECT_NE(short_storage.find("holds 70 bytes"), std::string::npos) << short_storage;

    std::string legacy = error_of([] { load_checkpoint(checkpoint_file("legacy.pth")); });
    EXPECT_NE(legacy.find("legacy"), std::string::npos) << legacy;
    EXPECT_NE(legacy.find("re-save"), std::string::npos) << legacy;
}

TEST(Checkpoint, MissingFilesAndUnknownFormats) {
    const std::string dir = sqasam::test::temp_dir("checkpoint_formats");
    EXPECT_NE(error_of([&] { load_checkpoint(dir + "/absent.pth"); }).find("cannot open"), std::string::npos);
    EXPECT_NE(error_of([&] { load_checkpoint(dir); }).find("directory"), std::string::npos);
    std::ofstream(dir + "/empty.pth").close();
    EXPECT_NE(error_of([&] { load_checkpoint(dir + "/empty.pth"); }).find("empty"), std::string::npos);
    std::ofstream(dir + "/text.pth") << "this is not a checkpoint at all";
    EXPECT_NE(error_of([&] { load_checkpoint(dir + "/text.pth"); }).find("unrecognised"), std::string::npos);
    const std::string bare_pickle = "\x80\x02}q\x00.";  // pickle.dumps({}, protocol=2)
    EXPECT_NE(error_of([&] {
                  load_checkpoint_from_memory(bare_pickle.data(), bare_pickle.size(), "p");
              }).find("bare Python pickle"),
              std::string::npos);
}

TEST(Checkpoint, GetNamesKeyAndShapes) {
    Checkpoint checkpoint = load_checkpoint(checkpoint_file("small_sam.pth"));
    EXPECT_EQ(checkpoint.get("image_encoder.pos_embed", {1, 8, 8, 32}).numel(), 8 * 8 * 32);
    std::string wrong = error_of([&] { checkpoint.get("image_encoder.pos_embed", {1, 64, 64, 768}); });
    EXPECT_NE(wrong.find("'image_encoder.pos_embed' has shape [1, 8, 8, 32], expected [1, 64, 64, 768]"),
              std::string::npos)
        << wrong;
    EXPECT_NE(wrong.find("small_sam.pth"), std::string::npos) << wrong;
    std::string missing = error_of([&] { checkpoint.get("image_encoder.nothing", {3}); });
    EXPECT_NE(missing.find("missing tensor 'image_encoder.nothing'"), std::string::npos) << missing;
}

TEST(Safetensors, ReadsTheOfficialWriter) {
    expect_matches_npy_folder(load_checkpoint(checkpoint_file("mixed.safetensors")), checkpoint_file("dtypes"));
}

TEST(Safetensors, RoundTripKeepsEveryBit) {
    Checkpoint original = load_checkpoint(checkpoint_file("small_sam.pth"));
    const std::string path = sqasam::test::temp_dir("safetensors_round_trip") + "/small_sam.safetensors";
    save_safetensors(path, original.tensors);
    Checkpoint reloaded = load_checkpoint(path);
    EXPECT_EQ(reloaded.path, path);
    ASSERT_EQ(reloaded.tensors.size(), original.tensors.size());
    for (const auto& [key, tensor] : original.tensors) {
        EXPECT_EQ(reloaded.tensors.at(key).shape, tensor.shape) << key;
        EXPECT_EQ(reloaded.read(key, tensor.shape), original.read(key, tensor.shape)) << key;
    }
    EXPECT_EQ(read_bytes(path).substr(8, 1), "{");

    std::map<std::string, Tensor> inconsistent{{"w", Tensor{{2, 2}, {1.0f}, "float32"}}};
    EXPECT_NE(error_of([&] { save_safetensors(path, inconsistent); }).find("'w'"), std::string::npos);
}

TEST(Safetensors, MalformedHeadersAreRejected) {
    const std::string four_floats(16, '\0');
    struct Case {
        std::string header, data, expected;
    };
    const Case cases[] = {
        {R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,32]}})", four_floats, "outside the 16 data bytes"},
        {R"({"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})", four_floats, "needs 24"},
        {R"({"w":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]}})", four_floats, "invalid dimension"},
        {R"({"w":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}})", four_floats, "unsupported dtype"},
        {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,0]}})", four_floats, "data_offsets [8, 0]"},
        {R"({"w":{"dtype":"F32","shape":[4]}})", four_floats, "needs dtype, shape and data_offsets"},
        {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", four_floats, "not JSON"},
        {R"({"__metadata__":{"format":"pt"}})", "", "no tensors"},
    };
    for (const Case& c : cases) {
        const std::string bytes = safetensors_bytes(c.header, c.data);
        std::string message = error_of([&] { load_checkpoint_from_memory(bytes.data(), bytes.size(), "st"); });
        EXPECT_NE(message.find(c.expected), std::string::npos) << c.header << " -> " << message;
    }
    std::string oversized = safetensors_bytes("{}", "");
    oversized[0] = 100;  // header length beyond the file: not even recognised as safetensors
    EXPECT_NE(
        error_of([&] { load_checkpoint_from_memory(oversized.data(), oversized.size(), "st"); }).find("unrecognised"),
        std::string::npos);
    const std::string good =
        safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", four_floats);
    EXPECT_EQ(load_checkpoint_from_memory(good.data(), good.size(), "st").tensors.at("w").shape,
              (std::vector<int64_t>{2, 2}));
}

TEST(HyperParams, DetectsTheSmallConfiguration) {
    Checkpoint checkpoint = load_checkpoint(checkpoint_file("small_sam.pth"));
    expect_same_hyper_params(detect_hyper_params(checkpoint),
                             hyper_params_from_json(read_json(checkpoint_file("small_sam.json"))));
}

TEST(HyperParams, MissingUnexpectedAndMisshapenTensorsAreNamed) {
    const Checkpoint complete = load_checkpoint(checkpoint_file("small_sam.pth"));

    Checkpoint missing = complete;
    missing.tensors.erase("mask_decoder.iou_token.weight");
    std::string message = error_of([&] { detect_hyper_params(missing); });
    EXPECT_NE(message.find("missing tensor 'mask_decoder.iou_token.weight' (expected shape [1, 32])"),
              std::string::npos)
        << message;

    Checkpoint missing_block_part = complete;
    missing_block_part.tensors.erase("image_encoder.blocks.2.attn.rel_pos_h");
    message = error_of([&] { detect_hyper_params(missing_block_part); });
    EXPECT_NE(message.find("'image_encoder.blocks.2.attn.rel_pos_h'"), std::string::npos) << message;

    Checkpoint unexpected = complete;
    unexpected.tensors["image_encoder.adapter.weight"] = Tensor{{4}, {0, 0, 0, 0}, "float32"};
    message = error_of([&] { detect_hyper_params(unexpected); });
    EXPECT_NE(message.find("unexpected tensor 'image_encoder.adapter.weight' [4]"), std::string::npos) << message;

    Checkpoint misshapen = complete;
    misshapen.tensors["mask_decoder.transformer.layers.1.mlp.lin2.weight"].shape = {32, 65};
    message = error_of([&] { detect_hyper_params(misshapen); });
    EXPECT_NE(message.find("'mask_decoder.transformer.layers.1.mlp.lin2.weight' has shape [32, 65], expected [32, 64]"),
              std::string::npos)
        << message;

    std::string not_sam = error_of([] { detect_hyper_params(load_checkpoint(checkpoint_file("views.pth"))); });
    EXPECT_NE(not_sam.find("not a SAM checkpoint"), std::string::npos) << not_sam;
    EXPECT_NE(not_sam.find("views.pth"), std::string::npos) << not_sam;
}

// The official builds' tensor shapes, from segment_anything itself, against our detection and our layout.
class OfficialArchitecture : public testing::TestWithParam<std::pair<const char*, sqasam::ModelType>> {};

TEST_P(OfficialArchitecture, IsDetectedFromShapes) {
    const auto [name, type] = GetParam();
    const nlohmann::json record = read_json(checkpoint_file(std::string("shapes_") + name + ".json"));
    const SamHyperParams official = hyper_params_from_json(record.at("hyper_params"));
    expect_same_hyper_params(hyper_params_for(type), official);
    expect_same_hyper_params(detect_hyper_params(shapes_only(record.at("shapes"), name)), official);

    const auto layout = sam_tensor_shapes(official);
    ASSERT_EQ(layout.size(), record.at("shapes").size());
    for (const auto& item : record.at("shapes").items())
        EXPECT_EQ(layout.at(item.key()), item.value().get<std::vector<int64_t>>()) << item.key();
}

INSTANTIATE_TEST_SUITE_P(Builds, OfficialArchitecture,
                         testing::Values(std::pair{"vit_b", sqasam::ModelType::VitB},
                                         std::pair{"vit_l", sqasam::ModelType::VitL},
                                         std::pair{"vit_h", sqasam::ModelType::VitH}),
                         [](const auto& info) { return std::string(info.param.first); });

TEST(HyperParams, MedSamIsVitBAndAutoHasNoFixedArchitecture) {
    expect_same_hyper_params(hyper_params_for(sqasam::ModelType::MedSam), hyper_params_for(sqasam::ModelType::VitB));
    EXPECT_NE(error_of([] { hyper_params_for(sqasam::ModelType::Auto); }).find("detect_hyper_params"),
              std::string::npos);
}

TEST(HyperParams, CheckingAgainstTheWrongTypeNamesTheTensor) {
    // A vit_h-shaped checkpoint checked against vit_b must fail on the first encoder tensor, by name.
    const nlohmann::json record = read_json(checkpoint_file("shapes_vit_h.json"));
    std::string message = error_of([&] {
        check_sam_tensors(shapes_only(record.at("shapes"), "vit_h"), hyper_params_for(sqasam::ModelType::VitB));
    });
    EXPECT_NE(message.find("expected [768"), std::string::npos) << message;
}
