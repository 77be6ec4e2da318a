// Hostile checkpoints (issue 12): JSON nesting bombs in a safetensors header, pickle bombs in data.pkl, damaged
// zip entries, a FIFO given as the checkpoint, and images too thin for the network. Every file is built here.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <tuple>

#include <opencv2/core.hpp>

#include "sam/checkpoint.hpp"
#include "sam/transforms.hpp"
#include "sqasam/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam::sam;

namespace {

using sqasam::test::error_of;

void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file with one F32 tensor of 1 element and `header` as its JSON header.
std::string safetensors_bytes(const std::string& header) {
    const uint64_t length = header.size();
    std::string bytes(reinterpret_cast<const char*>(&length), 8);
    return bytes + header + std::string(4, '\0');
}

std::string nested(const std::string& innermost, size_t depth) {
    return std::string(depth, '[') + innermost + std::string(depth, ']');
}

// A torch.save-like archive: archive/data.pkl and archive/data/<key> entries, deflated or stored as torch stores.
void write_torch_zip(const fs::path& path, const std::string& pickle, const std::map<std::string, std::string>& data,
                     bool deflate) {  // deflate at level 1: fast, and still ~1000:1 on the bombs
    int code = 0;
    zip_t* archive = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
    ASSERT_NE(archive, nullptr);
    auto add = [&](const std::string& name, const std::string& bytes) {
        zip_source_t* source = zip_source_buffer(archive, bytes.data(), bytes.size(), 0);
        const zip_int64_t index = zip_file_add(archive, name.c_str(), source, ZIP_FL_ENC_UTF_8);
        ASSERT_GE(index, 0) << zip_strerror(archive);
        ASSERT_EQ(zip_set_file_compression(archive, static_cast<zip_uint64_t>(index),
                                           deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, deflate ? 1 : 0),
                  0);
    };
    add("archive/data.pkl", pickle);
    for (const auto& [key, bytes] : data) add("archive/data/" + key, bytes);
    ASSERT_EQ(zip_close(archive), 0) << zip_strerror(archive);  // copies the buffers' bytes
}

// data.pkl of {'w': a float32 tensor of `numel` (< 65536) elements in storage '0'}, as torch.save writes it.
std::string one_tensor_pickle(uint16_t numel = 4) {
    auto unicode = [](const std::string& text) {
        const uint32_t length = static_cast<uint32_t>(text.size());
        return std::string("X") + std::string(reinterpret_cast<const char*>(&length), 4) + text;
    };
    const std::string count = std::string("M") + std::string(reinterpret_cast<const char*>(&numel), 2);  // BININT2
    return std::string("\x80\x02}") + unicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage") +
           "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + count + "tQK" + std::string(1, '\0') + count + "\x85K\x01\x85tRs.";
}

std::string four_floats() {
    const float values[4] = {0.25f, -1.5f, 3.0f, 0.125f};
    return std::string(reinterpret_cast<const char*>(values), sizeof values);
}

// Bytes that do not compress, the same each run.
std::string noise(size_t count) {
    std::string bytes(count, '\0');
    uint32_t state = 12345;
    for (char& byte : bytes) {
        state = state * 1664525u + 1013904223u;
        byte = static_cast<char>(state >> 24);
    }
    return bytes;
}

long peak_rss_mib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss / 1024;
}

class HostileCheckpoint : public ::testing::Test {
protected:
    fs::path dir = sqasam::test::temp_dir("sam_hostile");
};

}  // namespace

TEST_F(HostileCheckpoint, TheHandBuiltArchiveLoads) {  // so the refusals below are about what each one changes
    const fs::path path = dir / "good.pth";
    write_torch_zip(path, one_tensor_pickle(), {{"0", four_floats()}}, false);
    const Checkpoint checkpoint = load_checkpoint(path.string());
    ASSERT_TRUE(checkpoint.has("w"));
    EXPECT_EQ(checkpoint.read("w", {4}), (std::vector<float>{0.25f, -1.5f, 3.0f, 0.125f}));
}

TEST_F(HostileCheckpoint, SafetensorsHeaderNestedDeepIsRefusedWithoutRecursing) {
    constexpr size_t kDepth = 100000;
    const std::string tensor_rest = R"("shape":[1],"data_offsets":[0,4])";
    const std::map<std::string, std::string> headers{
        {"dtype", R"({"a":{"dtype":)" + nested("\"F32\"", kDepth) + "," + tensor_rest + "}}"},
        {"shape", R"({"a":{"dtype":"F32","shape":)" + nested("1", kDepth) + R"(,"data_offsets":[0,4]}})"},
        {"data_offsets", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)" + nested("0", kDepth) + "}}"},
        {"__metadata__", R"({"__metadata__":)" + nested("\"x\"", kDepth) + R"(,"a":{"dtype":"F32",)" + tensor_rest +
                             "}}"},
    };
    for (const auto& [where, header] : headers) {
        const std::string bytes = safetensors_bytes(header);
        const std::string message = error_of([&] { load_checkpoint_from_memory(bytes.data(), bytes.size(), where); });
        EXPECT_NE(message.find("deeper than"), std::string::npos) << where << ": " << message;
        const fs::path path = dir / (where + ".safetensors");
        write_bytes(path, bytes);
        EXPECT_NE(error_of([&] { load_checkpoint(path.string()); }).find(path.string()), std::string::npos);
    }
    // A long bad value, and a long bad token, are cut short in the message.
    std::string ones = "1";
    for (int i = 0; i < 5000; ++i) ones += ",1";
    const std::string long_dtype = R"({"a":{"dtype":[)" + ones + "]," + tensor_rest + "}}";
    const std::string bytes = safetensors_bytes(long_dtype);
    std::string message = error_of([&] { load_checkpoint_from_memory(bytes.data(), bytes.size(), "long"); });
    EXPECT_NE(message.find("unsupported dtype [1,1,1"), std::string::npos) << message;
    EXPECT_LT(message.size(), 300u);
    const std::string long_token = safetensors_bytes(R"({"a":{"dtype":)" + std::string(10000, '1') + "x}}");
    message = error_of([&] { load_checkpoint_from_memory(long_token.data(), long_token.size(), "token"); });
    EXPECT_NE(message.find("not JSON"), std::string::npos) << message;
    EXPECT_LT(message.size(), 400u);
}

TEST_F(HostileCheckpoint, PickleBombsFailFastWithLittleMemory) {
    const std::string proto = "\x80\x02";
    const std::map<std::string, std::pair<std::string, std::string>> bombs{
        // name -> (pickle, what the refusal says)
        {"none_pop_over_size_cap", {proto + [] {
                                        std::string ops;
                                        for (int i = 0; i < (40 << 20) / 2; ++i) ops += "N0";
                                        return ops;
                                    }(),
                                    "more than the"}},
        {"none_pop", {proto + [] {
                          std::string ops;
                          for (int i = 0; i < (30 << 20) / 2; ++i) ops += "N0";
                          return ops;
                      }(),
                      "objects"}},
        {"marks", {proto + std::string(10 << 20, '('), "nests deeper"}},
        {"empty_lists", {proto + std::string(10 << 20, ']'), "objects"}},
        {"dup", {proto + "N" + std::string(10 << 20, '2'), "pushes more than"}},
        {"memo", {proto + "N" + [] {
                      std::string ops;
                      for (uint32_t key = 0; key <= (1u << 19); ++key)
                          ops += std::string("r") + std::string(reinterpret_cast<const char*>(&key), 4);
                      return ops;
                  }(),
                  "memoizes more than"}},
    };
    for (const auto& [name, bomb] : bombs) {
        const fs::path path = dir / (name + ".pth");
        write_torch_zip(path, bomb.first, {}, true);
        EXPECT_LT(fs::file_size(path), 2000000u) << name << ": the bomb should be small on disk";
        const std::string message = error_of([&] { load_checkpoint(path.string()); });
        EXPECT_NE(message.find(bomb.second), std::string::npos) << name << ": " << message;
        EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    }
    // This process built 40 MiB pickles above; the bombs inflate to at most ~250 MB more before they are refused.
    EXPECT_LT(peak_rss_mib(), 1024) << "peak memory of this test process";
}

TEST_F(HostileCheckpoint, DamagedWeightBytesFailTheZipCrc) {
    constexpr uint16_t kNumel = 1024;
    const std::string weights = noise(4 * kNumel);
    for (const bool deflate : {false, true}) {
        const fs::path path = dir / (deflate ? "flipped_deflated.pth" : "flipped_stored.pth");
        write_torch_zip(path, one_tensor_pickle(kNumel), {{"0", weights}}, deflate);
        const Checkpoint intact = load_checkpoint(path.string());
        EXPECT_EQ(intact.read("w", {kNumel}).size(), kNumel);

        std::string bytes = sqasam::test::read_text(path.string());
        // Stored: 16 weight bytes flipped in place. Deflated: bytes of the compressed stream, which inflate may
        // or may not notice; the CRC must.
        const size_t at = deflate ? bytes.find("archive/data/0") + 300 : bytes.find(weights.substr(0, 64)) + 1000;
        ASSERT_LT(at, bytes.size());
        for (size_t i = 0; i < 16; ++i) bytes[at + i] ^= 0x5a;
        write_bytes(path, bytes);
        const Checkpoint checkpoint = load_checkpoint(path.string());  // indexing reads no weight
        const std::string message = error_of([&] { checkpoint.read("w", {kNumel}); });
        EXPECT_NE(message.find("'w'"), std::string::npos) << message;
        if (!deflate) EXPECT_NE(message.find("CRC"), std::string::npos) << message;
    }
}

TEST_F(HostileCheckpoint, AFifoIsRefusedAtOnceInsteadOfWaitingForAWriter) {
    const fs::path fifo = dir / "checkpoint.pth";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    const std::string message = error_of([&] { load_checkpoint(fifo.string()); });
    EXPECT_NE(message.find("not a regular file"), std::string::npos) << message;
}

TEST(ThinImages, ImagesTooThinForTheModelInputAreErrorsNotOpenCvFailures) {
    // 1x1000 keeps one row at SAM's 1024 input but none at LiteMedSAM's 256; 2x5000 and 5000x1 keep none.
    EXPECT_NO_THROW(model_input(cv::Mat(1, 1000, CV_8UC3, cv::Scalar::all(7)), 1024, Processing::Sam));
    const std::vector<std::tuple<cv::Size, int, Processing>> too_thin{
        {{1000, 1}, 256, Processing::LiteMedSam},
        {{5000, 2}, 1024, Processing::Sam},
        {{1, 5000}, 1024, Processing::Sam},
        {{1, 5000}, 256, Processing::LiteMedSam},
    };
    for (const auto& [size, frame, processing] : too_thin) {
        const cv::Mat image(size, CV_8UC3, cv::Scalar::all(7));
        const std::string message = error_of([&] { model_input(image, frame, processing); });
        EXPECT_NE(message.find("too thin"), std::string::npos) << message;
        EXPECT_NE(message.find(std::to_string(size.width) + "x" + std::to_string(size.height)), std::string::npos);
    }
}
