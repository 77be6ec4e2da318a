// One bad image never ends a run (issue 12): any exception while handling an image becomes its flag; too many
// objects are refused before SAM; progress is heard inside an image; non-UTF-8 and 254-byte file names go through
// the journal; the journal recomputes changed inputs, drops vanished ones, names a malformed line, and holds the
// output folder's lock.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <new>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/sqa.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

namespace {

// SAM's stand-in: every mask is the whole image; counts the images it is shown. `fail` makes it throw instead.
struct WholeImageSam {
    int images_set = 0;
    std::function<void()> fail;
    MaskSource operator()(const cv::Mat& rgb) {
        ++images_set;
        if (fail) fail();
        const cv::Size size = rgb.size();
        return [size](const std::vector<Prompt>& prompts) {
            MaskPrediction whole;
            whole.num_masks = 4;
            whole.height = size.height;
            whole.width = size.width;
            whole.masks.assign(static_cast<size_t>(4) * size.area(), 1);
            whole.iou_predictions.assign(4, 0.5f);
            return std::vector<MaskPrediction>(prompts.size(), whole);
        };
    }
};

bool has_flag(const ImageResult& r, const std::string& flag) {
    return std::find(r.flags.begin(), r.flags.end(), flag) != r.flags.end();
}

class SqaHostile : public ::testing::Test {
protected:
    fs::path root = test::temp_dir("sqa_hostile");
    const std::vector<SegmentationModel> one_model{{"pred", false}};
    // A dataset of one model's predictions of the items.
    Dataset dataset_of(std::vector<DatasetItem> items) const { return {std::move(items), one_model, false}; }
    WholeImageSam sam;
    Segmenter segmenter = std::ref(sam);

    // An image, and a prediction with `dots` separate 1-pixel objects (at least one), under `name`.
    DatasetItem item(const std::string& name, int dots = 2) {
        fs::create_directories(root / "images");
        fs::create_directories(root / "pred");
        DatasetItem it;
        it.name = escape_non_utf8(name);
        it.image = (root / "images" / (name + ".png")).string();
        it.predictions = {{(root / "pred" / (name + ".png")).string(), ""}};
        EXPECT_TRUE(cv::imwrite(it.image, cv::Mat(40, 40, CV_8UC3, cv::Scalar(20, 90, 200))));
        cv::Mat pred = cv::Mat::zeros(40, 40, CV_8U);
        for (int k = 0; k < dots; ++k) pred.at<uint8_t>(2 * (k / 20), 2 * (k % 20)) = 255;
        EXPECT_TRUE(cv::imwrite(it.predictions[0].pred, pred));
        return it;
    }
};

}  // namespace

TEST_F(SqaHostile, AnyExceptionWhileHandlingAnImageBecomesItsFlagAndTheRunGoesOn) {
    const std::vector<std::pair<std::function<void()>, std::string>> failures{
        {[] { throw Error("", "the image is 2x5000 pixels: too thin"); }, "too thin"},
        {[] { cv::Mat empty; cv::resize(empty, empty, {0, 0}); }, "OpenCV"},
        {[] { throw std::bad_alloc(); }, "out of memory"},
        {[] { throw std::out_of_range("vector::at"); }, "vector::at"},
        {[] { throw 42; }, "unknown exception"},
    };
    for (const auto& [fail, message] : failures) {
        sam.fail = fail;
        const std::vector<ImageOutcome> outcomes = score_item(item("broken"), dataset_of({}), segmenter, {});
        ASSERT_EQ(outcomes.size(), 1u);
        const ImageOutcome& outcome = outcomes[0];
        EXPECT_EQ(outcome.image.model, "pred");
        EXPECT_TRUE(has_flag(outcome.image, "processing_error")) << message;
        EXPECT_NE(outcome.image.error.find(message), std::string::npos) << outcome.image.error;
        EXPECT_NE(outcome.image.error.find("broken"), std::string::npos) << outcome.image.error;
        EXPECT_FALSE(outcome.image.score.has_value());
    }
    // In a run: the failing image is flagged and journaled, the next one is scored.
    sam.fail = [&] {
        if (sam.images_set == 6) throw std::bad_alloc();
    };
    const Dataset two = dataset_of({item("a_fails"), item("b_works")});
    Journal journal(root / "out", {{"run", 1}}, false);
    const RunResult run = score_dataset(two, segmenter, {}, journal);
    ASSERT_EQ(run.images.size(), 2u);
    EXPECT_TRUE(has_flag(run.images[0], "processing_error"));
    EXPECT_TRUE(run.images[1].score.has_value()) << run.images[1].error;
    EXPECT_TRUE(journal.up_to_date(two.items[0]));
}

TEST_F(SqaHostile, TooManyObjectsAreFlaggedBeforeSamAndProgressIsHeardInsideAnImage) {
    PipelineOptions options;
    options.max_objects = 10;
    const ImageOutcome crowded = score_item(item("crowded", 50), dataset_of({}), segmenter, options).at(0);
    EXPECT_TRUE(has_flag(crowded.image, "too_many_objects"));
    EXPECT_NE(crowded.image.error.find("50 objects"), std::string::npos) << crowded.image.error;
    EXPECT_EQ(crowded.image.n_objects, 50);
    EXPECT_FALSE(crowded.image.score.has_value());
    EXPECT_EQ(sam.images_set, 0);

    options.max_objects = 100;
    std::vector<std::pair<size_t, size_t>> heard;
    const ImageOutcome scored = score_item(item("many", 50), dataset_of({}), segmenter, options,
                                           [&](size_t model, size_t done, size_t total) {
                                               EXPECT_EQ(model, 0u);
                                               heard.emplace_back(done, total);
                                           })
                                    .at(0);
    EXPECT_TRUE(scored.image.score.has_value()) << scored.image.error;
    ASSERT_GE(heard.size(), 2u) << "50 objects come in more than one batch";
    EXPECT_EQ(heard.back(), std::make_pair(size_t{50}, size_t{50}));
    for (size_t i = 1; i < heard.size(); ++i) EXPECT_GT(heard[i].first, heard[i - 1].first);
}

TEST_F(SqaHostile, NonUtf8AndLongestLegalNamesGoThroughTheJournal) {
    const std::string latin1 = "caf\xe9";
    const std::string longest(250, 'n');  // + ".png": 254 bytes, a legal name
    item(latin1);
    item(longest);
    const Dataset dataset = match_folders({(root / "images").string(), {{"pred", (root / "pred").string(), ""}}, ""});
    ASSERT_EQ(dataset.items.size(), 2u);
    EXPECT_EQ(dataset.items[0].name, "caf\\xe9");
    EXPECT_EQ(dataset.items[1].name, longest);
    {
        Journal journal(root / "out", {{"run", 1}}, false);
        const RunResult run = score_dataset(dataset, segmenter, {}, journal);
        for (const ImageResult& image : run.images) EXPECT_TRUE(image.score.has_value()) << image.error;
        EXPECT_FALSE(journal.masks(longest, 0).first.empty());
    }
    Journal resumed(root / "out", {{"run", 1}}, true);
    const RunResult again = score_dataset(dataset, segmenter, {}, resumed);
    EXPECT_EQ(again.resumed, 2u);
    EXPECT_EQ(again.images[0].image, "caf\\xe9");
}

TEST_F(SqaHostile, ResumeRecomputesChangedInputsAndDropsVanishedImages) {
    Dataset dataset = dataset_of({item("changed"), item("kept"), item("vanished")});
    const nlohmann::json config = {{"run", 1}};
    {
        Journal journal(root / "out", config, false);
        score_dataset(dataset, segmenter, {}, journal);
    }
    ASSERT_EQ(sam.images_set, 3);
    // The prediction emptied (a new file, other size and time) and one image gone from the dataset.
    cv::imwrite(dataset.items[0].predictions[0].pred, cv::Mat::zeros(40, 40, CV_8U));
    dataset.items.pop_back();
    {
        Journal journal(root / "out", config, true);
        const RunResult run = score_dataset(dataset, segmenter, {}, journal);
        EXPECT_EQ(run.resumed, 1u);
        ASSERT_EQ(run.images.size(), 2u);
        EXPECT_TRUE(has_flag(run.images[0], "empty_prediction")) << "the emptied prediction was scored again";
        EXPECT_FALSE(run.images[0].score.has_value());
        EXPECT_EQ(run.images[1].image, "kept");
    }
    // Read again, the recomputed line replaces the old one.
    Journal reread(root / "out", config, true);
    const auto changed = std::find_if(reread.finished().begin(), reread.finished().end(),
                                      [](const std::vector<ImageOutcome>& o) { return o.at(0).image.image == "changed"; });
    ASSERT_NE(changed, reread.finished().end());
    EXPECT_TRUE(has_flag(changed->at(0).image, "empty_prediction"));
    EXPECT_TRUE(reread.up_to_date(dataset.items[0]));
}

TEST_F(SqaHostile, AMalformedJournalLineIsAnErrorNamingTheFileAndLine) {
    const nlohmann::json config = {{"run", 1}};
    const Dataset dataset = dataset_of({item("a"), item("b")});
    {
        Journal journal(root / "out", config, false);
        score_dataset(dataset, segmenter, {}, journal);
    }
    const fs::path path = root / "out/.partial/journal.jsonl";
    std::string text = test::read_text(path);
    const size_t second_line = text.find('\n') + 1;
    for (const std::string& damage : {std::string("{\"image\": 7}"), std::string("not json at all"),
                                      std::string("{\"image\": \"a\", \"models\": [{\"image\": {\"n_objects\": 1e300}}]}")}) {
        std::ofstream(path, std::ios::trunc) << text.substr(0, second_line) << damage << "\n";
        try {
            Journal journal(root / "out", config, true);
            FAIL() << "a malformed line was accepted: " << damage;
        } catch (const Error& e) {
            EXPECT_EQ(e.file(), path.string());
            EXPECT_NE(e.problem().find("line 2"), std::string::npos) << e.what();
            EXPECT_NE(e.problem().find("without --resume"), std::string::npos) << e.what();
        }
    }
}

TEST_F(SqaHostile, ASecondRunIntoTheSameFolderIsRefusedWhileTheFirstHoldsIt) {
    const nlohmann::json config = {{"run", 1}};
    Journal first(root / "out", config, false);
    try {
        Journal second(root / "out", config, true);
        FAIL() << "two journals in one folder";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("pid " + std::to_string(::getpid())), std::string::npos) << e.what();
    }
}

TEST_F(SqaHostile, AConfigNestedTooDeepIsUnreadableRatherThanPrintedUntilTheStackOverflows) {
    const nlohmann::json config = {{"run", 1}};
    fs::create_directories(root / "out/.partial");
    // Differing values are printed in the refusal; printing JSON nested 100,000 deep would recurse that deep.
    std::ofstream(root / "out/.partial/config.json")
        << "{\"run\": " << std::string(100000, '[') << std::string(100000, ']') << "}";
    EXPECT_NE(test::error_of([&] { check_output_folder(root / "out", config); }).find("config.json is unreadable"),
              std::string::npos);
    EXPECT_NE(test::error_of([&] { Journal journal(root / "out", config, true); }).find("unreadable"),
              std::string::npos);
}
