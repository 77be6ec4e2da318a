// Objects (connected components per class) and the prompts made from them.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sqa.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

namespace {

cv::Mat labels_of(const cv::Mat& mask8) {
    cv::Mat labels;
    mask8.convertTo(labels, CV_32S);
    return labels;
}

// Brute force: the object pixel with the largest Euclidean distance to the nearest non-object pixel (pixels
// outside the image count as non-object), first in raster order.
cv::Point deepest_pixel_brute_force(const cv::Mat& mask) {
    double best = -1;
    cv::Point best_pixel;
    for (int r = 0; r < mask.rows; ++r)
        for (int c = 0; c < mask.cols; ++c) {
            if (!mask.at<uint8_t>(r, c)) continue;
            double nearest = std::numeric_limits<double>::max();
            for (int rr = -1; rr <= mask.rows; ++rr)
                for (int cc = -1; cc <= mask.cols; ++cc) {
                    bool inside = rr >= 0 && rr < mask.rows && cc >= 0 && cc < mask.cols;
                    if (inside && mask.at<uint8_t>(rr, cc)) continue;
                    nearest = std::min(nearest, std::hypot(rr - r, cc - c));
                }
            if (nearest > best + 1e-4) {
                best = nearest;
                best_pixel = {c, r};
            }
        }
    return best_pixel;
}

}  // namespace

TEST(SqaObjects, CentroidOutsideACShapeGivesTheDeepestPixel) {
    cv::Mat mask = cv::Mat::zeros(40, 40, CV_8U);
    cv::rectangle(mask, cv::Rect(5, 5, 30, 30), 1, cv::FILLED);
    cv::rectangle(mask, cv::Rect(14, 12, 21, 16), 0, cv::FILLED);  // opening to the right: a thick C
    std::vector<PredictedObject> objects = find_objects(labels_of(mask));
    ASSERT_EQ(objects.size(), 1u);
    const PredictedObject& c_shape = objects[0];

    cv::Moments m = cv::moments(mask, true);
    cv::Point centroid_pixel(static_cast<int>(std::lround(m.m10 / m.m00)), static_cast<int>(std::lround(m.m01 / m.m00)));
    ASSERT_EQ(mask.at<uint8_t>(centroid_pixel), 0) << "the test shape must have its centroid outside";

    cv::Point expected = deepest_pixel_brute_force(mask);
    EXPECT_EQ(c_shape.point, cv::Point2f(expected));
    EXPECT_EQ(mask.at<uint8_t>(cv::Point(c_shape.point)), 1);
}

TEST(SqaObjects, CentroidInsideIsUsedAsIs) {
    cv::Mat mask = cv::Mat::zeros(30, 30, CV_8U);
    cv::ellipse(mask, cv::Point(12, 17), cv::Size(8, 5), 20, 0, 360, 1, cv::FILLED);
    std::vector<PredictedObject> objects = find_objects(labels_of(mask));
    ASSERT_EQ(objects.size(), 1u);
    cv::Moments m = cv::moments(mask, true);
    EXPECT_NEAR(objects[0].point.x, m.m10 / m.m00, 1e-4);
    EXPECT_NEAR(objects[0].point.y, m.m01 / m.m00, 1e-4);
}

TEST(SqaObjects, BoxIsInclusiveXyxy) {
    cv::Mat mask = cv::Mat::zeros(20, 20, CV_8U);
    mask.at<uint8_t>(7, 5) = 1;                       // a single pixel at column 5, row 7
    mask(cv::Rect(10, 2, 4, 3)).setTo(1);             // columns 10..13, rows 2..4
    std::vector<PredictedObject> objects = find_objects(labels_of(mask), {8, 0});
    ASSERT_EQ(objects.size(), 2u);
    // Components are numbered in raster order of their first pixel: the rectangle (row 2) comes first.
    BoxPrompt rect = prompt_box(objects[0].bounds), dot = prompt_box(objects[1].bounds);
    EXPECT_EQ(objects[0].component, 1);
    EXPECT_EQ(std::vector<float>({rect.x0, rect.y0, rect.x1, rect.y1}), std::vector<float>({10, 2, 13, 4}));
    EXPECT_EQ(std::vector<float>({dot.x0, dot.y0, dot.x1, dot.y1}), std::vector<float>({5, 7, 5, 7}));
    EXPECT_EQ(objects[1].area, 1);
    EXPECT_EQ(objects[1].point, cv::Point2f(5, 7));
}

TEST(SqaObjects, FourAndEightConnectivity) {
    cv::Mat mask = cv::Mat::zeros(10, 10, CV_8U);
    mask.at<uint8_t>(2, 2) = 1;
    mask.at<uint8_t>(3, 3) = 1;  // touches the first only diagonally
    EXPECT_EQ(find_objects(labels_of(mask), {8, 0}).size(), 1u);
    EXPECT_EQ(find_objects(labels_of(mask), {4, 0}).size(), 2u);
    EXPECT_THROW(find_objects(labels_of(mask), {6, 0}), Error);
}

TEST(SqaObjects, MinimumAreaDropsSmallComponents) {
    cv::Mat mask = cv::Mat::zeros(30, 30, CV_8U);
    mask.at<uint8_t>(1, 1) = 1;                 // area 1
    mask(cv::Rect(5, 5, 5, 1)).setTo(1);        // area 5
    mask(cv::Rect(15, 15, 5, 4)).setTo(1);      // area 20
    EXPECT_EQ(find_objects(labels_of(mask)).size(), 3u);
    std::vector<PredictedObject> kept = find_objects(labels_of(mask), {8, 5});
    ASSERT_EQ(kept.size(), 2u);
    EXPECT_EQ(kept[0].area, 5);
    EXPECT_EQ(kept[1].area, 20);
    EXPECT_EQ(kept[0].component, 2);  // ids stay those of the full labelling
}

TEST(SqaObjects, EachClassIsSplitIntoItsOwnComponents) {
    cv::Mat labels = cv::Mat::zeros(20, 20, CV_32S);
    labels(cv::Rect(0, 0, 5, 5)).setTo(2);
    labels(cv::Rect(5, 0, 5, 5)).setTo(1);  // touches class 2 but is another object
    labels(cv::Rect(12, 12, 3, 3)).setTo(2);
    std::vector<PredictedObject> objects = find_objects(labels);
    ASSERT_EQ(objects.size(), 3u);
    EXPECT_EQ(objects[0].class_label, 1);
    EXPECT_EQ(objects[1].class_label, 2);
    EXPECT_EQ(objects[2].class_label, 2);
    EXPECT_EQ(objects[1].component, 1);
    EXPECT_EQ(objects[2].component, 2);
    for (const auto& object : objects) {
        cv::Mat expected = labels(object.bounds) == object.class_label;
        EXPECT_EQ(cv::countNonZero(object.mask), object.area);
        EXPECT_EQ(cv::countNonZero(expected), object.area);
    }
}

// Real ground-truth masks: polyps (few large objects) and retinal vessels (many thin ones).
TEST(SqaObjects, CountsMatchOpenCvLabellingOnRealMasks) {
    fs::path data = test::shared_data_dir();
    std::vector<fs::path> masks;
    std::string missing;
    for (const char* folder : {"polyp_polypgen_test/gt", "retina_drive_test_retinaunet/gt"}) {
        if (!fs::is_directory(data / folder)) {
            missing += (missing.empty() ? "" : " nor ") + (data / folder).string();
            continue;
        }
        std::vector<fs::path> found;
        for (const auto& entry : fs::directory_iterator(data / folder)) found.push_back(entry.path());
        std::sort(found.begin(), found.end());
        found.resize(std::min<size_t>(found.size(), 12));
        masks.insert(masks.end(), found.begin(), found.end());
    }
    if (masks.empty()) GTEST_SKIP() << "neither " << missing << " exists (real data beside the project)";
    long multi_object_masks = 0;
    for (const fs::path& path : masks) {
        LabelMap gt = read_label_map(path.string());
        cv::Mat foreground = gt.labels != 0;
        for (int connectivity : {4, 8}) {
            cv::Mat cc;
            int expected = cv::connectedComponents(foreground, cc, connectivity) - 1;
            std::vector<PredictedObject> objects = find_objects(gt.labels, {connectivity, 0});
            EXPECT_EQ(static_cast<int>(objects.size()), expected) << path << " connectivity " << connectivity;
            long total = 0;
            for (const auto& object : objects) {
                total += object.area;
                EXPECT_EQ(object.mask.at<uint8_t>(cv::Point(std::lround(object.point.x) - object.bounds.x,
                                                            std::lround(object.point.y) - object.bounds.y)),
                          1)
                    << path << ": the point prompt must lie on its object";
            }
            EXPECT_EQ(total, cv::countNonZero(foreground)) << path;
            if (objects.size() > 1) ++multi_object_masks;
        }
    }
    EXPECT_GT(multi_object_masks, 0) << "the sample should include masks with several objects";
}
