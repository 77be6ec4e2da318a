// Odd and hostile image files (issue 12): size bombs refused from the header, EXIF orientation, 12-bit data in
// 16-bit files, NaN pixels, truncated JPEGs that end in an end-of-image marker, ambiguous masks under the automatic
// rule and each forced kind, FIFOs and symlink loops. Every file is built here.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

namespace {

std::string encode(const std::string& extension, const cv::Mat& m) {
    std::vector<uint8_t> bytes;
    EXPECT_TRUE(cv::imencode(extension, m, bytes)) << extension;
    return std::string(bytes.begin(), bytes.end());
}

std::string write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path.string();
}

void put_be32(std::string& bytes, size_t at, uint32_t value) {
    for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>(value >> (24 - 8 * i));
}

uint32_t crc32(const std::string& bytes) {  // the PNG chunk CRC (ISO 3309), bit by bit
    uint32_t crc = 0xFFFFFFFFu;
    for (unsigned char byte : bytes) {
        crc ^= byte;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

// A little-endian TIFF structure whose first directory holds Orientation = `orientation`: an Exif block's payload.
std::string exif_tiff(uint16_t orientation) {
    std::string tiff("II*\0\x08\0\0\0", 8);
    tiff += std::string("\x01\0", 2);                           // one entry
    tiff += std::string("\x12\x01\x03\0\x01\0\0\0", 8);         // tag 274, SHORT, count 1
    tiff += std::string(reinterpret_cast<const char*>(&orientation), 2) + std::string(2, '\0');
    return tiff + std::string(4, '\0');                         // no next directory
}

// The JPEG with an APP1 Exif segment carrying `orientation` right after its start-of-image marker.
std::string with_jpeg_orientation(const std::string& jpeg, uint16_t orientation) {
    const std::string payload = std::string("Exif\0\0", 6) + exif_tiff(orientation);
    const uint16_t length = static_cast<uint16_t>(payload.size() + 2);
    const std::string segment = std::string("\xFF\xE1", 2) + static_cast<char>(length >> 8) +
                                static_cast<char>(length & 0xFF) + payload;
    return jpeg.substr(0, 2) + segment + jpeg.substr(2);
}

// The PNG with an eXIf chunk carrying `orientation` after its IHDR chunk.
std::string with_png_orientation(const std::string& png, uint16_t orientation) {
    const std::string data = exif_tiff(orientation);
    std::string chunk(4, '\0');
    put_be32(chunk, 0, static_cast<uint32_t>(data.size()));
    chunk += "eXIf" + data + std::string(4, '\0');
    put_be32(chunk, chunk.size() - 4, crc32(chunk.substr(4, 4 + data.size())));
    constexpr size_t kAfterIhdr = 8 + 25;
    return png.substr(0, kAfterIhdr) + chunk + png.substr(kAfterIhdr);
}

bool has_note(const std::vector<ReadNote>& notes, const std::string& flag) {
    return std::any_of(notes.begin(), notes.end(), [&](const ReadNote& note) { return note.flag == flag; });
}

using test::error_of;

class IoHostile : public ::testing::Test {
protected:
    fs::path dir = test::temp_dir("io_hostile");
    // A 40x20 picture whose top-left corner is white, to see where it went.
    static cv::Mat corner_picture() {
        cv::Mat m = cv::Mat::zeros(20, 40, CV_8UC3);
        m(cv::Rect(0, 0, 10, 5)).setTo(cv::Scalar::all(255));
        return m;
    }
};

}  // namespace

TEST_F(IoHostile, SizeBombsAreRefusedFromTheHeaderBeforeDecoding) {
    // A real 8x8 PNG whose header claims 32000x32000 (8-bit gray) or 20000x20000 (16-bit RGB): reading it would
    // take gigabytes, refusing it takes nothing.
    for (const auto& [name, type] : {std::pair<std::string, int>{"gray", CV_8UC1}, {"rgb16", CV_16UC3}}) {
        std::string png = encode(".png", cv::Mat::zeros(8, 8, type));
        const uint32_t side = name == "gray" ? 32000 : 20000;
        put_be32(png, 16, side);
        put_be32(png, 20, side);
        const std::string path = write_bytes(dir / (name + ".png"), png);
        try {
            read_image(path);
            FAIL() << name << " was read";
        } catch (const ImageTooLarge& e) {
            EXPECT_EQ(e.file(), path);
            EXPECT_NE(e.problem().find(std::to_string(side) + "x" + std::to_string(side)), std::string::npos)
                << e.what();
        }
        EXPECT_THROW(read_label_map(path), ImageTooLarge);
        EXPECT_THROW(read_probability_map(path), ImageTooLarge);
    }
    // The limit is the caller's: 20x20 passes 400 pixels and fails 399, in every format.
    const cv::Mat picture(20, 20, CV_8UC3, cv::Scalar(1, 2, 3));
    for (const std::string extension : {".png", ".jpg", ".tif", ".bmp"}) {
        const std::string path = write_bytes(dir / ("small" + extension), encode(extension, picture));
        EXPECT_EQ(read_image(path, 400).rgb.size(), cv::Size(20, 20)) << extension;
        EXPECT_THROW(read_image(path, 399), ImageTooLarge) << extension;
    }
    // A file larger than any image within the limit could be is refused before it is read.
    const std::string padded = write_bytes(dir / "padded.png", encode(".png", picture) + std::string(2 << 20, '\0'));
    EXPECT_NE(error_of([&] { read_image(padded, 1000); }).find("bytes"), std::string::npos);
}

TEST_F(IoHostile, OnlyPngJpegTiffAndBmpReachADecoder) {
    // OpenCV would decode a PPM or a WebP named .png; sqasam refuses it by its first bytes.
    const std::string ppm = write_bytes(dir / "ppm.png", encode(".ppm", corner_picture()));
    EXPECT_NE(error_of([&] { read_image(ppm); }).find("not a PNG, JPEG, TIFF or BMP"), std::string::npos);
    EXPECT_THROW(read_label_map(ppm), Error);
}

TEST_F(IoHostile, ExifOrientationIsAppliedToImagesAndMasksAlikeAndNoted) {
    const cv::Mat picture = corner_picture();
    cv::Mat mask = cv::Mat::zeros(20, 40, CV_8U);
    mask(cv::Rect(0, 0, 10, 5)).setTo(255);
    const std::string jpeg = write_bytes(dir / "turned.jpg", with_jpeg_orientation(encode(".jpg", picture), 6));
    const std::string png_image = write_bytes(dir / "turned.png", with_png_orientation(encode(".png", picture), 6));
    const std::string png_mask = write_bytes(dir / "mask.png", with_png_orientation(encode(".png", mask), 6));
    for (const std::string& path : {jpeg, png_image}) {
        const ImageFile image = read_image(path);
        // Orientation 6: shown turned 90 degrees clockwise, so the white top-left corner lands at the top right.
        ASSERT_EQ(image.rgb.size(), cv::Size(20, 40)) << path;
        EXPECT_GT(image.rgb.at<cv::Vec3b>(2, 17)[0], 200) << path;
        EXPECT_LT(image.rgb.at<cv::Vec3b>(2, 2)[0], 50) << path;
        ASSERT_TRUE(has_note(image.notes, "exif_orientation")) << path;
        EXPECT_NE(image.notes[0].message.find("rotated 90 degrees clockwise"), std::string::npos);
    }
    const LabelMap turned = read_label_map(png_mask);
    ASSERT_EQ(turned.labels.size(), cv::Size(20, 40));
    EXPECT_EQ(turned.labels.at<int>(2, 17), 1);
    EXPECT_EQ(turned.labels.at<int>(2, 2), 0);
    EXPECT_TRUE(has_note(turned.notes, "exif_orientation"));
    // Without an orientation nothing turns and nothing is noted.
    const ImageFile plain = read_image(write_bytes(dir / "plain.jpg", encode(".jpg", picture)));
    EXPECT_EQ(plain.rgb.size(), cv::Size(40, 20));
    EXPECT_TRUE(plain.notes.empty());
}

TEST_F(IoHostile, TwelveBitDataInASixteenBitFileKeepsItsGreyLevels) {
    cv::Mat twelve(1, 4096, CV_16U);
    for (int v = 0; v < 4096; ++v) twelve.at<uint16_t>(0, v) = static_cast<uint16_t>(v);
    const cv::Mat rgb = read_image(write_bytes(dir / "twelve.png", encode(".png", twelve))).rgb;
    cv::Mat grey;
    cv::extractChannel(rgb, grey, 0);
    double low = 0, high = 0;
    cv::minMaxLoc(grey, &low, &high);
    EXPECT_EQ(low, 0);
    EXPECT_EQ(high, 255);  // v / 257 would stop at 15
    EXPECT_EQ(grey.at<uint8_t>(0, 2048), cv::saturate_cast<uint8_t>(2048 * 255.0 / 4095));
    // Data that uses all 16 bits is v / 257, as before.
    cv::Mat full(1, 3, CV_16U);
    full.at<uint16_t>(0, 0) = 0;
    full.at<uint16_t>(0, 1) = 257 * 100;
    full.at<uint16_t>(0, 2) = 65535;
    const cv::Mat full_rgb = read_image(write_bytes(dir / "full.png", encode(".png", full))).rgb;
    EXPECT_EQ(full_rgb.at<cv::Vec3b>(0, 1)[0], 100);
}

TEST_F(IoHostile, NanPixelsInAFloatImageAreZeroAndNoted) {
    cv::Mat floats(4, 4, CV_32F, cv::Scalar(0.5));
    floats.at<float>(1, 1) = std::numeric_limits<float>::quiet_NaN();
    floats.at<float>(2, 2) = std::numeric_limits<float>::infinity();
    const ImageFile image = read_image(write_bytes(dir / "nan.tif", encode(".tif", floats)));
    EXPECT_EQ(image.rgb.at<cv::Vec3b>(1, 1), cv::Vec3b(0, 0, 0));
    EXPECT_EQ(image.rgb.at<cv::Vec3b>(2, 2), cv::Vec3b(0, 0, 0));
    EXPECT_EQ(image.rgb.at<cv::Vec3b>(0, 0)[0], 128);
    ASSERT_TRUE(has_note(image.notes, "nonfinite_pixels"));
    EXPECT_NE(image.notes[0].message.find("2 NaN or infinite"), std::string::npos) << image.notes[0].message;
    EXPECT_TRUE(read_image(write_bytes(dir / "clean.tif", encode(".tif", cv::Mat(4, 4, CV_32F, 0.5)))).notes.empty());
}

TEST_F(IoHostile, ATruncatedJpegIsRefusedEvenWhenItEndsInAnEndMarker) {
    cv::Mat noise(64, 64, CV_8UC3);
    cv::randu(noise, 0, 256);
    const std::string whole = encode(".jpg", noise);
    const std::string cut = whole.substr(0, whole.size() * 2 / 3) + "\xFF\xD9";
    const std::string path = write_bytes(dir / "cut_eoi.jpg", cut);
    ASSERT_FALSE(cv::imread(path).empty()) << "OpenCV itself now refuses this file: the check is moot";
    const std::string message = error_of([&] { read_image(path); });
    EXPECT_NE(message.find("truncated"), std::string::npos) << message;
    EXPECT_NE(message.find(path), std::string::npos);
    EXPECT_THROW(read_label_map(path), Error);
    EXPECT_TRUE(read_image(write_bytes(dir / "whole.jpg", whole)).notes.empty());
}

TEST_F(IoHostile, AmbiguousMasksAreReadByTheStatedRuleAndNoted) {
    auto map_of = [](std::initializer_list<int> values) {  // one 4x4 patch per value, 8-bit
        cv::Mat m = cv::Mat::zeros(4, 4 * static_cast<int>(values.size()), CV_8U);
        int x = 0;
        for (int v : values) m(cv::Rect(4 * x++, 0, 4, 4)).setTo(v);
        return m;
    };
    auto read = [&](const std::string& name, const cv::Mat& m, MaskReading reading = {}) {
        return read_label_map(write_bytes(dir / (name + ".png"), encode(".png", m)), reading);
    };
    // 0/254: binary (label 1, as a 0/255 ground truth would be), noted.
    LabelMap map = read("254", map_of({0, 254}));
    EXPECT_EQ(map.kind, MapKind::Binary);
    EXPECT_EQ(map.labels.at<int>(0, 4), 1);
    EXPECT_TRUE(has_note(map.notes, "kind_guessed"));
    EXPECT_EQ(read("254_labels", map_of({0, 254}), {.kind = MapKind::Labels}).labels.at<int>(0, 4), 254);

    // {0, 1, 255}: soft under auto (the 1 falls below the threshold), noted; labels keeps the value-1 object.
    map = read("0_1_255", map_of({0, 1, 255}));
    EXPECT_EQ(map.kind, MapKind::Soft);
    EXPECT_TRUE(has_note(map.notes, "kind_guessed"));
    EXPECT_NE(map.notes[0].message.find("{1, 255}"), std::string::npos) << map.notes[0].message;
    map = read("0_1_255_labels", map_of({0, 1, 255}), {.kind = MapKind::Labels});
    EXPECT_EQ(map.labels.at<int>(0, 4), 1);
    EXPECT_EQ(map.labels.at<int>(0, 8), 255);
    EXPECT_TRUE(map.notes.empty());
    map = read("0_1_255_binary", map_of({0, 1, 255}), {.kind = MapKind::Binary});
    EXPECT_EQ(map.labels.at<int>(0, 4), 1);
    EXPECT_EQ(map.labels.at<int>(0, 8), 1);

    // A 200-class label map: soft under auto, noted; each class kept under labels.
    cv::Mat classes(10, 20, CV_8U);
    for (int i = 0; i < 200; ++i) classes.at<uint8_t>(i / 20, i % 20) = static_cast<uint8_t>(i + 1);
    map = read("classes", classes);
    EXPECT_EQ(map.kind, MapKind::Soft);
    EXPECT_TRUE(has_note(map.notes, "kind_guessed"));
    map = read("classes_labels", classes, {.kind = MapKind::Labels});
    double high = 0;
    cv::minMaxLoc(map.labels, nullptr, &high);
    EXPECT_EQ(high, 200);

    // Few values above the threshold without full scale: labels, noted; few small values: labels, not noted.
    map = read("100_200", map_of({0, 100, 200}));
    EXPECT_EQ(map.kind, MapKind::Labels);
    EXPECT_TRUE(has_note(map.notes, "kind_guessed"));
    map = read("classes_1_2_3", map_of({0, 1, 2, 3}));
    EXPECT_EQ(map.kind, MapKind::Labels);
    EXPECT_TRUE(map.notes.empty());

    // Unambiguous files are not noted: 0/255, 0/1, empty, float probabilities.
    for (const auto& [name, m] : {std::pair<std::string, cv::Mat>{"binary", map_of({0, 255})},
                                  {"ones", map_of({0, 1})},
                                  {"empty", map_of({0})}}) {
        map = read(name, m);
        EXPECT_EQ(map.kind, MapKind::Binary) << name;
        EXPECT_TRUE(map.notes.empty()) << name;
    }
    cv::Mat probability(4, 4, CV_32F, cv::Scalar(0.75));
    map = read_label_map(write_bytes(dir / "p.tif", encode(".tif", probability)));
    EXPECT_EQ(map.kind, MapKind::Soft);
    EXPECT_TRUE(map.notes.empty());

    // A forced kind that the values contradict is an error naming the file.
    EXPECT_NE(error_of([&] { read_label_map((dir / "p.tif").string(), {.kind = MapKind::Labels}); }).find("p.tif"),
              std::string::npos);
    EXPECT_EQ(map_kind_from_string("labels"), MapKind::Labels);
    EXPECT_THROW(map_kind_from_string("auto"), Error);
}

TEST_F(IoHostile, AFifoIsRefusedWithoutWaitingForAWriter) {
    const fs::path fifo = dir / "fifo.png";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    EXPECT_NE(error_of([&] { read_image(fifo.string()); }).find("not a regular file"), std::string::npos);
    EXPECT_THROW(read_label_map(fifo.string()), Error);
}

TEST_F(IoHostile, ASymlinkLoopInAFolderIsListedAndFailsToReadWithItsReason) {
    fs::create_directories(dir / "images");
    fs::create_directories(dir / "pred");
    write_bytes(dir / "images" / "good.png", encode(".png", corner_picture()));
    write_bytes(dir / "pred" / "good.png", encode(".png", cv::Mat::zeros(20, 40, CV_8U)));
    fs::create_symlink("loop.png", dir / "images" / "loop.png");  // points at itself
    const Dataset dataset = match_folders({(dir / "images").string(), {{"pred", (dir / "pred").string(), ""}}, ""});
    ASSERT_EQ(dataset.items.size(), 2u);
    EXPECT_EQ(dataset.items[1].name, "loop");
    EXPECT_EQ(dataset.items[1].image, (dir / "images" / "loop.png").string());
    const std::string message = error_of([&] { read_image(dataset.items[1].image); });
    EXPECT_NE(message.find("symbolic links"), std::string::npos) << message;
}
