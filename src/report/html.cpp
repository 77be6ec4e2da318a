// report.html: one self-contained page (inline CSS, inline SVG plots, PNG data: URIs) that opens offline.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include "report/report_internal.hpp"
#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "sqasam/sqa.hpp"

namespace sqasam {
namespace {

using report_detail::fixed;
using report_detail::html_escape;

constexpr std::size_t kLowestListed = 15;

constexpr const char* kStyle = R"css(
:root{--ink:#1d2733;--muted:#667382;--line:#dde2e8;--soft:#eef1f4;--accent:#2e6fbb;--bad:#d1495b;--bg:#f4f6f8}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1140px;margin:0 auto;padding:34px 28px 60px}
h1{font-size:27px;margin:0 0 2px;letter-spacing:-.01em}
h2{font-size:18px;margin:0 0 6px}
p{margin:6px 0}
.subtitle,.muted{color:var(--muted)}
.note{color:var(--muted);font-size:13px;margin:10px 0 0}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:22px 26px;margin-top:22px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-top:22px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 16px}
.card .value{font-size:25px;font-weight:650}
.card .label{color:var(--muted);font-size:13px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin-top:12px}
th,td{padding:6px 10px;text-align:right;vertical-align:top}
th:first-child,td:first-child,.left{text-align:left}
thead th{font-weight:600;border-bottom:1.5px solid var(--ink);white-space:nowrap}
tbody tr{border-bottom:1px solid var(--soft)}
table.paper{border-top:2px solid var(--ink);border-bottom:2px solid var(--ink)}
table.paper td{padding:9px 12px}
.ci{display:block;color:var(--muted);font-size:12px}
.best{font-weight:700}
tr.current{background:#eaf2fc}
.badge{display:inline-block;margin-left:6px;padding:0 7px;border-radius:9px;background:var(--accent);color:#fff;font-size:11px;font-weight:600}
.badge.default{background:#5c6b7a}
details summary{cursor:pointer;color:var(--accent);margin-top:12px;font-size:14px}
.notice strong{color:var(--ink)}
table.wide{font-size:14px}
table.wide thead th{white-space:normal}
table.wide td{white-space:nowrap}
table.wide th,table.wide td{padding:6px 7px}
.scroll{overflow-x:auto}
.plots{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px;margin-top:14px}
@media (max-width:820px){.plots{grid-template-columns:1fr}}
.plots h3{font-size:14px;margin:0 0 4px;font-weight:600}
svg.plot{width:100%;height:auto}
svg text.tick{font-size:11px;fill:#667382}
svg text.axis{font-size:12.5px;fill:#1d2733}
svg text.halo{paint-order:stroke;stroke:#fbfcfd;stroke-width:3px}
.notice{background:#fff8e5;border:1px solid #f0d58c;padding:11px 15px;border-radius:8px;margin-top:12px}
.tag{display:inline-block;padding:0 8px;border-radius:10px;background:#fde8eb;color:#a3283b;font-size:12px;margin:1px 3px 1px 0}
.error{color:#a3283b;font-size:13px}
.overlay{border-top:1px solid var(--line);padding:16px 0 6px}
.overlay:first-of-type{border-top:none}
.overlay-head{display:flex;gap:18px;align-items:baseline;flex-wrap:wrap}
.overlay-head strong{font-size:15px}
.panels{display:flex;gap:12px;flex-wrap:wrap;margin-top:8px}
figure{margin:0;max-width:300px}
figure img{display:block;max-width:300px;border-radius:6px;border:1px solid var(--line)}
figcaption{font-size:12px;color:var(--muted);text-align:center;margin-top:3px}
.legend{display:flex;gap:18px;flex-wrap:wrap;font-size:13px;color:var(--muted);margin-top:8px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;vertical-align:-1px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:10px 0 0;font-size:14px}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
footer{color:var(--muted);font-size:13px;margin-top:26px;text-align:center}
)css";

std::string capitalised(std::string word) {
    if (!word.empty()) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
    return word;
}

std::string number(const std::optional<double>& value, int decimals = 3) {
    return value ? fixed(*value, decimals) : "&mdash;";
}

// One metric cell of the paper table: value, interval below it, bold when best.
std::string metric_cell(const std::optional<double>& value, const std::optional<Interval>& interval, bool best) {
    std::string cell = std::string("<td") + (best ? " class=\"best\"" : "") + ">" + number(value);
    if (interval) cell += "<span class=\"ci\">[" + fixed(interval->low, 3) + ", " + fixed(interval->high, 3) + "]</span>";
    return cell + "</td>";
}

struct Column {
    const char* title;
    std::optional<double> Metrics::*value;
    std::optional<Interval> Metrics::*interval;  // nullptr when the metric has no interval
    bool higher_is_better;
};

const Column kColumns[] = {
    {"Pearson&nbsp;&uarr;", &Metrics::pearson, &Metrics::pearson_ci, true},
    {"Spearman&nbsp;&uarr;", &Metrics::spearman, &Metrics::spearman_ci, true},
    {"Bottom-25%&nbsp;&uarr;", &Metrics::bottom25, nullptr, true},
    {"Bottom-50%&nbsp;&uarr;", &Metrics::bottom50, nullptr, true},
    {"AUROC&nbsp;&uarr;", &Metrics::auroc, &Metrics::auroc_ci, true},
    {"AURC&nbsp;&darr;", &Metrics::aurc, &Metrics::aurc_ci, false},
};

// Whether row's value in column is the best among rows (ties are all best).
bool is_best(const Column& column, const Metrics& row, const std::vector<const Metrics*>& rows) {
    const auto& value = row.*column.value;
    if (!value) return false;
    for (const Metrics* other : rows) {
        const auto& theirs = other->*column.value;
        if (theirs && (column.higher_is_better ? *theirs > *value : *theirs < *value)) return false;
    }
    return rows.size() > 1;
}

std::string paper_table(const Evaluation& e, const EvalOptions& options, const std::string& unit) {
    std::vector<std::pair<std::string, const Metrics*>> rows{{"SQA-SAM", &e.sqa}};
    if (e.estimate) rows.emplace_back("Calibrated Dice estimate", &*e.estimate);
    if (e.model_confidence) rows.emplace_back("Model confidence", &*e.model_confidence);
    std::vector<const Metrics*> all;
    for (const auto& [name, metrics] : rows) all.push_back(metrics);

    std::ostringstream html;
    html << "<table class=\"paper\"><thead><tr><th>Quality measure</th><th>n</th>";
    for (const auto& column : kColumns) html << "<th>" << column.title << "</th>";
    html << "</tr></thead><tbody>";
    for (const auto& [name, metrics] : rows) {
        html << "<tr><td>" << name << "</td><td>" << metrics->n << "</td>";
        for (const auto& column : kColumns) {
            const std::optional<Interval> interval =
                column.interval ? metrics->*column.interval : std::optional<Interval>{};
            html << metric_cell(metrics->*column.value, interval, is_best(column, *metrics, all));
        }
        html << "</tr>";
    }
    html << "</tbody></table>";
    html << "<p class=\"note\">n: " << unit << "s with both the measure and a true Dice. Brackets: "
         << fixed(100 * options.confidence, 0) << "% percentile bootstrap intervals (" << options.bootstrap_resamples
         << " resamples, seed " << options.seed << "). Bottom-K: share of the K% worst " << unit << "s by true Dice that are "
         << "among the K% lowest by the measure (n<sub>K</sub> = &lceil;K&middot;n&rceil;, ties by " << unit << " name). "
         << "AUROC: how well a low value detects a failure (true Dice &lt; " << fixed(options.failure_threshold, 2)
         << "; " << e.sqa.n_failures << " of " << e.sqa.n << " " << unit << "s). AURC: area under the risk&ndash;coverage curve, "
         << "risk = 1 &minus; Dice, most trusted " << unit << "s first; the best any measure could reach here is "
         << number(e.sqa.optimal_aurc) << ".</p>";
    if (e.estimate)
        html << "<p class=\"note\">Calibrated Dice estimate: mean absolute error " << number(e.estimate_mae)
             << "; the true Dice lies inside the estimate's interval for "
             << (e.estimate_coverage ? fixed(100 * *e.estimate_coverage, 1) : "&mdash;") << "% of images.</p>";
    return html.str();
}

std::vector<report_detail::ScatterPoint> scatter_points(const std::vector<ImageResult>& images,
                                                        std::optional<double> ImageResult::*value) {
    std::vector<report_detail::ScatterPoint> points;
    for (const auto& image : images)
        if (image.*value && image.true_dice) points.push_back({image.image, *(image.*value), *image.true_dice});
    return points;
}

std::string plot_block(const std::string& title, const std::string& svg) {
    return "<div><h3>" + title + "</h3>" + svg + "</div>";
}

std::string plots_section(const ReportInput& input, bool with_ground_truth) {
    const auto& e = input.evaluation;
    std::ostringstream html;
    html << "<section><h2>" << (with_ground_truth ? "Score against true Dice" : "Score distribution") << "</h2>";
    if (with_ground_truth)
        html << "<p class=\"muted\">Each dot is one " << input.unit << "; <span style=\"color:#d1495b\">red</span>: true Dice below "
                "the failure threshold. Hover a dot for its name.</p>";
    html << "<div class=\"plots\">";
    if (with_ground_truth) {
        html << plot_block("SQA-SAM score &nbsp;<span class=\"muted\">Spearman " + number(e.sqa.spearman) + "</span>",
                           report_detail::scatter_svg(scatter_points(input.images, &ImageResult::score),
                                                      "SQA-SAM score", input.eval_options.failure_threshold));
        if (e.model_confidence)
            html << plot_block(
                "Model confidence &nbsp;<span class=\"muted\">Spearman " + number(e.model_confidence->spearman) +
                    "</span>",
                report_detail::scatter_svg(scatter_points(input.images, &ImageResult::model_confidence),
                                           "model confidence", input.eval_options.failure_threshold));
    } else {
        std::vector<double> scores, confidences;
        for (const auto& image : input.images) {
            if (image.score) scores.push_back(*image.score);
            if (image.model_confidence) confidences.push_back(*image.model_confidence);
        }
        html << plot_block("SQA-SAM score", report_detail::histogram_svg(scores, "SQA-SAM score"));
        if (!confidences.empty())
            html << plot_block("Model confidence", report_detail::histogram_svg(confidences, "model confidence"));
    }
    html << "</div></section>";
    return html.str();
}

bool is_this_run(const AblationRow& row, const ReportInput& input) {
    return row.reducer == input.reducer && row.mask_choice == input.mask_choice && row.aggregation == input.aggregation;
}

// Whether a configuration is the default for the run's SAM model family (default_prompting).
bool is_default_scoring(const ReportInput& input, Reducer reducer, MaskChoice mask_choice,
                        ImageAggregation aggregation) {
    ModelType type = ModelType::Auto;
    try {
        type = model_type_from_string(input.model.value("type", "auto"));
    } catch (const Error&) {
        // a model this build does not name (a test model): the SAM defaults
    }
    const PromptingDefaults defaults = default_prompting(type);
    return reducer == defaults.reducer && mask_choice == defaults.mask_choice && aggregation == defaults.aggregation;
}

bool is_default(const AblationRow& row, const ReportInput& input) {
    return is_default_scoring(input, row.reducer, row.mask_choice, row.aggregation);
}

// Rows of the ablation table, in the given order; rank is each row's place by Spearman.
std::string ablation_table(const std::vector<std::pair<std::size_t, const AblationRow*>>& rows,
                           const std::vector<const Metrics*>& all, const ReportInput& input, bool with_n) {
    std::ostringstream html;
    html << "<div class=\"scroll\"><table class=\"wide\"><thead><tr><th>#</th><th class=\"left\">Reducer</th><th class=\"left\">Mask "
            "choice</th><th class=\"left\">Aggregation</th>"
         << (with_n ? "<th>n</th>" : "");
    for (const auto& column : kColumns) html << "<th>" << column.title << "</th>";
    html << "</tr></thead><tbody>";
    for (const auto& [rank, row] : rows) {
        const bool current = is_this_run(*row, input);
        html << "<tr" << (current ? " class=\"current\"" : "") << "><td>" << rank << "</td><td class=\"left\">"
             << to_string(row->reducer) << (current ? "<span class=\"badge\">this run</span>" : "")
             << (is_default(*row, input) ? "<span class=\"badge default\">default</span>" : "") << "</td><td class=\"left\">"
             << to_string(row->mask_choice) << "</td><td class=\"left\">" << to_string(row->aggregation) << "</td>";
        if (with_n) html << "<td>" << row->metrics.n << "</td>";
        for (const auto& column : kColumns)
            html << metric_cell(row->metrics.*column.value, std::nullopt, is_best(column, row->metrics, all));
        html << "</tr>";
    }
    html << "</tbody></table></div>";
    return html.str();
}

// Every reducer x mask choice x aggregation, ranked by Spearman: the first few, the default and this run's in a
// short table, all of them behind a disclosure.
std::string ablation_section(const ReportInput& input) {
    constexpr std::size_t kTopShown = 5;
    const auto& rows = input.evaluation.ablation;
    std::vector<const AblationRow*> ranked;
    std::vector<const Metrics*> all;
    bool same_n = true;
    for (const auto& row : rows) {
        ranked.push_back(&row);
        all.push_back(&row.metrics);
        same_n = same_n && row.metrics.n == rows.front().metrics.n;
    }
    // Best Spearman first; undefined ones last, in their original order.
    std::stable_sort(ranked.begin(), ranked.end(), [](const AblationRow* a, const AblationRow* b) {
        return a->metrics.spearman.value_or(-2) > b->metrics.spearman.value_or(-2);
    });
    std::vector<std::pair<std::size_t, const AblationRow*>> shown, every;
    for (std::size_t i = 0; i < ranked.size(); ++i) {
        every.emplace_back(i + 1, ranked[i]);
        if (i < kTopShown || is_this_run(*ranked[i], input) || is_default(*ranked[i], input)) shown.emplace_back(i + 1, ranked[i]);
    }
    std::ostringstream html;
    html << "<section><h2>Which scoring configuration tracks Dice best</h2><p class=\"muted\">The image scores "
            "recomputed from the same SAM masks for each way of combining them, ranked by Spearman correlation with "
            "the true Dice"
         << (same_n && !rows.empty() ? " (" + std::to_string(rows.front().metrics.n) + " images each)" : "")
         << ". <b>Reducer</b>: how an object's point-prompt and box-prompt Dice become its score (max, mean, min, "
            "point or box alone). <b>Mask choice</b>: which of SAM's masks is compared (best_iou: the one SAM rates "
            "best; best_dice: the one closest to the prediction, an optimistic bound; single: SAM's single-mask "
            "output). <b>Aggregation</b>: mean over objects, or weighted by area. Bold: the best of each column. "
            "Choose a configuration on labelled data like yours before trusting it.</p>"
         << ablation_table(shown, all, input, !same_n);
    if (shown.size() < every.size())
        html << "<details><summary>All " << every.size() << " configurations</summary>"
             << ablation_table(every, all, input, !same_n) << "</details>";
    html << "</section>";
    return html.str();
}

// How a row is named on the page: the image, and its model when the run scored several models' predictions.
struct RowNamer {
    bool several_models = false;
    explicit RowNamer(const std::vector<ImageResult>& images) {
        for (const auto& image : images) several_models = several_models || image.model != images.front().model;
    }
    std::string operator()(const std::string& image, const std::string& model) const {
        return html_escape(image) + (several_models ? " <span class=\"muted\">&middot; " + html_escape(model) + "</span>" : "");
    }
};

std::string tags(const ImageResult& image) {
    std::string html;
    for (const auto& flag : image.flags) html += "<span class=\"tag\">" + html_escape(flag) + "</span>";
    return html;
}

std::string estimate_text(const ImageResult& image) {
    if (!image.estimate) return "&mdash;";
    return fixed(image.estimate->dice, 3) + " <span class=\"muted\">[" + fixed(image.estimate->low, 2) + ", " +
           fixed(image.estimate->high, 2) + "]</span>" +
           (image.estimate->outside.empty() ? "" : " <span class=\"tag\" title=\"outside the calibration's range: " +
                                                     html_escape(image.estimate->outside) + "\">extrapolated</span>");
}

// Every prediction in one table that sorts by any column (click a heading): the place to find an image.
std::string all_predictions_section(const ReportInput& input) {
    const bool with_truth = input.evaluation.n_with_ground_truth > 0;
    const bool with_confidence = input.evaluation.model_confidence.has_value();
    const bool with_estimate = input.evaluation.estimate.has_value();
    const RowNamer name(input.images);
    auto sortable = [](const std::optional<double>& value, const std::string& shown) {
        return "<td data-sort=\"" + (value ? fixed(*value, 6) : std::string("-1")) + "\">" + shown + "</td>";
    };
    std::ostringstream html;
    html << "<section><details><summary><h2 style=\"display:inline\">All predictions</h2> <span class=\"muted\">("
         << input.images.size() << " rows; click a column heading to sort)</span></summary>"
         << "<table class=\"sortable\"><thead><tr><th>Image</th><th>Score</th>"
         << (with_estimate ? "<th>Estimated Dice</th><th>Low</th><th>High</th>" : "")
         << (with_truth ? "<th>True Dice</th>" : "") << (with_confidence ? "<th>Model confidence</th>" : "")
         << "<th>Objects</th><th class=\"left\">Flags</th></tr></thead><tbody>";
    for (const auto& image : input.images) {
        html << "<tr><td data-sort=\"" << html_escape(image.image + " " + image.model) << "\">"
             << name(image.image, image.model) << "</td>" << sortable(image.score, number(image.score));
        if (with_estimate) {
            const auto& e = image.estimate;
            html << sortable(e ? std::optional(e->dice) : std::nullopt, e ? estimate_text(image) : "&mdash;")
                 << sortable(e ? std::optional(e->low) : std::nullopt, e ? fixed(e->low, 3) : "&mdash;")
                 << sortable(e ? std::optional(e->high) : std::nullopt, e ? fixed(e->high, 3) : "&mdash;");
        }
        if (with_truth) html << sortable(image.true_dice, number(image.true_dice));
        if (with_confidence) html << sortable(image.model_confidence, number(image.model_confidence));
        html << "<td data-sort=\"" << image.n_objects << "\">" << image.n_objects << "</td><td class=\"left\">"
             << tags(image) << "</td></tr>";
    }
    html << "</tbody></table></details></section>";
    return html.str();
}

// Sorting for table.sortable: numbers by value (data-sort), text by name; a second click reverses.
constexpr const char* kSortScript = R"js(
document.querySelectorAll('table.sortable th').forEach((th, column) => {
  th.style.cursor = 'pointer';
  th.addEventListener('click', () => {
    const body = th.closest('table').tBodies[0];
    const descending = th.dataset.order !== 'desc';
    th.dataset.order = descending ? 'desc' : 'asc';
    const key = row => row.cells[column].dataset.sort ?? row.cells[column].textContent;
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return descending ? -order : order;
    });
    rows.forEach(row => body.appendChild(row));
  });
});
)js";

std::vector<const ImageResult*> lowest_scored(const std::vector<ImageResult>& images) {
    std::vector<const ImageResult*> scored;
    for (const auto& image : images)
        if (image.score) scored.push_back(&image);
    std::stable_sort(scored.begin(), scored.end(), [](const ImageResult* a, const ImageResult* b) {
        return *a->score != *b->score ? *a->score < *b->score : a->image < b->image;
    });
    return scored;
}

// A column of the per-image table: shown when the run has the measure.
struct ImageColumn {
    const char* title;
    std::function<std::string(const ImageResult&)> cell;
    bool shown;
};

std::string lowest_section(const ReportInput& input) {
    const auto scored = lowest_scored(input.images);
    std::ostringstream html;
    html << "<section><h2>Predictions to check first</h2>";
    if (scored.empty()) return html.str() + "<p class=\"notice\">No " + input.unit + " received a score.</p></section>";
    const std::vector<ImageColumn> columns{
        {"Score", [](const ImageResult& i) { return number(i.score); }, true},
        {"Estimated Dice [interval]", [](const ImageResult& i) { return estimate_text(i); },
         input.evaluation.estimate.has_value()},
        {"Objects", [](const ImageResult& i) { return std::to_string(i.n_objects); }, true},
        {"True Dice", [](const ImageResult& i) { return number(i.true_dice); },
         input.evaluation.n_with_ground_truth > 0},
        {"Model confidence", [](const ImageResult& i) { return number(i.model_confidence); },
         input.evaluation.model_confidence.has_value()},
    };
    html << "<p class=\"muted\">The " << std::min(kLowestListed, scored.size())
         << " lowest SQA-SAM scores: the predictions least likely to be right.</p><table><thead><tr><th>" << capitalised(input.unit) << "</th>";
    for (const auto& column : columns)
        if (column.shown) html << "<th>" << column.title << "</th>";
    html << "<th class=\"left\">Flags</th></tr></thead><tbody>";
    const RowNamer name(input.images);
    for (std::size_t i = 0; i < std::min(kLowestListed, scored.size()); ++i) {
        html << "<tr><td>" << name(scored[i]->image, scored[i]->model) << "</td>";
        for (const auto& column : columns)
            if (column.shown) html << "<td>" << column.cell(*scored[i]) << "</td>";
        html << "<td class=\"left\">" << tags(*scored[i]) << "</td></tr>";
    }
    html << "</tbody></table></section>";
    return html.str();
}

std::string overlays_section(const ReportInput& input) {
    if (input.overlays.empty()) return "";
    using Row = std::pair<std::string, std::string>;  // image, model
    std::map<Row, const ImageResult*> image_named;
    for (const auto& image : input.images) image_named[{image.image, image.model}] = &image;
    std::map<Row, std::vector<const ObjectResult*>> objects_of;
    for (const auto& object : input.objects) objects_of[{object.image, object.model}].push_back(&object);
    const RowNamer name(input.images);
    std::vector<const ImageOverlay*> overlays;
    for (const auto& overlay : input.overlays) overlays.push_back(&overlay);
    std::stable_sort(overlays.begin(), overlays.end(),
                     [](const ImageOverlay* a, const ImageOverlay* b) { return a->score < b->score; });

    std::size_t without_point_masks = 0;
    for (const ImageOverlay* overlay : overlays) without_point_masks += !report_detail::has_foreground(overlay->sam_point_mask);
    const std::string model_type = input.model.value("type", "");

    std::ostringstream html;
    html << "<section><h2>Lowest-scored " << input.unit << "s, up close</h2>";
    // Which prompts the score rests on, and what to make of point-prompt masks a model was not trained for.
    std::string notice;
    if (input.reducer == Reducer::BoxOnly)
        notice += "This run's score uses the box prompt only (reducer box); the point-prompt panels are for "
                  "comparison. ";
    if (model_type == "lite_medsam" || model_type == "medsam")
        notice += html_escape(model_type) + " was trained on box prompts only, so its point-prompt masks say little" +
                  (without_point_masks > 0 ? " (empty for every point of " + std::to_string(without_point_masks) +
                                                 " of the " + std::to_string(overlays.size()) + " " + input.unit + "s below). "
                                           : ". ");
    else if (without_point_masks > 0)
        notice += "SAM gave an empty mask for every point prompt of " + std::to_string(without_point_masks) +
                  " of the " + std::to_string(overlays.size()) + " " + input.unit + "s below. ";
    if (!notice.empty()) html << "<p class=\"notice\">" << notice << "</p>";
    html << "<div class=\"legend\">"
            "<span><span class=\"swatch\" style=\"background:#ffd700\"></span>predicted contour</span>"
            "<span><span class=\"swatch\" style=\"background:#14a0eb\"></span>SAM mask from the centre point</span>"
            "<span><span class=\"swatch\" style=\"background:#c83cc8\"></span>SAM mask from the bounding box</span>"
            "<span><span class=\"swatch\" style=\"background:#e62828\"></span>prompts; the lowest object score "
            "of an image</span></div>";
    for (const ImageOverlay* overlay : overlays) {
        const auto found = image_named.find({overlay->image, overlay->model});
        const ImageResult* image = found == image_named.end() ? nullptr : found->second;
        html << "<div class=\"overlay\"><div class=\"overlay-head\"><strong>" << name(overlay->image, overlay->model)
             << "</strong><span>score " << fixed(overlay->score, 3) << "</span>";
        if (image && image->true_dice) html << "<span>true Dice " << fixed(*image->true_dice, 3) << "</span>";
        if (image) html << "<span>" << image->n_objects << " object" << (image->n_objects == 1 ? "" : "s")
                        << "</span><span>" << tags(*image) << "</span>";
        if (!overlay->caption.empty()) html << "<span>" << html_escape(overlay->caption) << "</span>";
        std::vector<const ObjectResult*> prompts;
        for (const ObjectResult& prompt : overlay->prompts) prompts.push_back(&prompt);
        if (const auto objects = objects_of.find({overlay->image, overlay->model});
            prompts.empty() && objects != objects_of.end())
            prompts = objects->second;
        html << "</div><div class=\"panels\">" << report_detail::overlay_panels_html(*overlay, input.reducer, prompts)
             << "</div></div>";
    }
    html << "</section>";
    return html.str();
}

std::string flagged_section(const std::vector<ImageResult>& images, const std::string& unit) {
    const ImageCounts counts = count_images(images);
    std::ostringstream html;
    html << "<section><h2>Flagged " << unit << "s</h2>";
    if (counts.flagged == 0) return html.str() + "<p class=\"muted\">No " + unit + " was flagged.</p></section>";
    std::size_t unscored = 0;
    std::ostringstream rows;
    const RowNamer name(images);
    for (const auto& image : images) {
        if (image.flags.empty() && image.error.empty()) continue;
        unscored += !image.score;
        rows << "<tr><td>" << name(image.image, image.model) << "</td><td>" << number(image.score)
             << "</td><td class=\"left\">" << tags(image) << "</td><td class=\"left error\">"
             << html_escape(image.error) << "</td></tr>";
    }
    html << "<p class=\"muted\">" << counts.flagged << " of " << counts.images << " " << unit << "s "
         << (counts.flagged == 1 ? "is" : "are") << " flagged, " << unscored
         << " of them without a score. The flags and problems say why.</p><table><thead><tr>"
                        "<th>" << capitalised(unit) << "</th><th>Score</th><th class=\"left\">Flags</th><th class=\"left\">Problem</th>"
                        "</tr></thead><tbody>"
         << rows.str() << "</tbody></table></section>";
    return html.str();
}

// The method's limit in words a reader acts on, near the top; with ground truth, this run's sharpest example.
std::string limit_notice(const ReportInput& input) {
    const ImageResult* fooled = nullptr;  // the failure whose score most overstates its true Dice
    for (const auto& image : input.images)
        if (image.score && image.true_dice && *image.true_dice < input.eval_options.failure_threshold &&
            (!fooled || *image.score - *image.true_dice > *fooled->score - *fooled->true_dice))
            fooled = &image;
    std::string html =
        "<p class=\"notice\"><strong>A low score says: look at this prediction. A high score does not clear it."
        "</strong> The score measures whether SAM, prompted with each predicted object, finds the same shape. SAM "
        "can agree with a wrong shape, and it never sees objects the model missed or a wrong class label. ";
    if (fooled)
        html += "In this run, " + RowNamer(input.images)(fooled->image, fooled->model) + " scored " + fixed(*fooled->score, 3) +
                " although its true Dice is " + fixed(*fooled->true_dice, 3) + ".";
    else
        html += "On the Kvasir polyp test set, for example, a prediction scored 0.903 with a true Dice of 0.135.";
    return html + "</p>";
}

std::string card(const std::string& value, const std::string& label) {
    return "<div class=\"card\"><div class=\"value\">" + value + "</div><div class=\"label\">" + label + "</div></div>";
}

std::string json_text(const nlohmann::json& value) {
    return value.is_string() ? value.get<std::string>() : value.dump();
}

// The run's settings as a reader needs them: each once, in words, leaving out what was not given. Settings this page
// does not know (a caller's own) follow under their own names, so that nothing recorded goes unshown.
std::vector<std::pair<std::string, std::string>> configuration_rows(const ReportInput& input) {
    const nlohmann::json summary = summary_json(input);
    const nlohmann::json& config = summary["config"];
    const nlohmann::json& model = summary["model"];
    std::set<std::string> taken;
    const auto take = [&](const nlohmann::json& from, const std::string& key) -> std::string {
        taken.insert((&from == &model ? "model." : "") + key);
        const auto found = from.find(key);
        return found == from.end() || found->is_null() ? "" : json_text(*found);
    };
    std::vector<std::pair<std::string, std::string>> rows;
    const auto add = [&](const std::string& label, const std::string& value) {
        if (!value.empty()) rows.emplace_back(label, value);
    };

    std::string model_text = take(model, "description");
    if (model_text.empty()) model_text = take(model, "type");
    else take(model, "type");
    if (take(config, "model_type") == "auto" && !model_text.empty()) model_text += " (type read from the checkpoint)";
    add("model", model_text);
    std::string checkpoint = take(config, "checkpoint");
    const std::string model_checkpoint = take(model, "checkpoint");
    if (checkpoint.empty()) checkpoint = model_checkpoint;
    const std::string bytes = take(config, "checkpoint_bytes");
    if (!checkpoint.empty() && !bytes.empty() && bytes != "0") checkpoint += " (" + bytes + " bytes)";
    add("checkpoint", checkpoint);
    add("precision", take(config, "precision"));
    add("images", take(config, "images"));
    add("predictions", take(config, "pred"));
    add("probability maps", take(config, "prob"));
    // The score command's prediction folders, one {pred, prob} per model, paired by position with "models".
    const nlohmann::json folders = config.value("predictions", nlohmann::json());
    const nlohmann::json models = config.value("models", nlohmann::json::array());
    if (folders.is_array() && models.is_array() &&
        std::all_of(folders.begin(), folders.end(), [](const nlohmann::json& f) { return f.is_object(); })) {
        take(config, "models");
        take(config, "predictions");
        for (std::size_t m = 0; m < folders.size(); ++m) {
            const std::string name = m < models.size() ? json_text(models[m]) : "";
            const std::string prob = folders[m].value("prob", "");
            add(folders.size() > 1 ? "predictions of " + name : "predictions",
                folders[m].value("pred", "") + (prob.empty() ? "" : " (probability maps: " + prob + ")"));
        }
    }
    add("ground truth", take(config, "gt"));
    add("manifest", take(config, "manifest"));
    add("soft prediction threshold", take(config, "pred_threshold"));

    const std::string connectivity = take(config, "connectivity"), min_area = take(config, "min_area");
    if (!connectivity.empty())
        add("objects", connectivity + "-connected components of each class" +
                           (min_area.empty() || min_area == "0" ? "" : ", at least " + min_area + " pixels"));
    add("scoring", "reducer " + take(config, "reducer") + ", mask choice " + take(config, "mask_choice") +
                       ", aggregation " + take(config, "aggregation") +
                       (is_default_scoring(input, input.reducer, input.mask_choice, input.aggregation) ? " (the defaults)" : ""));
    std::string evaluation = "failure: true Dice below " + fixed(input.eval_options.failure_threshold, 2) + "; " +
                             fixed(100 * input.eval_options.confidence, 0) + "% percentile bootstrap intervals, " +
                             std::to_string(input.eval_options.bootstrap_resamples) + " resamples, seed " +
                             std::to_string(input.eval_options.seed);
    take(config, "failure_threshold");
    take(config, "bootstrap");
    take(config, "journal_format");    // the journal's own version, nothing a reader chooses
    take(config, "prompting_reason");  // said where the scores are evaluated
    if (input.evaluation.n_with_ground_truth > 0) add("evaluation", evaluation);

    for (const auto& [key, value] : config.items())
        if (!taken.count(key)) add(key, json_text(value));
    for (const auto& [key, value] : model.items())
        if (!taken.count("model." + key)) add("model " + key, json_text(value));
    return rows;
}

std::string configuration_section(const ReportInput& input) {
    std::ostringstream html;
    html << "<section><h2>Run configuration</h2><dl>";
    for (const auto& [label, value] : configuration_rows(input))
        html << "<dt>" << html_escape(label) << "</dt><dd>" << html_escape(value) << "</dd>";
    html << "</dl></section>";
    return html.str();
}

}

// Rows are predictions: with several models, "300 predictions: 100 images x 3 models", as the console says.
std::string size_card(const ReportInput& input) {
    std::set<std::string> names, models;
    for (const auto& image : input.images) {
        names.insert(image.image);
        models.insert(image.model);
    }
    if (models.size() <= 1) return card(std::to_string(input.images.size()), input.unit + "s");
    return card(std::to_string(input.images.size()),
                "predictions: " + std::to_string(names.size()) + " " + input.unit + "s &times; " +
                    std::to_string(models.size()) + " models");
}  // namespace

void write_report_html(const std::string& path, const ReportInput& input) {
    const Evaluation& e = input.evaluation;
    const bool with_ground_truth = e.n_with_ground_truth > 0;
    std::vector<double> scores;
    for (const auto& image : input.images)
        if (image.score) scores.push_back(*image.score);
    const ImageCounts counts = count_images(input.images);
    std::optional<double> median;
    if (!scores.empty()) median = percentile(scores, 50);

    std::ostringstream html;
    html << "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            "content=\"width=device-width,initial-scale=1\"><title>SQA-SAM quality report</title><style>"
         << kStyle << "</style></head><body><main><header><h1>SQA-SAM quality report</h1><p class=\"subtitle\">"
         << "Segmentation quality estimated without ground truth by prompting the Segment Anything Model with each "
            "predicted object's centre point and bounding box (Zhang et al. 2023).</p></header><div class=\"cards\">"
         << size_card(input) << card(std::to_string(scores.size()), "scored")
         << card(std::to_string(input.objects.size()), "objects") << card(number(median), "median score")
         << (with_ground_truth ? card(std::to_string(e.n_with_ground_truth), "with ground truth") : "")
         << card(std::to_string(counts.flagged), "flagged") << "</div>" << limit_notice(input);

    html << "<section><h2>How well the score tracks the true Dice</h2>";
    if (!input.prompting_reason.empty())
        html << "<p class=\"muted\">How SAM was prompted: " << html_escape(input.prompting_reason) << "</p>";
    if (with_ground_truth)
        html << paper_table(e, input.eval_options, input.unit);
    else
        html << "<p class=\"notice\">No ground truth was given, so the scores cannot be checked against the true Dice "
                "here. Run again with ground-truth masks to get correlations, bottom-K accuracy, AUROC and AURC.</p>";
    html << "</section>";
    html << plots_section(input, with_ground_truth);
    if (with_ground_truth) html << ablation_section(input);
    html << lowest_section(input) << overlays_section(input);
    for (const ReportSection& section : input.sections)
        html << "<section><h2>" << html_escape(section.title) << "</h2>" << section.html << "</section>";
    html << flagged_section(input.images, input.unit) << all_predictions_section(input)
         << configuration_section(input);
    html << "<footer>Written by sqasam. Every figure is embedded in this file; it opens offline.</footer>"
            "</main><script>"
         << kSortScript << "</script></body></html>\n";
    write_file_atomically(path, html.str());
}

}  // namespace sqasam
