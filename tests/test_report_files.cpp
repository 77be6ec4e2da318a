// The files `sqasam score` writes: CSV quoting and columns, summary.json's shape, report.html being
// self-contained, atomic writes, and a headless-Chromium screenshot of the page that must not be blank.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/report.hpp"
#include "test_support.hpp"

namespace sqasam {
namespace {

using sqasam::test::read_text;

namespace fs = std::filesystem;
using test::read_csv;

// A synthetic picture: a smooth background with one bright blob, and masks near the blob.
ImageOverlay synthetic_overlay(const ImageResult& image, const ObjectResult& object) {
    ImageOverlay overlay;
    overlay.image = image.image;
    overlay.score = *image.score;
    overlay.bgr.create(240, 320, CV_8UC3);
    for (int y = 0; y < 240; ++y)
        for (int x = 0; x < 320; ++x) overlay.bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(60 + x / 8, 70 + y / 6, 150 + x / 5);
    const cv::Point centre(static_cast<int>(object.point[0]), static_cast<int>(object.point[1]));
    cv::ellipse(overlay.bgr, centre, {60, 40}, 20, 0, 360, cv::Scalar(120, 150, 235), cv::FILLED);
    overlay.prediction = cv::Mat::zeros(240, 320, CV_8UC1);
    cv::ellipse(overlay.prediction, centre, {55, 38}, 20, 0, 360, 255, cv::FILLED);
    overlay.sam_point_mask = cv::Mat::zeros(240, 320, CV_8UC1);
    cv::circle(overlay.sam_point_mask, centre, 30, 1, cv::FILLED);
    overlay.sam_box_mask = cv::Mat::zeros(240, 320, CV_8UC1);
    cv::ellipse(overlay.sam_box_mask, centre + cv::Point(6, 4), {62, 42}, 15, 0, 360, 1, cv::FILLED);
    return overlay;
}

// A run of n images: scores that follow the true Dice with noise, two flagged images, overlays of the lowest.
ReportInput sample_run(int n, bool with_ground_truth) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> uniform(0, 1);
    std::normal_distribution<double> noise(0, 0.08);
    ReportInput input;
    for (int i = 0; i < n; ++i) {
        ImageResult image;
        image.image = "case_" + std::to_string(100 + i);
        const double u = uniform(rng);
        const double dice = 1 - 0.95 * u * u;
        if (with_ground_truth) image.true_dice = dice;
        image.model_confidence = std::clamp(0.8 + 0.15 * dice + noise(rng), 0.5, 1.0);
        if (i == 5) {
            image.flags = {"read_error"};
            image.error = image.image + ".png: cannot decode the image";
            image.true_dice.reset();
            image.model_confidence.reset();
            input.images.push_back(image);
            continue;
        }
        if (i == 9) {
            image.flags = {"empty_prediction", "no_objects"};
            input.images.push_back(image);
            continue;
        }
        image.n_objects = i % 4 == 0 ? 2 : 1;
        std::vector<const ObjectResult*> objects;
        for (int k = 0; k < image.n_objects; ++k) {
            ObjectResult o;
            o.image = image.image;
            o.component = k + 1;
            o.area = 2000 + 300 * k;
            o.point[0] = 140.0f + 20 * k;
            o.point[1] = 110.0f;
            o.box[0] = 90, o.box[1] = 75, o.box[2] = 195 + 20 * k, o.box[3] = 150;
            for (std::size_t c = 0; c < kAllMaskChoices.size(); ++c) {
                o.point_prompt.dice[c] = std::clamp(dice + noise(rng) - 0.05, 0.0, 1.0);
                o.box_prompt.dice[c] = std::clamp(dice + noise(rng), 0.0, 1.0);
                o.point_prompt.iou[c] = o.point_prompt.dice[c] / (2 - o.point_prompt.dice[c]);
                o.box_prompt.iou[c] = o.box_prompt.dice[c] / (2 - o.box_prompt.dice[c]);
                o.point_prompt.predicted_iou[c] = 0.85;
                o.box_prompt.predicted_iou[c] = 0.9;
            }
            o.score = o.score_with(input.reducer, input.mask_choice);
            input.objects.push_back(o);
        }
        for (std::size_t k = input.objects.size() - image.n_objects; k < input.objects.size(); ++k)
            objects.push_back(&input.objects[k]);
        image.score = image_score(objects, input.reducer, input.mask_choice, input.aggregation);
        input.images.push_back(image);
    }
    for (const auto& image : input.images) {
        if (!image.score) continue;
        const auto object = std::find_if(input.objects.begin(), input.objects.end(),
                                         [&](const ObjectResult& o) { return o.image == image.image; });
        keep_lowest_scored(input.overlays, synthetic_overlay(image, *object), 4);
    }
    input.eval_options.bootstrap_resamples = 200;
    input.evaluation = evaluate(input.images, input.objects, input.eval_options);
    input.model = {{"type", "vit_b"}, {"checkpoint", "sam_vit_b_01ec64.pth"}};
    input.config = {{"predictions", "pred/"}, {"threshold", 128}};
    return input;
}

TEST(ReportCsv, ImagesQuoteFieldsAndLeaveMissingValuesEmpty) {
    ImageResult plain, awkward, two_classes;
    plain.image = "plain";
    plain.model = "unet";
    plain.score = 0.5;
    plain.n_objects = 1;
    plain.true_dice = 0.25;
    plain.class_dice = {{1, 0.25}};
    awkward.image = "name, with \"quotes\"";
    awkward.flags = {"read_error", "no_objects"};
    awkward.error = "line one\nline two";
    two_classes.image = "two";
    two_classes.score = 0.75;
    two_classes.class_dice = {{1, 0.5}, {3, 0.125}};
    const fs::path dir = test::temp_dir("report_images_csv");
    write_images_csv((dir / "images.csv").string(), {plain, awkward, two_classes});

    const auto rows = read_csv(dir / "images.csv");
    ASSERT_EQ(rows.size(), 4u);
    const std::vector<std::string> header{"image", "model",     "score",           "n_objects",   "flags",
                                          "error", "true_dice", "model_confidence", "dice_class_1", "dice_class_3"};
    EXPECT_EQ(rows[0], header);
    EXPECT_EQ(rows[1],
              (std::vector<std::string>{"plain", "unet", "0.500000", "1", "", "", "0.250000", "", "0.250000", ""}));
    EXPECT_EQ(rows[2], (std::vector<std::string>{"name, with \"quotes\"", "", "", "0", "read_error;no_objects",
                                                 "line one\nline two", "", "", "", ""}));
    EXPECT_EQ(rows[3][8], "0.500000");
    EXPECT_EQ(rows[3][9], "0.125000");
}

TEST(ReportCsv, FormulaLikeTextCellsAreNeutralisedNumbersAreNot) {
    std::vector<ImageResult> images(5);
    const std::vector<std::string> names{"=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd"};
    for (std::size_t i = 0; i < images.size(); ++i) images[i].image = names[i];
    images[0].error = "=cmd|' /C calc'!A0";
    ObjectResult object;
    object.image = "@object";
    object.point_prompt.predicted_iou = {-0.25, -0.25, -0.25};  // SAM's IoU head can go below 0
    const fs::path dir = test::temp_dir("report_csv_formulas");
    write_images_csv((dir / "images.csv").string(), images);
    write_objects_csv((dir / "objects.csv").string(), {object});

    const auto rows = read_csv(dir / "images.csv");
    ASSERT_EQ(rows.size(), 6u);
    for (std::size_t i = 0; i < names.size(); ++i) EXPECT_EQ(rows[i + 1][0], "'" + names[i]);
    EXPECT_EQ(rows[1][5], "'=cmd|' /C calc'!A0");  // the error column
    const auto objects = read_csv(dir / "objects.csv");
    EXPECT_EQ(objects[1][0], "'@object");
    const auto column = std::find(objects[0].begin(), objects[0].end(), "point_best_iou_predicted_iou");
    ASSERT_NE(column, objects[0].end());
    EXPECT_EQ(objects[1][column - objects[0].begin()], "-0.250000");
}

TEST(ReportCsv, SingleClassHasNoPerClassColumns) {
    ImageResult image;
    image.image = "a";
    image.class_dice = {{1, 0.9}};
    const fs::path dir = test::temp_dir("report_images_csv_single");
    write_images_csv((dir / "images.csv").string(), {image});
    EXPECT_EQ(read_csv(dir / "images.csv")[0].size(), 8u);
}

TEST(ReportCsv, FeaturesAndTheCalibratedEstimateGetColumns) {
    ImageResult with, without;
    with.image = "with";
    with.score = 0.8;
    with.features = {{"soft_dice", 0.75}, {"sam_dice_mean", 0.8}};
    with.estimate = DiceEstimate{0.7, 0.55, 0.85, "soft_dice"};
    without.image = "without";
    without.features = {{"sam_dice_mean", 0.5}};
    const fs::path dir = test::temp_dir("report_images_csv_features");
    write_images_csv((dir / "images.csv").string(), {with, without});
    const auto rows = read_csv(dir / "images.csv");
    ASSERT_EQ(rows.size(), 3u);
    auto column = [&](const std::string& name) {
        const auto found = std::find(rows[0].begin(), rows[0].end(), name);
        EXPECT_NE(found, rows[0].end()) << name;
        return static_cast<std::size_t>(found - rows[0].begin());
    };
    EXPECT_EQ(rows[1][column("estimated_dice")], "0.700000");
    EXPECT_EQ(rows[1][column("dice_low")], "0.550000");
    EXPECT_EQ(rows[1][column("dice_high")], "0.850000");
    EXPECT_EQ(rows[1][column("outside_calibration")], "soft_dice");
    EXPECT_EQ(rows[2][column("estimated_dice")], "");
    EXPECT_EQ(rows[1][column("soft_dice")], "0.750000");
    EXPECT_EQ(rows[2][column("soft_dice")], "");
    EXPECT_EQ(rows[2][column("sam_dice_mean")], "0.500000");
    EXPECT_LT(column("sam_dice_mean"), column("soft_dice")) << "features in image_features() order";
}

TEST(ReportCsv, ObjectsHaveEveryPromptAndMaskChoice) {
    const ReportInput input = sample_run(12, true);
    const fs::path dir = test::temp_dir("report_objects_csv");
    write_objects_csv((dir / "objects.csv").string(), input.objects);
    const auto rows = read_csv(dir / "objects.csv");
    ASSERT_EQ(rows.size(), input.objects.size() + 1);
    const auto& header = rows[0];
    ASSERT_EQ(header.size(), 11u + 2 * kAllMaskChoices.size() * 5 + 3);
    EXPECT_EQ(header[11], "point_" + to_string(kAllMaskChoices[0]) + "_dice");
    EXPECT_EQ(header.back(), "score");
    const ObjectResult& first = input.objects.front();
    const auto& row = rows[1];
    EXPECT_EQ(row[0], first.image);
    EXPECT_EQ(row[7], std::to_string(first.box[2]));
    const auto box_dice_column = std::find(header.begin(), header.end(), "box_" + to_string(MaskChoice::BestDice) + "_dice");
    ASSERT_NE(box_dice_column, header.end());
    EXPECT_NEAR(std::stod(row[box_dice_column - header.begin()]), first.box_prompt.dice[1], 1e-6);
    EXPECT_NEAR(std::stod(row.back()), first.score, 1e-6);
}

TEST(ReportSummary, HoldsMetricsConfigAblationAndNulls) {
    ReportInput input = sample_run(40, true);
    const nlohmann::json summary = summary_json(input);
    EXPECT_EQ(summary["n_images"], 40);
    EXPECT_EQ(summary["n_scored"], 38);
    EXPECT_EQ(summary["flags"]["no_objects"], 1);
    EXPECT_EQ(summary["flags"]["read_error"], 1);
    EXPECT_EQ(summary["sqa"]["n"], input.evaluation.sqa.n);
    EXPECT_DOUBLE_EQ(summary["sqa"]["spearman"].get<double>(), *input.evaluation.sqa.spearman);
    ASSERT_TRUE(summary["sqa"]["pearson_ci"].is_array());
    EXPECT_TRUE(summary["sqa"]["bottom25"].is_number());
    EXPECT_TRUE(summary["model_confidence"]["auroc"].is_number());
    EXPECT_EQ(summary["ablation"].size(), input.evaluation.ablation.size());
    EXPECT_EQ(summary["config"]["reducer"], to_string(input.reducer));
    EXPECT_EQ(summary["config"]["threshold"], 128);
    EXPECT_EQ(summary["model"]["type"], "vit_b");

    input.evaluation = evaluate(sample_run(10, false).images, {}, input.eval_options);
    const nlohmann::json without_truth = summary_json(input);
    EXPECT_TRUE(without_truth["sqa"]["pearson"].is_null());
    EXPECT_TRUE(without_truth["sqa"]["pearson_ci"].is_null());
    EXPECT_TRUE(without_truth["sqa"]["aurc"].is_null());
    EXPECT_TRUE(without_truth["ablation"].empty());
}

TEST(ReportFolder, WritesFourFilesAtomicallyAndASelfContainedPage) {
    const ReportInput input = sample_run(40, true);
    const fs::path dir = fs::path(test::temp_dir("report_folder")) / "nested" / "out";
    write_report_folder(dir.string(), input);
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename().string());
    EXPECT_EQ(names, (std::set<std::string>{"images.csv", "objects.csv", "summary.json", "report.html"}))
        << "no temporary file may be left behind";

    const std::string html = read_text(dir / "report.html");
    for (const char* external : {"src=\"http", "href=\"http", "url(", "@import", "<script src", "<link"})
        EXPECT_EQ(html.find(external), std::string::npos) << external;
    std::size_t pictures = 0;
    for (auto at = html.find("data:image/png;base64,"); at != std::string::npos;
         at = html.find("data:image/png;base64,", at + 1))
        ++pictures;
    EXPECT_EQ(pictures, 3 * input.overlays.size()) << "three panels per kept image";
    EXPECT_NE(html.find("<table class=\"paper\">"), std::string::npos);
    EXPECT_NE(html.find("Model confidence"), std::string::npos);
    EXPECT_NE(html.find("this run"), std::string::npos) << "the run's row is marked in the ablation";
    EXPECT_NE(html.find("cannot decode the image"), std::string::npos) << "flagged images are listed";

    const nlohmann::json summary = nlohmann::json::parse(read_text(dir / "summary.json"));
    EXPECT_EQ(summary, nlohmann::json::parse(summary_json(input).dump())) << "the file is what summary_json gives";
}

TEST(ReportFolder, AFailureWhileWritingLeavesTheOldSetWholeWithNoNewFileBesideIt) {
    const fs::path dir = test::temp_dir("report_folder_swap");
    write_report_folder(dir.string(), sample_run(12, true));
    std::map<std::string, std::string> old_set;
    for (const char* name : {"images.csv", "objects.csv", "summary.json", "report.html"})
        old_set[name] = read_text(dir / name);

    // Other images, and a configuration value that is not UTF-8 (which the score command escapes): JSON cannot
    // hold it, so writing stops after the CSVs, before summary.json.
    ReportInput broken = sample_run(20, true);
    broken.config["images"] = "caf\xe9";
    EXPECT_ANY_THROW(write_report_folder(dir.string(), broken));
    for (const auto& [name, contents] : old_set) EXPECT_EQ(read_text(dir / name), contents) << name;

    const ReportInput fixed = sample_run(20, true);
    write_report_folder(dir.string(), fixed);
    EXPECT_EQ(read_text(dir / "summary.json"), summary_json(fixed).dump(2) + "\n");
    EXPECT_FALSE(fs::exists(dir / ".report-staging"));
}

TEST(ReportFolder, WithoutGroundTruthThePageSaysSo) {
    const ReportInput input = sample_run(20, false);
    const fs::path dir = test::temp_dir("report_no_gt");
    write_report_html((dir / "report.html").string(), input);
    const std::string html = read_text(dir / "report.html");
    EXPECT_NE(html.find("No ground truth was given"), std::string::npos);
    EXPECT_EQ(html.find("<table class=\"paper\">"), std::string::npos);
    EXPECT_NE(html.find("Score distribution"), std::string::npos);
}

std::size_t occurrences(const std::string& text, const std::string& part) {
    std::size_t n = 0;
    for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
}

// What a clinician reading the page needs: the limit near the top with this run's sharpest example, counts that
// agree, the default configuration marked, each setting once, and an empty point-prompt mask said as such.
TEST(ReportPage, SaysTheLimitMarksTheDefaultAndShowsTheConfigurationOnce) {
    ReportInput input = sample_run(40, true);
    input.model = {{"type", "lite_medsam"}, {"checkpoint", "/models/lite_medsam.pth"}, {"description", "lite_medsam: TinyViT"}};
    input.config = {{"checkpoint", "/models/lite_medsam.pth"}, {"model_type", "auto"}, {"prob", ""},
                    {"reducer", "max"}, {"calibration", "cal.json"}, {"journal_format", 2},
                    {"models", {"unet", "resunet"}},
                    {"predictions", {{{"pred", "/p/unet"}, {"prob", ""}}, {{"pred", "/p/res"}, {"prob", "/q/res"}}}}};
    input.prompting_reason = "Prompted with boxes.";
    input.overlays.front().sam_point_mask = cv::Mat::zeros(240, 320, CV_8UC1);
    const fs::path dir = test::temp_dir("report_page");
    write_report_html((dir / "report.html").string(), input);
    const std::string html = read_text(dir / "report.html");

    const auto limit = html.find("A high score does not clear it");
    ASSERT_NE(limit, std::string::npos);
    EXPECT_LT(limit, html.find("<table class=\"paper\">")) << "the limit comes before the tables";
    const ImageResult* fooled = nullptr;
    for (const ImageResult& image : input.images)
        if (image.score && image.true_dice && *image.true_dice < input.eval_options.failure_threshold &&
            (!fooled || *image.score - *image.true_dice > *fooled->score - *fooled->true_dice))
            fooled = &image;
    ASSERT_NE(fooled, nullptr) << "the sample run has failures";
    EXPECT_NE(html.find("In this run, " + fooled->image + " scored "), std::string::npos);

    const ImageCounts counts = count_images(input.images);
    EXPECT_EQ(counts.flagged, 2u);
    EXPECT_NE(html.find("<div class=\"value\">2</div><div class=\"label\">flagged</div>"), std::string::npos);
    EXPECT_NE(html.find("2 of 40 images are flagged, 2 of them without a score"), std::string::npos);
    EXPECT_EQ(summary_json(input)["n_flagged"], 2);

    // The short ablation table and the full one behind the disclosure each mark the default and this run once.
    EXPECT_EQ(occurrences(html, "<span class=\"badge default\">default</span>"), 2u);
    EXPECT_EQ(occurrences(html, "<span class=\"badge\">this run</span>"), 2u);
    EXPECT_NE(html.find("<summary>All 30 configurations</summary>"), std::string::npos);

    EXPECT_EQ(occurrences(html, "<dt>checkpoint</dt>"), 1u);
    EXPECT_EQ(html.find("<dt>model checkpoint</dt>"), std::string::npos);
    EXPECT_EQ(html.find("<dt>model_type</dt>"), std::string::npos);
    EXPECT_EQ(html.find("<dt>probability maps</dt>"), std::string::npos) << "a setting not given is left out";
    EXPECT_NE(html.find("<dd>lite_medsam: TinyViT (type read from the checkpoint)</dd>"), std::string::npos);
    EXPECT_NE(html.find("<dt>calibration</dt><dd>cal.json</dd>"), std::string::npos) << "unknown settings still show";
    EXPECT_NE(html.find("<dt>predictions of unet</dt><dd>/p/unet</dd>"), std::string::npos);
    EXPECT_NE(html.find("<dt>predictions of resunet</dt><dd>/p/res (probability maps: /q/res)</dd>"), std::string::npos);
    EXPECT_EQ(html.find("<dt>journal_format</dt>"), std::string::npos);
    EXPECT_EQ(occurrences(html, "Prompted with boxes."), 1u) << "said once, where the scores are evaluated";

    EXPECT_EQ(occurrences(html, "SAM, point prompt: empty mask"), 2u) << "caption and alt text of one panel";
    EXPECT_NE(html.find("lite_medsam was trained on box prompts only, so its point-prompt masks say little (empty "
                        "for every point of 1 of the 4 images below)"),
              std::string::npos);
    EXPECT_EQ(occurrences(html, "prediction, score of each object"), 2 * input.overlays.size());

    // A run scored on box prompts alone says that its point-prompt panels are not part of the score.
    input.reducer = Reducer::BoxOnly;
    write_report_html((dir / "box_only.html").string(), input);
    const std::string box_only = read_text(dir / "box_only.html");
    EXPECT_NE(box_only.find("This run's score uses the box prompt only"), std::string::npos);
    EXPECT_EQ(occurrences(box_only, "(not used for the score)"), 2 * input.overlays.size());
    EXPECT_EQ(occurrences(html, "(not used for the score)"), 0u);
    EXPECT_NE(html.find("<div class=\"value\">40</div><div class=\"label\">images</div>"), std::string::npos);

    // With two models' predictions of the same images, rows are predictions, counted as the console counts them,
    // and the limit's example names the model too.
    ReportInput two_models = input;
    for (ImageResult& image : two_models.images) image.model = "first";
    std::vector<ImageResult> second = two_models.images;
    for (ImageResult& image : second) image.model = "second";
    two_models.images.insert(two_models.images.end(), second.begin(), second.end());
    write_report_html((dir / "two_models.html").string(), two_models);
    const std::string both = read_text(dir / "two_models.html");
    EXPECT_NE(both.find("<div class=\"value\">80</div><div class=\"label\">predictions: 40 images &times; 2 "
                        "models</div>"),
              std::string::npos);
    EXPECT_NE(both.find("In this run, " + fooled->image + " <span class=\"muted\">&middot; first</span> scored "),
              std::string::npos);
}

TEST(ReportFolder, UnwritablePlaceIsAnErrorNamingTheFile) {
    const fs::path dir = test::temp_dir("report_unwritable");
    const std::string target = (dir / "missing-folder" / "images.csv").string();
    try {
        write_images_csv(target, {});
        FAIL() << "writing into a missing folder must fail";
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), target);
    }
}

TEST(ReportOverlays, KeepLowestScoredKeepsTheLowestInOrder) {
    std::vector<ImageOverlay> kept;
    for (double score : {0.9, 0.2, 0.7, 0.1, 0.5, 0.3}) {
        ImageOverlay overlay;
        overlay.image = std::to_string(score);
        overlay.score = score;
        keep_lowest_scored(kept, overlay, 3);
    }
    ASSERT_EQ(kept.size(), 3u);
    EXPECT_EQ(kept[0].score, 0.1);
    EXPECT_EQ(kept[1].score, 0.2);
    EXPECT_EQ(kept[2].score, 0.3);
}

bool chromium_installed() { return std::system("command -v chromium > /dev/null 2>&1") == 0; }

TEST(ReportScreenshot, HeadlessChromiumRendersThePage) {
    if (!chromium_installed()) GTEST_SKIP() << "chromium is not installed (scripts/deps.sh installs it)";
    const fs::path dir = test::temp_dir("report_screenshot");
    write_report_folder(dir.string(), sample_run(60, true));
    const fs::path screenshot = dir / "screenshot.png";
    const std::string command = "cd '" + dir.string() +
                                "' && HOME='" + dir.string() + "' timeout 180 chromium --headless --no-sandbox "
                                "--disable-gpu --hide-scrollbars --screenshot='" + screenshot.string() +
                                "' --window-size=1280,2000 'file://" + (dir / "report.html").string() +
                                "' > chromium.log 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << "chromium failed; see " << (dir / "chromium.log");
    const cv::Mat page = cv::imread(screenshot.string(), cv::IMREAD_COLOR);
    ASSERT_FALSE(page.empty()) << "no screenshot at " << screenshot;
    EXPECT_EQ(page.cols, 1280);

    std::set<int> colours;
    long not_background = 0, scatter_blue = 0;
    const cv::Vec3b background(0xf8, 0xf6, 0xf4);  // BGR of the page background
    for (int y = 0; y < page.rows; ++y)
        for (int x = 0; x < page.cols; ++x) {
            const cv::Vec3b p = page.at<cv::Vec3b>(y, x);
            colours.insert(p[0] << 16 | p[1] << 8 | p[2]);
            if (p != background && p != cv::Vec3b(255, 255, 255)) ++not_background;
            // The scatter plots' success dots (#2e6fbb at 72 % over white), allowing for anti-aliasing.
            if (std::abs(p[0] - 0xd0) < 30 && std::abs(p[1] - 0x9b) < 30 && std::abs(p[2] - 0x62) < 30) ++scatter_blue;
        }
    EXPECT_GT(colours.size(), 500u) << "text, tables and plots give many colours";
    EXPECT_GT(not_background, page.total() / 50) << "the page is mostly blank";
    EXPECT_GT(scatter_blue, 300) << "the inline SVG scatter plots did not render";
}

}  // namespace
}  // namespace sqasam
