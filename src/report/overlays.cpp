// Overlays of the lowest-scored images: the prediction's contour, SAM's masks and the prompts that produced
// them, drawn with OpenCV and embedded as PNG data: URIs.
#include <algorithm>
#include <cmath>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "report/report_internal.hpp"

namespace sqasam::report_detail {
namespace {

constexpr int kPanelSide = 300;  // longest side of a panel, in pixels
const cv::Scalar kPredictionColour(0, 215, 255);  // BGR: amber
const cv::Scalar kPointMaskColour(235, 160, 20);  // BGR: blue
const cv::Scalar kBoxMaskColour(200, 60, 200);    // BGR: magenta
const cv::Scalar kPromptColour(40, 40, 230);      // BGR: red
const cv::Scalar kWhite(255, 255, 255);
const cv::Scalar kLabelColour(70, 55, 40);        // BGR: dark slate, for score labels

cv::Mat as_bgr(const cv::Mat& picture) {
    cv::Mat bgr;
    if (picture.channels() == 1) cv::cvtColor(picture, bgr, cv::COLOR_GRAY2BGR);
    else if (picture.channels() == 4) cv::cvtColor(picture, bgr, cv::COLOR_BGRA2BGR);
    else bgr = picture;
    if (bgr.depth() != CV_8U) bgr.convertTo(bgr, CV_8U);
    return bgr;
}

// Nonzero pixels of mask, at the panel's size (an empty mask stays empty).
cv::Mat binary_at(const cv::Mat& mask, cv::Size size) {
    if (mask.empty()) return {};
    cv::Mat binary = mask != 0, resized;
    cv::resize(binary, resized, size, 0, 0, cv::INTER_NEAREST);
    return resized;
}

void draw_contour(cv::Mat& panel, const cv::Mat& mask, const cv::Scalar& colour, int thickness) {
    if (mask.empty()) return;
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(mask.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE);
    cv::drawContours(panel, contours, -1, colour, thickness, cv::LINE_AA);
}

void tint(cv::Mat& panel, const cv::Mat& mask, const cv::Scalar& colour) {
    if (mask.empty()) return;
    cv::Mat coloured(panel.size(), panel.type(), colour), blended;
    cv::addWeighted(panel, 0.55, coloured, 0.45, 0, blended);
    blended.copyTo(panel, mask);
    draw_contour(panel, mask, colour, 2);
}

// Text on a filled box, its baseline-left corner at `at`, kept inside the panel.
void draw_label(cv::Mat& panel, const std::string& text, cv::Point at, const cv::Scalar& background) {
    constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
    constexpr double kScale = 0.42;
    int baseline = 0;
    const cv::Size size = cv::getTextSize(text, kFont, kScale, 1, &baseline);
    at.x = std::clamp(at.x, 2, std::max(2, panel.cols - size.width - 2));
    at.y = std::clamp(at.y, size.height + 2, std::max(size.height + 2, panel.rows - baseline - 2));
    cv::rectangle(panel, cv::Rect(at.x - 2, at.y - size.height - 2, size.width + 4, size.height + baseline + 4),
                  background, cv::FILLED);
    cv::putText(panel, text, at, kFont, kScale, kWhite, 1, cv::LINE_AA);
}

// Each object's score just above its box; of several objects the lowest is red and drawn last, so that one sees
// which object pulled the image score down.
void label_scores(cv::Mat& panel, const std::vector<const ObjectResult*>& objects, double sx, double sy) {
    std::vector<const ObjectResult*> ordered = objects;
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const ObjectResult* a, const ObjectResult* b) { return a->score > b->score; });
    for (const ObjectResult* o : ordered) {
        const bool lowest = ordered.size() > 1 && o == ordered.back();
        draw_label(panel, fixed(o->score, 2),
                   {static_cast<int>(std::lround(o->box[0] * sx)), static_cast<int>(std::lround(o->box[1] * sy)) - 5},
                   lowest ? kPromptColour : kLabelColour);
    }
}

std::string png_figure(const cv::Mat& panel, const std::string& caption) {
    std::vector<unsigned char> png;
    cv::imencode(".png", panel, png);
    return "<figure><img alt=\"" + html_escape(caption) + "\" src=\"data:image/png;base64," + base64(png) +
           "\"><figcaption>" + html_escape(caption) + "</figcaption></figure>";
}

}  // namespace

bool has_foreground(const cv::Mat& mask) { return !mask.empty() && cv::countNonZero(mask) > 0; }

std::string overlay_panels_html(const ImageOverlay& overlay, Reducer reducer,
                                const std::vector<const ObjectResult*>& objects) {
    if (overlay.bgr.empty()) return "<p class=\"muted\">No picture was kept for this image.</p>";
    const cv::Mat image = as_bgr(overlay.bgr);
    const double scale = std::min(1.0, static_cast<double>(kPanelSide) / std::max(image.cols, image.rows));
    const cv::Size size(std::max(1, static_cast<int>(std::lround(image.cols * scale))),
                        std::max(1, static_cast<int>(std::lround(image.rows * scale))));
    cv::Mat base;
    cv::resize(image, base, size, 0, 0, cv::INTER_AREA);
    const cv::Mat prediction = binary_at(overlay.prediction, size);
    // Masks may come at another resolution than the picture; coordinates scale with the picture.
    const double sx = static_cast<double>(size.width) / image.cols, sy = static_cast<double>(size.height) / image.rows;

    cv::Mat predicted = base.clone();
    draw_contour(predicted, prediction, kPredictionColour, 2);
    label_scores(predicted, objects, sx, sy);

    cv::Mat point_panel = base.clone();
    const bool no_point_mask = !has_foreground(overlay.sam_point_mask);
    tint(point_panel, binary_at(overlay.sam_point_mask, size), kPointMaskColour);
    draw_contour(point_panel, prediction, kPredictionColour, 1);
    for (const ObjectResult* o : objects) {
        const cv::Point centre(static_cast<int>(std::lround((o->point[0] + 0.5) * sx - 0.5)),
                               static_cast<int>(std::lround((o->point[1] + 0.5) * sy - 0.5)));
        cv::circle(point_panel, centre, 6, kWhite, cv::FILLED, cv::LINE_AA);
        cv::circle(point_panel, centre, 4, kPromptColour, cv::FILLED, cv::LINE_AA);
    }

    if (no_point_mask) draw_label(point_panel, "SAM gave no mask for the points", {8, size.height - 8}, kLabelColour);

    cv::Mat box_panel = base.clone();
    tint(box_panel, binary_at(overlay.sam_box_mask, size), kBoxMaskColour);
    draw_contour(box_panel, prediction, kPredictionColour, 1);
    for (const ObjectResult* o : objects) {
        const cv::Point corner0(static_cast<int>(std::lround(o->box[0] * sx)), static_cast<int>(std::lround(o->box[1] * sy)));
        const cv::Point corner1(static_cast<int>(std::lround((o->box[2] + 1) * sx)) - 1,
                                static_cast<int>(std::lround((o->box[3] + 1) * sy)) - 1);
        cv::rectangle(box_panel, corner0, corner1, kWhite, 3, cv::LINE_AA);
        cv::rectangle(box_panel, corner0, corner1, kPromptColour, 1, cv::LINE_AA);
    }

    const std::string unused = " (not used for the score)";
    return png_figure(predicted, "prediction, score of each object") +
           png_figure(point_panel, std::string(no_point_mask ? "SAM, point prompt: empty mask" : "SAM, point prompt") +
                                       (reducer == Reducer::BoxOnly ? unused : "")) +
           png_figure(box_panel, "SAM, box prompt" + (reducer == Reducer::PointOnly ? unused : ""));
}

}  // namespace sqasam::report_detail
