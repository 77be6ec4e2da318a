// Inline SVG plots for report.html: score against true Dice, and the score distribution.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "report/report_internal.hpp"

namespace sqasam::report_detail {
namespace {

constexpr double kWidth = 420, kHeight = 340;
constexpr double kLeft = 56, kRight = 16, kTop = 14, kBottom = 46;
constexpr const char* kFailureColour = "#d1495b";
constexpr const char* kSuccessColour = "#2e6fbb";

// A round tick step (1, 2 or 5 times a power of ten) giving about five intervals over range.
double round_step(double range) {
    const double raw = range / 5;
    const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
    for (double factor : {1.0, 2.0, 5.0})
        if (factor * magnitude >= raw) return factor * magnitude;
    return 10 * magnitude;
}

struct Axis {
    double low, high, pixel_low, pixel_high;
    double step = round_step(high - low);  // between ticks
    double map(double v) const { return pixel_low + (v - low) / (high - low) * (pixel_high - pixel_low); }
    int decimals() const { return step >= 1 ? 0 : step >= 0.1 ? 1 : 2; }
    int ticks() const { return static_cast<int>(std::floor((high - low) / step + 1e-9)) + 1; }
};

// Background, grid with tick labels, and the axis titles.
void frame(std::ostringstream& svg, const Axis& x, const Axis& y, const std::string& x_label,
           const std::string& y_label) {
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " << kWidth << " " << kHeight
        << "\" class=\"plot\" role=\"img\">";
    svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kWidth - kLeft - kRight << "\" height=\""
        << kHeight - kTop - kBottom << "\" fill=\"#fbfcfd\" stroke=\"#c9d1da\"/>";
    for (int i = 0; i < x.ticks(); ++i) {
        const double v = x.low + i * x.step, px = x.map(v);
        svg << "<line x1=\"" << px << "\" y1=\"" << kTop << "\" x2=\"" << px << "\" y2=\"" << kHeight - kBottom
            << "\" stroke=\"#e6eaef\"/><text x=\"" << px << "\" y=\"" << kHeight - kBottom + 16
            << "\" class=\"tick\" text-anchor=\"middle\">" << fixed(v, x.decimals()) << "</text>";
    }
    for (int i = 0; i < y.ticks(); ++i) {
        const double v = y.low + i * y.step, py = y.map(v);
        svg << "<line x1=\"" << kLeft << "\" y1=\"" << py << "\" x2=\"" << kWidth - kRight << "\" y2=\"" << py
            << "\" stroke=\"#e6eaef\"/><text x=\"" << kLeft - 6 << "\" y=\"" << py + 4
            << "\" class=\"tick\" text-anchor=\"end\">" << fixed(v, y.decimals()) << "</text>";
    }
    svg << "<text x=\"" << (kLeft + kWidth - kRight) / 2 << "\" y=\"" << kHeight - 8
        << "\" class=\"axis\" text-anchor=\"middle\">" << html_escape(x_label) << "</text>";
    svg << "<text transform=\"translate(14 " << (kTop + kHeight - kBottom) / 2
        << ") rotate(-90)\" class=\"axis\" text-anchor=\"middle\">" << html_escape(y_label) << "</text>";
}

}  // namespace

std::string scatter_svg(const std::vector<ScatterPoint>& points, const std::string& x_label, double failure_threshold) {
    // Scores live in [0, 1]; a confidence that never drops below 0.5 gets the narrower axis it needs.
    double x_min = 1;
    for (const auto& p : points) x_min = std::min(x_min, p.x);
    const double x_low = std::clamp(std::floor(x_min * 10) / 10, 0.0, 0.9);
    const Axis x{x_low, 1.0, kLeft, kWidth - kRight};
    const Axis y{0.0, 1.0, kHeight - kBottom, kTop};
    std::ostringstream svg;
    svg.precision(4);
    frame(svg, x, y, x_label, "true Dice");
    const double threshold_px = y.map(failure_threshold);
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << threshold_px << "\" x2=\"" << kWidth - kRight << "\" y2=\""
        << threshold_px << "\" stroke=\"#8a94a3\" stroke-dasharray=\"5 4\"/>";
    for (const auto& p : points) {
        const bool failed = p.y < failure_threshold;
        svg << "<circle cx=\"" << x.map(std::clamp(p.x, x_low, 1.0)) << "\" cy=\"" << y.map(std::clamp(p.y, 0.0, 1.0))
            << "\" r=\"3.6\" fill=\"" << (failed ? kFailureColour : kSuccessColour)
            << "\" fill-opacity=\"0.72\" stroke=\"#fff\" stroke-width=\"0.6\"><title>" << html_escape(p.name)
            << ": " << fixed(p.x, 3) << " / Dice " << fixed(p.y, 3) << "</title></circle>";
    }
    // The label goes last so that no dot hides it.
    svg << "<text x=\"" << kLeft + 5 << "\" y=\"" << threshold_px - 5
        << "\" class=\"tick halo\">failure threshold " << fixed(failure_threshold, 2) << "</text>";
    svg << "</svg>";
    return svg.str();
}

std::string histogram_svg(const std::vector<double>& values, const std::string& x_label) {
    constexpr int kBins = 10;
    std::vector<int> counts(kBins, 0);
    for (double v : values) ++counts[std::clamp(static_cast<int>(v * kBins), 0, kBins - 1)];
    const int highest = std::max(1, *std::max_element(counts.begin(), counts.end()));
    const double step = std::max(1.0, round_step(highest));  // whole images
    const double top = (std::floor(highest / step) + 1) * step;  // headroom above the highest bar
    const Axis x{0.0, 1.0, kLeft, kWidth - kRight};
    const Axis y{0.0, top, kHeight - kBottom, kTop, step};
    std::ostringstream svg;
    svg.precision(4);
    frame(svg, x, y, x_label, "images");
    for (int b = 0; b < kBins; ++b) {
        const double x0 = x.map(static_cast<double>(b) / kBins) + 1.5, x1 = x.map(static_cast<double>(b + 1) / kBins) - 1.5;
        const double y0 = y.map(counts[b]);
        svg << "<rect x=\"" << x0 << "\" y=\"" << y0 << "\" width=\"" << x1 - x0 << "\" height=\""
            << y.map(0) - y0 << "\" fill=\"" << kSuccessColour << "\" fill-opacity=\"0.8\"><title>"
            << fixed(static_cast<double>(b) / kBins, 1) << "–" << fixed(static_cast<double>(b + 1) / kBins, 1) << ": "
            << counts[b] << "</title></rect>";
    }
    svg << "</svg>";
    return svg.str();
}

}  // namespace sqasam::report_detail
