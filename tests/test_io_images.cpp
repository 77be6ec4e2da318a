// Reading images, label maps (binary, labels, soft, 16-bit, float) and probability maps.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "test_support.hpp"

using namespace sqasam;

namespace {

std::string write(const std::string& dir, const std::string& name, const cv::Mat& m) {
    std::string path = dir + "/" + name;
    EXPECT_TRUE(cv::imwrite(path, m)) << path;
    return path;
}

// A horizontal ramp 0..full over `cols` columns.
cv::Mat ramp(int rows, int cols, int type, double full) {
    cv::Mat m(rows, cols, type);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
            double v = full * c / (cols - 1);
            if (type == CV_8U) m.at<uint8_t>(r, c) = cv::saturate_cast<uint8_t>(v);
            else if (type == CV_16U) m.at<uint16_t>(r, c) = cv::saturate_cast<uint16_t>(v);
            else m.at<float>(r, c) = static_cast<float>(v);
        }
    return m;
}

cv::Mat as_int(const cv::Mat& m) {
    cv::Mat out;
    m.convertTo(out, CV_32S);
    return out;
}

bool same(const cv::Mat& a, const cv::Mat& b) {
    return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

class IoImages : public ::testing::Test {
protected:
    std::string dir = test::temp_dir("io_images");
};

}  // namespace

TEST_F(IoImages, BinaryZero255IsForegroundLabelOne) {
    cv::Mat mask = cv::Mat::zeros(20, 30, CV_8U);
    cv::rectangle(mask, cv::Rect(3, 4, 10, 6), 255, cv::FILLED);
    LabelMap map = read_label_map(write(dir, "binary.png", mask));
    EXPECT_EQ(map.kind, MapKind::Binary);
    EXPECT_TRUE(same(map.labels, as_int(mask / 255)));
}

TEST_F(IoImages, LabelMapKeepsClassValues) {
    cv::Mat labels = cv::Mat::zeros(20, 30, CV_8U);
    cv::rectangle(labels, cv::Rect(0, 0, 5, 5), 1, cv::FILLED);
    cv::rectangle(labels, cv::Rect(10, 10, 5, 5), 2, cv::FILLED);
    cv::rectangle(labels, cv::Rect(20, 2, 5, 5), 7, cv::FILLED);
    LabelMap map = read_label_map(write(dir, "labels.png", labels));
    EXPECT_EQ(map.kind, MapKind::Labels);
    EXPECT_TRUE(same(map.labels, as_int(labels)));
}

TEST_F(IoImages, SoftMapIsThresholdedAtHalfScaleOrTheGivenFraction) {
    cv::Mat soft = ramp(4, 256, CV_8U, 255);  // every value 0..255 once per row
    std::string path = write(dir, "soft.png", soft);
    LabelMap half = read_label_map(path);
    EXPECT_EQ(half.kind, MapKind::Soft);
    EXPECT_TRUE(same(half.labels, as_int((soft > 127.5) / 255)));
    LabelMap low = read_label_map(path, {.soft_threshold = 0.3});
    EXPECT_TRUE(same(low.labels, as_int((soft > 0.3 * 255) / 255)));
}

TEST_F(IoImages, ManyGrayLevelsBelowFullScaleAreSoft) {
    // Like the DRIVE vessel maps: 255 levels, maximum 254.
    cv::Mat soft = ramp(4, 255, CV_8U, 254);
    LabelMap map = read_label_map(write(dir, "soft254.png", soft));
    EXPECT_EQ(map.kind, MapKind::Soft);
    EXPECT_TRUE(same(map.labels, as_int((soft > 127.5) / 255)));
}

TEST_F(IoImages, FullScaleBesideOtherValuesIsSoft) {
    cv::Mat few = cv::Mat::zeros(4, 4, CV_8U);
    few.at<uint8_t>(0, 0) = 100;
    few.at<uint8_t>(0, 1) = 200;
    few.at<uint8_t>(0, 2) = 255;
    LabelMap map = read_label_map(write(dir, "few.png", few));
    EXPECT_EQ(map.kind, MapKind::Soft);
    EXPECT_TRUE(same(map.labels, as_int((few > 127.5) / 255)));
}

TEST_F(IoImages, SixteenBitBinaryLabelsAndSoft) {
    cv::Mat binary = cv::Mat::zeros(10, 10, CV_16U);
    binary(cv::Rect(2, 2, 4, 4)).setTo(65535);
    LabelMap b = read_label_map(write(dir, "b16.png", binary));
    EXPECT_EQ(b.kind, MapKind::Binary);
    EXPECT_TRUE(same(b.labels, as_int(binary / 65535)));

    cv::Mat labels = cv::Mat::zeros(10, 10, CV_16U);
    labels(cv::Rect(0, 0, 3, 3)).setTo(1);
    labels(cv::Rect(5, 5, 3, 3)).setTo(300);
    LabelMap l = read_label_map(write(dir, "l16.png", labels));
    EXPECT_EQ(l.kind, MapKind::Labels);
    EXPECT_TRUE(same(l.labels, as_int(labels)));

    cv::Mat soft = ramp(3, 100, CV_16U, 65535);
    LabelMap s = read_label_map(write(dir, "s16.png", soft));
    EXPECT_EQ(s.kind, MapKind::Soft);
    EXPECT_TRUE(same(s.labels, as_int((soft > 32767.5) / 255)));
}

TEST_F(IoImages, FloatTiffProbabilitiesLabelsAndBadValues) {
    cv::Mat probability = ramp(3, 50, CV_32F, 1.0);
    LabelMap soft = read_label_map(write(dir, "p.tif", probability));
    EXPECT_EQ(soft.kind, MapKind::Soft);
    EXPECT_TRUE(same(soft.labels, as_int((probability > 0.5f) / 255)));

    cv::Mat labels = cv::Mat::zeros(6, 6, CV_32F);
    labels.at<float>(1, 1) = 1;
    labels.at<float>(4, 4) = 2;
    LabelMap l = read_label_map(write(dir, "l.tif", labels));
    EXPECT_EQ(l.kind, MapKind::Labels);
    EXPECT_TRUE(same(l.labels, as_int(labels)));

    cv::Mat too_big = probability * 3;
    EXPECT_THROW(read_label_map(write(dir, "big.tif", too_big)), Error);
    cv::Mat with_nan = probability.clone();
    with_nan.at<float>(1, 1) = std::numeric_limits<float>::quiet_NaN();
    EXPECT_THROW(read_label_map(write(dir, "nan.tif", with_nan)), Error);
}

TEST_F(IoImages, GrayMaskSavedAsRgbIsAcceptedColouredMaskIsNot) {
    cv::Mat mask = cv::Mat::zeros(8, 8, CV_8U);
    mask(cv::Rect(1, 1, 3, 3)).setTo(255);
    cv::Mat grey_rgb;
    cv::cvtColor(mask, grey_rgb, cv::COLOR_GRAY2BGR);
    LabelMap map = read_label_map(write(dir, "grey_rgb.png", grey_rgb));
    EXPECT_TRUE(same(map.labels, as_int(mask / 255)));

    cv::Mat coloured = grey_rgb.clone();
    coloured.at<cv::Vec3b>(6, 6) = cv::Vec3b(0, 0, 255);
    std::string path = write(dir, "coloured.png", coloured);
    try {
        read_label_map(path);
        FAIL() << "a coloured mask was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), path);
        EXPECT_NE(std::string(e.problem()).find("channels"), std::string::npos) << e.what();
    }
}

TEST_F(IoImages, CorruptAndMissingFilesAreErrorsNamingTheFile) {
    std::string corrupt = dir + "/corrupt.png";
    std::ofstream(corrupt) << "\x89PNG\r\n\x1a\n this is not a png";
    EXPECT_THROW(read_label_map(corrupt), Error);
    try {
        read_rgb_image(corrupt);
        FAIL() << "a corrupt image was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), corrupt);
    }
    EXPECT_THROW(read_rgb_image(dir + "/absent.png"), Error);
}

TEST_F(IoImages, TruncatedJpegIsAnErrorWhereLibjpegOnlyWarns) {
    cv::Mat image(64, 64, CV_8UC3);
    cv::randu(image, 0, 256);
    std::vector<uint8_t> bytes;
    ASSERT_TRUE(cv::imencode(".jpg", image, bytes));
    const std::string whole = dir + "/whole.jpg", cut = dir + "/cut.jpg";
    std::ofstream(whole, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    std::ofstream(cut, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size() * 2 / 3);
    ASSERT_FALSE(cv::imread(cut).empty()) << "OpenCV itself now refuses truncated JPEGs: this check is moot";
    EXPECT_EQ(read_rgb_image(whole).size(), image.size());
    try {
        read_rgb_image(cut);
        FAIL() << "a truncated JPEG was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), cut);
        EXPECT_NE(std::string(e.problem()).find("truncated"), std::string::npos) << e.what();
    }
}

TEST_F(IoImages, ImagesBecomeRgb8Bit) {
    cv::Mat bgr(4, 5, CV_8UC3, cv::Scalar(10, 20, 30));
    cv::Mat rgb = read_rgb_image(write(dir, "colour.png", bgr));
    ASSERT_EQ(rgb.type(), CV_8UC3);
    EXPECT_EQ(rgb.at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));

    cv::Mat grey = ramp(3, 7, CV_8U, 255);
    cv::Mat from_grey = read_rgb_image(write(dir, "grey.png", grey));
    std::vector<cv::Mat> channels;
    cv::split(from_grey, channels);
    for (const cv::Mat& channel : channels) EXPECT_TRUE(same(channel, grey));

    cv::Mat grey16 = ramp(3, 7, CV_16U, 65535);
    cv::Mat from16 = read_rgb_image(write(dir, "grey16.png", grey16));
    cv::Mat expected8;
    grey16.convertTo(expected8, CV_8U, 1.0 / 257.0);
    cv::split(from16, channels);
    EXPECT_TRUE(same(channels[0], expected8));
}

TEST_F(IoImages, ProbabilityMapsScaleToUnitRange) {
    cv::Mat eight = ramp(2, 256, CV_8U, 255);
    cv::Mat p8 = read_probability_map(write(dir, "p8.png", eight));
    cv::Mat expected;
    eight.convertTo(expected, CV_32F, 1.0 / 255.0);
    EXPECT_LT(cv::norm(p8, expected, cv::NORM_INF), 1e-7);

    cv::Mat sixteen = ramp(2, 100, CV_16U, 65535);
    cv::Mat p16 = read_probability_map(write(dir, "p16.png", sixteen));
    sixteen.convertTo(expected, CV_32F, 1.0 / 65535.0);
    EXPECT_LT(cv::norm(p16, expected, cv::NORM_INF), 1e-7);

    cv::Mat floats = ramp(2, 10, CV_32F, 1.0);
    EXPECT_LT(cv::norm(read_probability_map(write(dir, "pf.tif", floats)), floats, cv::NORM_INF), 1e-7);
    cv::Mat too_big = floats * 2;
    EXPECT_THROW(read_probability_map(write(dir, "pbig.tif", too_big)), Error);
}
