#pragma once
// Pieces shared by the report writers: number and text formatting, the SVG plots, the overlays.
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "sqasam/report.hpp"

namespace sqasam::report_detail {

std::string fixed(double value, int decimals);  // "0.8125"
// CSV (RFC 4180): a field quoted where needed, a number with 6 decimals (empty when absent), one row.
std::string csv_field(const std::string& text);
// A text cell (a name, a message) that a spreadsheet would run as a formula (it starts with =, +, -, @, a tab or a
// carriage return) with a leading apostrophe, which spreadsheets show as text; numbers never pass through it.
std::string csv_text(const std::string& text);
std::string csv_number(const std::optional<double>& value);
void csv_row(std::ostringstream& out, const std::vector<std::string>& fields);
std::string join(const std::vector<std::string>& parts, const std::string& separator);
// A Metrics record as summary.json writes it (absent values as null).
nlohmann::json metrics_json(const Metrics& m);
std::string html_escape(const std::string& text);
std::string base64(const std::vector<unsigned char>& bytes);

struct ScatterPoint {
    std::string name;
    double x = 0, y = 0;
};
// Quality value (x) against true Dice (y, 0..1) with the failure threshold drawn; inline SVG.
std::string scatter_svg(const std::vector<ScatterPoint>& points, const std::string& x_label, double failure_threshold);
// Counts of values in [0, 1] in ten bins; inline SVG.
std::string histogram_svg(const std::vector<double>& values, const std::string& x_label);

// A command's output files swapped in as one set (score: images.csv, ...; score-volumes: volumes.csv, ...): each
// writer writes its file (the path it is given) into folder/.report-staging; only when all are written is the old
// set removed and the new one renamed into place. A failure or a kill while writing leaves the old set as it was; a
// kill among the renames leaves part of the new set; never new files beside an older run's.
using OutputWriter = std::function<void(const std::string& path)>;
void write_output_set(const std::string& folder, const std::vector<std::pair<std::string, OutputWriter>>& files);

bool has_foreground(const cv::Mat& mask);  // any nonzero pixel (false for an empty Mat)

// Three panels for one image (prediction with each object's score, SAM point-prompt mask, SAM box-prompt mask) as
// <img> tags with PNG data: URIs; objects give the prompts and scores drawn on top. An empty point-prompt mask is
// said on its panel, and a panel whose prompt the run's score does not use (reducer box or point) is captioned so.
std::string overlay_panels_html(const ImageOverlay& overlay, Reducer reducer,
                                const std::vector<const ObjectResult*>& objects);

}  // namespace sqasam::report_detail
