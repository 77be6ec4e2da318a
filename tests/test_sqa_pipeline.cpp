// One item from files to results (per-file problems become flags), and the journal behind --resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

namespace {

// A segmenter whose masks are the object's bounding boxes (every candidate, IoU prediction 0.5), counting how
// often an image is embedded.
struct BoxSam {
    int images_set = 0;
    MaskSource operator()(const cv::Mat& rgb) {
        ++images_set;
        cv::Size size = rgb.size();
        return [size](const std::vector<Prompt>& prompts) {
            std::vector<MaskPrediction> out;
            for (const Prompt& prompt : prompts) {
                cv::Mat mask = cv::Mat::zeros(size, CV_8U);
                const BoxPrompt box = prompt.box ? *prompt.box
                                                 : BoxPrompt{prompt.points[0].x - 3, prompt.points[0].y - 3,
                                                             prompt.points[0].x + 3, prompt.points[0].y + 3};
                cv::rectangle(mask, cv::Point(int(box.x0), int(box.y0)), cv::Point(int(box.x1), int(box.y1)), 1,
                              cv::FILLED);
                MaskPrediction p;
                p.num_masks = 4;  // one decoder pass: the single-mask output and the 3 multimask ones
                p.height = size.height;
                p.width = size.width;
                for (int k = 0; k < p.num_masks; ++k) p.masks.insert(p.masks.end(), mask.begin<uint8_t>(), mask.end<uint8_t>());
                p.iou_predictions.assign(p.num_masks, 0.5f);
                out.push_back(std::move(p));
            }
            return out;
        };
    }
};

class SqaPipeline : public ::testing::Test {
protected:
    fs::path root = test::temp_dir("sqa_pipeline");
    BoxSam sam;
    Segmenter segmenter = std::ref(sam);
    Dataset dataset{{}, {{"pred", false}}, true};

    std::string write(const std::string& name, const cv::Mat& m) {
        fs::path path = root / name;
        fs::create_directories(path.parent_path());
        EXPECT_TRUE(cv::imwrite(path.string(), m));
        return path.string();
    }
    DatasetItem item(const std::string& name, const cv::Mat& image, const cv::Mat& pred, const cv::Mat& gt) {
        DatasetItem it;
        it.name = name;
        it.image = write("images/" + name + ".png", image);
        it.predictions.resize(1);
        if (!pred.empty()) it.predictions[0].pred = write("pred/" + name + ".png", pred);
        if (!gt.empty()) it.gt = write("gt/" + name + ".png", gt);
        return it;
    }
    static cv::Mat image(cv::Size size = {48, 32}) { return cv::Mat(size, CV_8UC3, cv::Scalar(40, 90, 160)); }
    static cv::Mat mask(cv::Size size = {48, 32}) {
        cv::Mat m = cv::Mat::zeros(size, CV_8U);
        cv::circle(m, {12, 12}, 6, 255, cv::FILLED);
        m(cv::Rect(30, 20, 10, 8)).setTo(255);
        return m;
    }
    static bool has_flag(const ImageResult& r, const std::string& flag) {
        return std::find(r.flags.begin(), r.flags.end(), flag) != r.flags.end();
    }
    // The one model's outcome of an item.
    ImageOutcome score_one(const DatasetItem& it, const Dataset& in, const PipelineOptions& options = {}) {
        std::vector<ImageOutcome> outcomes = score_item(it, in, segmenter, options);
        EXPECT_EQ(outcomes.size(), 1u);
        return outcomes.at(0);
    }
};

}  // namespace

TEST_F(SqaPipeline, ScoresAnImageWithTrueDice) {
    ImageOutcome outcome = score_one(item("good", image(), mask(), mask()), dataset);
    EXPECT_EQ(sam.images_set, 1);
    EXPECT_TRUE(outcome.image.flags.empty()) << outcome.image.error;
    EXPECT_EQ(outcome.image.n_objects, 2);
    ASSERT_EQ(outcome.objects.size(), 2u);
    ASSERT_TRUE(outcome.image.score.has_value());
    EXPECT_DOUBLE_EQ(*outcome.image.score, (outcome.objects[0].score + outcome.objects[1].score) / 2);
    EXPECT_EQ(outcome.objects[1].score, 1.0);  // the rectangle equals its box mask
    ASSERT_TRUE(outcome.image.true_dice.has_value());
    EXPECT_EQ(*outcome.image.true_dice, 1.0);
}

TEST_F(SqaPipeline, PerFileProblemsAreFlagsNotExceptions) {
    DatasetItem missing = item("missing", image(), {}, {});
    ImageOutcome no_pred = score_one(missing, dataset);
    EXPECT_TRUE(has_flag(no_pred.image, "missing_prediction"));
    EXPECT_FALSE(no_pred.image.score.has_value());

    ImageOutcome mismatch = score_one(item("mismatch", image({48, 32}), mask({40, 32}), {}), dataset);
    EXPECT_TRUE(has_flag(mismatch.image, "size_mismatch"));
    EXPECT_NE(mismatch.image.error.find("40x32"), std::string::npos) << mismatch.image.error;

    DatasetItem corrupt = item("corrupt", image(), mask(), {});
    std::ofstream(corrupt.image, std::ios::trunc) << "garbage";
    ImageOutcome unreadable = score_one(corrupt, dataset);
    EXPECT_TRUE(has_flag(unreadable.image, "read_error"));
    EXPECT_NE(unreadable.image.error.find(corrupt.image), std::string::npos);

    cv::Mat coloured;
    cv::cvtColor(mask(), coloured, cv::COLOR_GRAY2BGR);
    coloured.at<cv::Vec3b>(0, 0) = {0, 0, 255};
    ImageOutcome garbage = score_one(item("garbage", image(), coloured, {}), dataset);
    EXPECT_TRUE(has_flag(garbage.image, "prediction_error"));

    DatasetItem no_gt = item("no_gt", image(), mask(), {});
    ImageOutcome scored_without_gt = score_one(no_gt, dataset);
    EXPECT_TRUE(has_flag(scored_without_gt.image, "missing_gt"));
    EXPECT_TRUE(scored_without_gt.image.score.has_value());
    EXPECT_FALSE(scored_without_gt.image.true_dice.has_value());

    EXPECT_EQ(sam.images_set, 1) << "SAM runs only for the image that could be scored";
}

TEST_F(SqaPipeline, ProbabilityMapsGiveModelConfidenceAndTheirProblemsLeaveTheImageScored) {
    Dataset with_prob{{}, {{"pred", true}}, true};
    cv::Mat probability(32, 48, CV_8U, cv::Scalar(51));  // p = 0.2 everywhere
    DatasetItem good = item("prob", image(), mask(), mask());
    good.predictions[0].prob = write("prob/prob.png", probability);
    ImageOutcome outcome = score_one(good, with_prob);
    ASSERT_TRUE(outcome.image.model_confidence.has_value()) << outcome.image.error;
    EXPECT_NEAR(*outcome.image.model_confidence, 0.8, 1e-6);

    DatasetItem no_prob = item("no_prob", image(), mask(), cv::Mat::zeros(10, 10, CV_8U));
    ImageOutcome partial = score_one(no_prob, with_prob);
    EXPECT_TRUE(has_flag(partial.image, "missing_prob"));
    EXPECT_TRUE(has_flag(partial.image, "gt_error"));  // ground truth of the wrong size
    EXPECT_NE(partial.image.error.find("10x10"), std::string::npos) << partial.image.error;
    EXPECT_FALSE(partial.image.true_dice.has_value());
    EXPECT_FALSE(partial.image.model_confidence.has_value());
    EXPECT_TRUE(partial.image.score.has_value());
}

TEST_F(SqaPipeline, EmptyPredictionHasNoScoreAndSkipsSam) {
    cv::Mat empty = cv::Mat::zeros(32, 48, CV_8U);
    ImageOutcome outcome = score_one(item("empty", image(), empty, mask()), dataset);
    EXPECT_TRUE(has_flag(outcome.image, "empty_prediction"));
    EXPECT_TRUE(has_flag(outcome.image, "no_objects"));
    EXPECT_FALSE(outcome.image.score.has_value());
    EXPECT_EQ(outcome.image.n_objects, 0);
    EXPECT_EQ(*outcome.image.true_dice, 0.0);
    EXPECT_EQ(sam.images_set, 0);

    PipelineOptions large_only;
    large_only.score.objects.min_area = 10000;
    ImageOutcome filtered = score_one(item("small", image(), mask(), {}), dataset, large_only);
    EXPECT_TRUE(has_flag(filtered.image, "no_objects"));
    EXPECT_FALSE(has_flag(filtered.image, "empty_prediction"));
}

TEST_F(SqaPipeline, JournalResumesExactlyAndDropsATornLine) {
    fs::path out = root / "out";
    nlohmann::json config = {{"reducer", "max"}, {"min_area", 0}};
    Dataset two{{item("a", image(), mask(), mask()), item("b", image(), mask(), {})}, {{"pred", false}}, true};
    RunResult first;
    {
        Journal journal(out, config, false);
        first = score_dataset(two, segmenter, {}, journal);
    }
    EXPECT_EQ(sam.images_set, 2);
    // A kill in the middle of the next append leaves a torn line.
    std::ofstream(out / ".partial/journal.jsonl", std::ios::app) << R"({"image": {"image": "c", "sco)";

    {  // the resumed journal holds the folder until it closes
        Journal resumed(out, config, true);
        ASSERT_EQ(resumed.finished().size(), 2u);
        EXPECT_TRUE(resumed.contains("a"));
        EXPECT_FALSE(resumed.contains("c"));
        RunResult again = score_dataset(two, segmenter, {}, resumed);
        EXPECT_EQ(sam.images_set, 2) << "nothing is recomputed";
        EXPECT_EQ(again.resumed, 2u);
        ASSERT_EQ(again.images.size(), first.images.size());
        for (size_t i = 0; i < first.images.size(); ++i) {
            EXPECT_EQ(again.images[i].image, first.images[i].image);
            EXPECT_EQ(again.images[i].score, first.images[i].score);  // bit-exact through JSON
            EXPECT_EQ(again.images[i].true_dice, first.images[i].true_dice);
            EXPECT_EQ(again.images[i].flags, first.images[i].flags);
            EXPECT_EQ(again.images[i].error, first.images[i].error);
        }
        ASSERT_EQ(again.objects.size(), first.objects.size());
        for (size_t i = 0; i < first.objects.size(); ++i) {
            EXPECT_EQ(again.objects[i].image, first.objects[i].image);
            EXPECT_EQ(again.objects[i].point_prompt.dice, first.objects[i].point_prompt.dice);
            EXPECT_EQ(again.objects[i].box_prompt.predicted_iou, first.objects[i].box_prompt.predicted_iou);
            EXPECT_EQ(again.objects[i].point[0], first.objects[i].point[0]);
            EXPECT_EQ(std::vector<int>(again.objects[i].box, again.objects[i].box + 4),
                      std::vector<int>(first.objects[i].box, first.objects[i].box + 4));
        }
        auto [point, box] = resumed.masks("a", 0);
        ASSERT_FALSE(point.empty());
        EXPECT_GT(cv::countNonZero(box), 0);
        EXPECT_TRUE(resumed.masks("c", 0).first.empty());
    }

    // A resume under other settings is refused; a fresh start forgets the journal.
    nlohmann::json other = {{"reducer", "min"}, {"min_area", 0}};
    EXPECT_THROW(Journal(out, other, true), Error);
    Journal fresh(out, other, false);
    EXPECT_TRUE(fresh.finished().empty());
}

// The soft-map threshold and the true Dice against the dataset's own per-image Dice (PraNet maps at 128).
TEST_F(SqaPipeline, TrueDiceMatchesThePublishedPerImageDiceOfSoftMaps) {
    fs::path folder = fs::path(test::shared_data_dir()) / "polyp_kvasir_pranet_split";
    if (!fs::exists(folder / "per_image_dice.csv"))
        GTEST_SKIP() << "no " << folder / "per_image_dice.csv" << " (real data beside the project)";
    Dataset pranet = match_folders({(folder / "images").string(), {{"", (folder / "pred").string(), ""}},
                                    (folder / "gt").string()});
    std::map<std::string, double> published;
    std::ifstream csv(folder / "per_image_dice.csv");
    std::string line;
    std::getline(csv, line);
    ASSERT_NE(line.find("dice_pred_PraNet_official"), std::string::npos) << line;
    while (std::getline(csv, line)) {
        std::vector<std::string> fields;
        std::stringstream row(line);
        for (std::string field; std::getline(row, field, ',');) fields.push_back(field);
        published[fields[0]] = std::stod(fields[4]);  // dice_pred_PraNet_official
    }
    pranet.items.resize(std::min<size_t>(pranet.items.size(), 20));
    for (const DatasetItem& it : pranet.items) {
        PipelineOptions no_objects;
        no_objects.score.objects.min_area = std::numeric_limits<long>::max();  // keeps SAM out of it
        ImageOutcome outcome = score_one(it, pranet, no_objects);
        ASSERT_TRUE(outcome.image.true_dice.has_value()) << it.name << ": " << outcome.image.error;
        EXPECT_NEAR(*outcome.image.true_dice, published.at(it.name), 5e-5) << it.name;
    }
    EXPECT_EQ(sam.images_set, 0);
}

TEST_F(SqaPipeline, SeveralModelsShareOneEmbeddingAndAreComparedWithEachOther) {
    Dataset two_models{{}, {{"exact", false}, {"shifted", false}}, true};
    DatasetItem it = item("pair", image(), mask(), mask());
    // The second model: the same shapes one column to the right, as a soft map (it is its own probability map).
    cv::Mat shifted = cv::Mat::zeros(32, 48, CV_8U);
    mask()(cv::Rect(0, 0, 47, 32)).copyTo(shifted(cv::Rect(1, 0, 47, 32)));
    // Values 20..59 and 200..239: more distinct levels than a label map has, so a soft map.
    cv::Mat soft(32, 48, CV_8U);
    for (int r = 0; r < soft.rows; ++r)
        for (int c = 0; c < soft.cols; ++c) soft.at<uint8_t>(r, c) = (shifted.at<uint8_t>(r, c) ? 200 : 20) + (r + c) % 40;
    cv::Mat soft_probability;
    soft.convertTo(soft_probability, CV_32F, 1.0 / 255);
    it.predictions.push_back({write("shifted/pair.png", soft), ""});

    std::vector<ImageOutcome> outcomes = score_item(it, two_models, segmenter, {});
    ASSERT_EQ(outcomes.size(), 2u);
    EXPECT_EQ(sam.images_set, 1) << "one embedding for both models";
    EXPECT_EQ(outcomes[0].image.model, "exact");
    EXPECT_EQ(outcomes[1].image.model, "shifted");
    const double between = dice(mask(), shifted);
    ASSERT_LT(between, 1.0);
    for (const ImageOutcome& outcome : outcomes) {
        EXPECT_TRUE(outcome.image.score.has_value()) << outcome.image.error;
        ASSERT_TRUE(outcome.image.features.count("model_agreement"));
        EXPECT_NEAR(outcome.image.features.at("model_agreement"), between, 1e-12);
        for (const ObjectResult& object : outcome.objects) EXPECT_EQ(object.model, outcome.image.model);
    }
    EXPECT_NEAR(*outcomes[1].image.true_dice, between, 1e-12);
    EXPECT_FALSE(outcomes[0].image.model_confidence.has_value()) << "a binary prediction has no probabilities";
    ASSERT_TRUE(outcomes[1].image.model_confidence.has_value());
    EXPECT_NEAR(*outcomes[1].image.model_confidence, model_confidence(soft_probability), 1e-9);
    EXPECT_TRUE(outcomes[1].image.features.count("soft_dice"));

    // One model's missing file leaves the other scored, and agreement needs two usable predictions.
    DatasetItem half = item("half", image(), mask(), {});
    half.predictions.push_back({(root / "shifted/none.png").string(), ""});
    std::vector<ImageOutcome> partial = score_item(half, two_models, segmenter, {});
    EXPECT_TRUE(partial[0].image.score.has_value());
    EXPECT_FALSE(partial[0].image.features.count("model_agreement"));
    EXPECT_TRUE(has_flag(partial[1].image, "missing_prediction"));

    // The journal keeps both models of an image on one line and gives them back in order.
    fs::path out = root / "two_out";
    Dataset run{{it}, two_models.models, true};
    {
        Journal journal(out, {{"models", 2}}, false);
        score_dataset(run, segmenter, {}, journal);
    }
    Journal resumed(out, {{"models", 2}}, true);
    ASSERT_EQ(resumed.finished().size(), 1u);
    ASSERT_EQ(resumed.finished()[0].size(), 2u);
    EXPECT_EQ(resumed.finished()[0][1].image.model, "shifted");
    EXPECT_EQ(resumed.finished()[0][1].image.features, outcomes[1].image.features);
    EXPECT_FALSE(resumed.masks("pair", 1).first.empty());
}
