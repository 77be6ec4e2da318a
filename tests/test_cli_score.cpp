// `sqasam score` end to end on some of the demo data (examples/) plus broken files, with a random-weight test model:
// outputs and per-file errors, whole-run errors, and a run killed at a random moment then resumed.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

using sqasam::test::read_csv;
using sqasam::test::read_text;
using sqasam::test::start_cli;
using sqasam::test::wait_cli;

// Runs the CLI with the given arguments, output to log; returns the exit status (-1 when killed).
int run_cli(const std::vector<std::string>& args, const fs::path& log) { return wait_cli(start_cli(args, log)); }

// A few of the demo images (the CLI runs several times; SAM on CPU is the cost): a good prediction, one with a
// spurious blob (2 objects) and an empty one.
const std::vector<std::string> kExamples{"C3_EndoCV2021_00103", "24_endocv2021_positive_801",
                                         "9_endocv2021_positive_1362"};

class CliScore : public ::testing::Test {
protected:
    static fs::path root, model, data;

    // The demo data plus three broken items: a corrupt image, a prediction of the wrong size, a missing prediction.
    static void SetUpTestSuite() {
        root = test::temp_dir("cli_score");
        model = root / "test_model.safetensors";
        ASSERT_EQ(run_cli({"make-test-model", "--out", model.string()}, root / "make-test-model.log"), 0)
            << read_text(root / "make-test-model.log");
        data = root / "data";
        fs::path examples = fs::path(test::source_dir()) / "examples";
        for (const char* folder : {"images", "pred", "gt"}) fs::create_directories(data / folder);
        for (const std::string& name : kExamples) {
            fs::copy(examples / "images" / (name + ".jpg"), data / "images");
            fs::copy(examples / "pred" / (name + ".png"), data / "pred");
            fs::copy(examples / "gt" / (name + ".png"), data / "gt");
        }

        const std::string donor = "C3_EndoCV2021_00103";
        std::ofstream(data / "images/zz_corrupt.jpg") << "\xff\xd8\xff this is not a JPEG";
        fs::copy(examples / "pred" / (donor + ".png"), data / "pred/zz_corrupt.png");
        fs::copy(examples / "images" / (donor + ".jpg"), data / "images/zz_mismatch.jpg");
        cv::Mat pred = cv::imread((examples / "pred" / (donor + ".png")).string(), cv::IMREAD_GRAYSCALE), smaller;
        cv::resize(pred, smaller, {pred.cols / 2, pred.rows / 2}, 0, 0, cv::INTER_NEAREST);
        cv::imwrite((data / "pred/zz_mismatch.png").string(), smaller);
        fs::copy(examples / "images" / (donor + ".jpg"), data / "images/zz_missing.jpg");
    }

    static std::vector<std::string> score_args(const fs::path& out) {
        return {"score", "--checkpoint", model.string(), "--images", (data / "images").string(), "--pred",
                (data / "pred").string(), "--gt", (data / "gt").string(), "--out", out.string(), "--threads", "2"};
    }

    static std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
        args.insert(args.end(), more.begin(), more.end());
        return args;
    }
};
fs::path CliScore::root, CliScore::model, CliScore::data;

size_t column(const std::vector<std::string>& header, const std::string& name) {
    auto found = std::find(header.begin(), header.end(), name);
    EXPECT_NE(found, header.end()) << "no column " << name;
    return static_cast<size_t>(found - header.begin());
}

}  // namespace

TEST_F(CliScore, WritesTheReportAndListsPerFileErrors) {
    fs::path out = root / "out_plain";
    ASSERT_EQ(run_cli(score_args(out), root / "plain.log"), 0) << read_text(root / "plain.log");
    for (const char* file : {"images.csv", "objects.csv", "summary.json", "report.html"})
        EXPECT_TRUE(fs::is_regular_file(out / file)) << file;

    auto rows = read_csv(out / "images.csv");
    ASSERT_EQ(rows.size(), 1 + kExamples.size() + 3);
    const auto& header = rows[0];
    size_t image = column(header, "image"), score = column(header, "score"), flags = column(header, "flags"),
           error = column(header, "error"), true_dice = column(header, "true_dice"),
           n_objects = column(header, "n_objects");
    std::map<std::string, std::vector<std::string>> by_name;
    std::vector<std::string> order;
    for (size_t r = 1; r < rows.size(); ++r) {
        by_name[rows[r][image]] = rows[r];
        order.push_back(rows[r][image]);
    }
    EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));

    auto expect_problem = [&](const std::string& name, const std::string& flag, const std::string& in_message) {
        const auto& row = by_name.at(name);
        EXPECT_NE(row[flags].find(flag), std::string::npos) << name << ": " << row[flags];
        EXPECT_NE(row[error].find(in_message), std::string::npos) << name << ": " << row[error];
        EXPECT_TRUE(row[score].empty()) << name;
    };
    expect_problem("zz_corrupt", "read_error", "zz_corrupt.jpg");
    expect_problem("zz_mismatch", "size_mismatch", "192x144");
    expect_problem("zz_missing", "missing_prediction", "prediction");
    expect_problem("9_endocv2021_positive_1362", "empty_prediction", "");

    long total_objects = 0;
    for (const auto& [name, row] : by_name) {
        if (name.starts_with("zz_")) continue;
        EXPECT_FALSE(row[true_dice].empty()) << name;
        total_objects += std::stol(row[n_objects]);
        if (name == "9_endocv2021_positive_1362") continue;
        ASSERT_FALSE(row[score].empty()) << name << ": " << row[error];
        double value = std::stod(row[score]);
        EXPECT_GE(value, 0.0);
        EXPECT_LE(value, 1.0);
    }
    EXPECT_EQ(by_name.at("24_endocv2021_positive_801")[n_objects], "2");  // the polyp and the spurious blob
    EXPECT_EQ(static_cast<long>(read_csv(out / "objects.csv").size()) - 1, total_objects);
}

TEST_F(CliScore, WholeRunProblemsExitWithAnError) {
    fs::path log = root / "errors.log";
    auto args = score_args(root / "out_errors");
    auto missing_folder = args;
    missing_folder[6] = (root / "no_such_folder").string();  // --pred
    EXPECT_EQ(run_cli(missing_folder, log), 1);
    EXPECT_NE(read_text(log).find("no_such_folder"), std::string::npos) << read_text(log);

    auto bad_checkpoint = args;
    bad_checkpoint[2] = (data / "gt/C3_EndoCV2021_00103.png").string();
    EXPECT_EQ(run_cli(bad_checkpoint, log), 1);
    EXPECT_NE(read_text(log).find("sqasam: error:"), std::string::npos) << read_text(log);
}

TEST_F(CliScore, KilledRunResumesToTheSameResults) {
    fs::path reference = root / "out_reference", resumed = root / "out_resumed";
    auto start = std::chrono::steady_clock::now();
    ASSERT_EQ(run_cli(score_args(reference), root / "reference.log"), 0) << read_text(root / "reference.log");
    double full_run = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const pid_t pid = start_cli(score_args(resumed), root / "killed.log");
    SCOPED_TRACE(test::kill_after_first_journal_line(pid, resumed / ".partial/journal.jsonl", full_run));

    ASSERT_EQ(run_cli(with(score_args(resumed), {"--resume"}), root / "resume.log"), 0)
        << read_text(root / "resume.log");
    EXPECT_NE(read_text(root / "resume.log").find("taken from the journal"), std::string::npos)
        << "the killed run's finished images must be taken over: " << read_text(root / "resume.log");
    EXPECT_EQ(read_text(resumed / "images.csv"), read_text(reference / "images.csv"));
    EXPECT_EQ(read_text(resumed / "objects.csv"), read_text(reference / "objects.csv"));

    // Resuming under other settings is refused rather than mixing results.
    EXPECT_EQ(run_cli(with(score_args(resumed), {"--resume", "--reducer", "min"}), root / "mixed.log"), 1);
    EXPECT_NE(read_text(root / "mixed.log").find("reducer"), std::string::npos) << read_text(root / "mixed.log");
}

// The speed issue's determinism check: fp32 image scores agree to 6 decimals whether 1 or 2 threads share the work
// (thread counts change how oneDNN and the attention kernels split their loops).
TEST_F(CliScore, OneAndTwoThreadsGiveTheSameImageScores) {
    std::map<std::string, std::map<std::string, std::string>> scores;  // threads -> image -> score
    for (const char* threads : {"1", "2"}) {
        const fs::path out = root / (std::string("out_threads_") + threads);
        std::vector<std::string> args = score_args(out);
        args.back() = threads;  // score_args ends with "--threads", "2"
        const fs::path log = root / (std::string("threads_") + threads + ".log");
        ASSERT_EQ(run_cli(args, log), 0) << read_text(log);
        const auto rows = read_csv(out / "images.csv");
        ASSERT_GT(rows.size(), 1u);
        const size_t image = column(rows[0], "image"), score = column(rows[0], "score");
        for (size_t r = 1; r < rows.size(); ++r) scores[threads][rows[r][image]] = rows[r][score];
    }
    size_t compared = 0;
    for (const auto& [name, one_thread] : scores["1"]) {
        const std::string& two_threads = scores["2"].at(name);
        ASSERT_EQ(one_thread.empty(), two_threads.empty()) << name;
        if (one_thread.empty()) continue;  // the broken items have no score either way
        EXPECT_NEAR(std::stod(one_thread), std::stod(two_threads), 5e-7) << name;
        ++compared;
    }
    EXPECT_GE(compared, 2u) << "too few scored images to compare";
}

namespace {

// Every file under a folder with its bytes and modification time, to show that a refused run touched nothing.
std::map<std::string, std::pair<std::string, fs::file_time_type>> snapshot(const fs::path& folder) {
    std::map<std::string, std::pair<std::string, fs::file_time_type>> files;
    for (const auto& entry : fs::recursive_directory_iterator(folder))
        if (entry.is_regular_file())
            files[fs::relative(entry.path(), folder).string()] = {read_text(entry.path()), entry.last_write_time()};
    return files;
}

}  // namespace

TEST_F(CliScore, AnotherRunIntoAUsedOutFolderIsRefusedAndTouchesNothing) {
    const fs::path out = root / "out_used", log = root / "used.log";
    ASSERT_EQ(run_cli(score_args(out), log), 0) << read_text(log);
    const auto finished = snapshot(out);
    for (const char* file : {"images.csv", "objects.csv", "summary.json", "report.html", ".partial/config.json",
                             ".partial/journal.jsonl"})
        EXPECT_TRUE(finished.count(file)) << file;

    EXPECT_EQ(run_cli(with(score_args(out), {"--reducer", "min"}), log), 1);
    EXPECT_NE(read_text(log).find("reducer was \"max\", now \"min\""), std::string::npos) << read_text(log);
    EXPECT_NE(read_text(log).find("--overwrite"), std::string::npos) << read_text(log);
    auto fewer_images = score_args(out);
    fewer_images[4] = (data / "gt").string();  // --images: another folder, as when an 8-image run followed a 100
    EXPECT_EQ(run_cli(fewer_images, log), 1);
    EXPECT_NE(read_text(log).find("images was"), std::string::npos) << read_text(log);
    EXPECT_NE(run_cli(with(score_args(out), {"--resume", "--overwrite"}), log), 0);  // one or the other
    EXPECT_EQ(snapshot(out), finished);

    ASSERT_EQ(run_cli(with(score_args(out), {"--reducer", "min", "--overwrite"}), log), 0) << read_text(log);
    EXPECT_NE(read_text(out / "summary.json").find("\"reducer\": \"min\""), std::string::npos);
    // The same run again may recompute in place: nothing is lost.
    EXPECT_EQ(run_cli(with(score_args(out), {"--reducer", "min"}), log), 0) << read_text(log);

    // Results without their journal belong to a run whose settings cannot be compared: refused too.
    fs::remove_all(out / ".partial");
    const auto without_journal = snapshot(out);
    EXPECT_EQ(run_cli(with(score_args(out), {"--reducer", "min"}), log), 1);
    EXPECT_NE(read_text(log).find("settings are unknown"), std::string::npos) << read_text(log);
    EXPECT_EQ(snapshot(out), without_journal);
}

// The run's settings (summary.json, and what a resume must match) hold the precision that ran, not "auto".
TEST_F(CliScore, PrecisionAutoRecordsThePrecisionThatRan) {
    const fs::path out = root / "out_auto", log = root / "auto.log";
    ASSERT_EQ(run_cli(with(score_args(out), {"--precision", "auto"}), log), 0) << read_text(log);
    std::smatch chosen;
    const std::string printed = read_text(log);
    ASSERT_TRUE(std::regex_search(printed, chosen, std::regex("--precision auto: (fp32|bf16)"))) << printed;
    EXPECT_NE(read_text(out / "summary.json").find("\"precision\": \"" + chosen[1].str() + "\""), std::string::npos)
        << read_text(out / "summary.json");
}

TEST_F(CliScore, PredictionsNamedUnlikeTheImagesStopTheRunAndNameTheClosest) {
    const fs::path pred = root / "pred_mask_suffix", out = root / "out_mask_suffix", log = root / "mask_suffix.log";
    fs::create_directories(pred);
    for (const std::string& name : kExamples) fs::copy(data / "pred" / (name + ".png"), pred / (name + "_mask.png"));
    auto args = score_args(out);
    args[6] = pred.string();  // --pred
    EXPECT_EQ(run_cli(args, log), 1);
    const std::string said = read_text(log);
    EXPECT_NE(said.find("no prediction matches any of the 6 images"), std::string::npos) << said;
    EXPECT_NE(said.find("image C3_EndoCV2021_00103.jpg: no prediction named C3_EndoCV2021_00103.*, closest "
                        "C3_EndoCV2021_00103_mask.png"),
              std::string::npos)
        << said;
    EXPECT_FALSE(fs::exists(out));
}

TEST_F(CliScore, StrayPredictionsAreNamedAndNotCountedAsImages) {
    const fs::path pred = root / "pred_with_stray", out = root / "out_stray", log = root / "stray.log";
    fs::copy(data / "pred", pred);
    fs::copy(data / "pred/C3_EndoCV2021_00103.png", pred / "zz_stray.png");
    auto args = score_args(out);
    args[6] = pred.string();
    ASSERT_EQ(run_cli(args, log), 0) << read_text(log);
    const std::string said = read_text(log);
    EXPECT_NE(said.find("1 prediction file without a matching image, not scored"), std::string::npos) << said;
    EXPECT_NE(said.find("zz_stray.png"), std::string::npos) << said;
    EXPECT_NE(said.find("1 of 6 images have no prediction"), std::string::npos) << said;  // zz_missing
    EXPECT_EQ(read_csv(out / "images.csv").size(), 1 + kExamples.size() + 3);
}

TEST_F(CliScore, ProgressReachesAFileAfterImagesAndWithinAnImageOfManyObjects) {
    // One image whose prediction has 40 objects: SAM scores them in batches of 32.
    const fs::path many = root / "many", log = root / "many.log";
    for (const char* folder : {"images", "pred"}) fs::create_directories(many / folder);
    fs::copy(data / "images/C3_EndoCV2021_00103.jpg", many / "images/many.jpg");
    cv::Mat pred = cv::Mat::zeros(288, 384, CV_8U);
    for (int i = 0; i < 8; ++i)
        for (int j = 0; j < 5; ++j) pred(cv::Rect(10 + 40 * i, 10 + 40 * j, 6, 6)).setTo(255);
    cv::imwrite((many / "pred/many.png").string(), pred);
    const std::vector<std::string> args{"score", "--checkpoint", model.string(), "--images",
                                        (many / "images").string(), "--pred", (many / "pred").string(), "--threads",
                                        "2"};

    // The log is a file, not a terminal: plain lines.
    ASSERT_EQ(run_cli(with(args, {"--out", (root / "out_many_each").string(), "--progress-seconds", "0"}), log), 0)
        << read_text(log);
    std::string said = read_text(log);
    for (const char* line : {"sqasam score: 0/1 images (0%)", "many: 32/40 objects\n", "many: 40/40 objects\n",
                             "sqasam score: 1/1 images (100%)"})
        EXPECT_NE(said.find(line), std::string::npos) << line << " missing from:\n" << said;
    EXPECT_EQ(said.find('\r'), std::string::npos) << "no terminal control characters in a file";

    // The closing line counts in words that agree with the number.
    EXPECT_NE(said.find("sqasam score: 1 image, 1 scored, 0 flagged"), std::string::npos) << said;

    ASSERT_EQ(run_cli(with(args, {"--out", (root / "out_many_default").string()}), log), 0) << read_text(log);
    said = read_text(log);
    EXPECT_NE(said.find("sqasam score: 1/1 images (100%), elapsed "), std::string::npos) << said;
}
