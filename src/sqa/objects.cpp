// Predicted objects and the prompts made from them.
#include <algorithm>
#include <cmath>
#include <set>

#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

std::set<int> class_labels(const cv::Mat& labels) {
    std::set<int> found;
    for (int r = 0; r < labels.rows; ++r) {
        const int* row = labels.ptr<int>(r);
        for (int c = 0; c < labels.cols; ++c)
            if (row[c] != 0) found.insert(row[c]);
    }
    return found;
}

// Raster index of a component's first pixel: it lies in the top row of its bounding box.
long first_pixel(const cv::Mat& components, int id, const cv::Rect& bounds) {
    const int* row = components.ptr<int>(bounds.y);
    for (int c = bounds.x; c < bounds.x + bounds.width; ++c)
        if (row[c] == id) return static_cast<long>(bounds.y) * components.cols + c;
    return -1;  // unreachable: the bounding box's top row holds a pixel of the component
}

// Dice and IoU from pixel counts; two empty masks agree perfectly.
Overlap overlap_from_counts(double intersection, double area_a, double area_b) {
    if (area_a + area_b == 0) return {1.0, 1.0};
    return {2 * intersection / (area_a + area_b), intersection / (area_a + area_b - intersection)};
}

}  // namespace

std::vector<PredictedObject> find_objects(const cv::Mat& labels, const ObjectOptions& options) {
    if (labels.type() != CV_32SC1) throw Error("", "find_objects: labels must be CV_32S");
    if (options.connectivity != 4 && options.connectivity != 8)
        throw Error("", "connectivity must be 4 or 8, not " + std::to_string(options.connectivity));
    std::vector<PredictedObject> objects;
    for (int class_label : class_labels(labels)) {
        cv::Mat components, stats, centroids;
        int count = cv::connectedComponentsWithStats(labels == class_label, components, stats, centroids,
                                                     options.connectivity, CV_32S);
        // Number components by their first pixel in raster order, whatever order the (possibly parallel)
        // labelling algorithm produced, so ids are reproducible.
        std::vector<std::pair<long, int>> order;
        for (int id = 1; id < count; ++id) {
            cv::Rect bounds(stats.at<int>(id, cv::CC_STAT_LEFT), stats.at<int>(id, cv::CC_STAT_TOP),
                            stats.at<int>(id, cv::CC_STAT_WIDTH), stats.at<int>(id, cv::CC_STAT_HEIGHT));
            order.emplace_back(first_pixel(components, id, bounds), id);
        }
        std::sort(order.begin(), order.end());
        for (size_t rank = 0; rank < order.size(); ++rank) {
            int id = order[rank].second;
            long area = stats.at<int>(id, cv::CC_STAT_AREA);
            if (area < options.min_area) continue;
            PredictedObject object;
            object.class_label = class_label;
            object.component = static_cast<int>(rank) + 1;
            object.area = area;
            object.bounds = cv::Rect(stats.at<int>(id, cv::CC_STAT_LEFT), stats.at<int>(id, cv::CC_STAT_TOP),
                                     stats.at<int>(id, cv::CC_STAT_WIDTH), stats.at<int>(id, cv::CC_STAT_HEIGHT));
            cv::Mat inside = components(object.bounds) == id;
            inside.convertTo(object.mask, CV_8U, 1.0 / 255.0);
            cv::Point2d centroid(centroids.at<double>(id, 0) - object.bounds.x,
                                 centroids.at<double>(id, 1) - object.bounds.y);
            object.point = prompt_point(object.mask, centroid) + cv::Point2f(object.bounds.tl());
            objects.push_back(std::move(object));
        }
    }
    return objects;
}

cv::Point2f prompt_point(const cv::Mat& mask, cv::Point2d centroid) {
    int col = static_cast<int>(std::lround(centroid.x)), row = static_cast<int>(std::lround(centroid.y));
    if (row >= 0 && row < mask.rows && col >= 0 && col < mask.cols && mask.at<uint8_t>(row, col))
        return cv::Point2f(static_cast<float>(centroid.x), static_cast<float>(centroid.y));

    cv::Mat padded, distance;
    cv::copyMakeBorder(mask, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, 0);
    cv::distanceTransform(padded, distance, cv::DIST_L2, cv::DIST_MASK_PRECISE, CV_32F);
    float deepest = -1;
    cv::Point2f best;
    for (int r = 0; r < mask.rows; ++r) {
        const float* row_distance = distance.ptr<float>(r + 1) + 1;
        for (int c = 0; c < mask.cols; ++c) {
            if (row_distance[c] > deepest) {
                deepest = row_distance[c];
                best = cv::Point2f(static_cast<float>(c), static_cast<float>(r));
            }
        }
    }
    return best;
}

BoxPrompt prompt_box(const cv::Rect& bounds) {
    return BoxPrompt{static_cast<float>(bounds.x), static_cast<float>(bounds.y),
                     static_cast<float>(bounds.x + bounds.width - 1), static_cast<float>(bounds.y + bounds.height - 1)};
}

Overlap overlap(const PredictedObject& object, const cv::Mat& image_mask) {
    cv::Mat inside = image_mask(object.bounds);
    double intersection = cv::countNonZero(inside & object.mask);
    return overlap_from_counts(intersection, static_cast<double>(object.area), cv::countNonZero(image_mask));
}

int boundary_band_width(cv::Size image_size) {
    return std::max(1, static_cast<int>(std::lround(0.02 * std::hypot(image_size.width, image_size.height))));
}

double boundary_iou(const cv::Mat& a, const cv::Mat& b, int band) {
    // Only the region holding either mask matters: everything around it is background in both.
    cv::Rect region = cv::boundingRect(a) | cv::boundingRect(b);
    if (region.empty()) return 1.0;
    auto inner_band = [&](const cv::Mat& mask) {
        cv::Mat padded, eroded;
        cv::copyMakeBorder(mask(region) != 0, padded, band, band, band, band, cv::BORDER_CONSTANT, 0);
        cv::erode(padded, eroded, cv::getStructuringElement(cv::MORPH_RECT, {2 * band + 1, 2 * band + 1}));
        return cv::Mat(padded & ~eroded);
    };
    const cv::Mat band_a = inner_band(a), band_b = inner_band(b);
    const double intersection = cv::countNonZero(band_a & band_b);
    const double united = cv::countNonZero(band_a | band_b);
    return united == 0 ? 1.0 : intersection / united;
}

double compactness(const cv::Mat& mask) {
    std::vector<std::vector<cv::Point>> contours;
    cv::Mat padded;
    cv::copyMakeBorder(mask != 0, padded, 1, 1, 1, 1, cv::BORDER_CONSTANT, 0);
    cv::findContours(padded, contours, cv::RETR_LIST, cv::CHAIN_APPROX_NONE);
    double perimeter = 0;
    for (const auto& contour : contours) perimeter += cv::arcLength(contour, true);
    const double area = cv::countNonZero(mask);
    if (perimeter <= 0) return area > 0 ? 1.0 : 0.0;  // a single pixel
    return std::min(1.0, 4 * M_PI * area / (perimeter * perimeter));
}

double dice(const cv::Mat& a, const cv::Mat& b) {
    cv::Mat a_on = a != 0, b_on = b != 0;
    return overlap_from_counts(cv::countNonZero(a_on & b_on), cv::countNonZero(a_on), cv::countNonZero(b_on)).dice;
}

}  // namespace sqasam
