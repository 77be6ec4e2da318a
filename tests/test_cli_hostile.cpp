// `sqasam score` on hostile and odd input end to end (issue 12), with a random-weight test model: non-UTF-8 names
// and folders, thin images, size bombs, a 254-byte name, crowded and ambiguous masks, a second run into a busy
// folder, another checkpoint of the same size on --resume, a damaged journal, a FIFO as the checkpoint.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/io.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

std::string quoted(const std::string& text) {  // for the shell, whatever bytes it holds
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// The images.csv row of each image: column name -> value.
std::map<std::string, std::map<std::string, std::string>> rows_by_image(const fs::path& csv) {
    const auto rows = test::read_csv(csv.string());
    std::map<std::string, std::map<std::string, std::string>> by_image;
    for (size_t r = 1; r < rows.size(); ++r)
        for (size_t c = 0; c < rows[r].size() && c < rows[0].size(); ++c) by_image[rows[r][0]][rows[0][c]] = rows[r][c];
    return by_image;
}

class CliHostile : public ::testing::Test {
protected:
    static fs::path root, model, other_model;

    static void SetUpTestSuite() {
        root = test::temp_dir("cli_hostile");
        model = root / "model.safetensors";
        other_model = root / "other_model.safetensors";
        for (const auto& [path, seed] : {std::pair{model, "0"}, std::pair{other_model, "1"}}) {
            const test::CliResult made = test::run_cli("make-test-model --seed " + std::string(seed) + " --out " +
                                                       quoted(path.string()));
            ASSERT_EQ(made.exit_code, 0) << made.output;
        }
    }

    // A picture with a disc, and its prediction (the disc at `value`), under images/ and pred/ of `data`.
    static void add_item(const fs::path& data, const std::string& name, cv::Size size = {64, 48}, int value = 255) {
        fs::create_directories(data / "images");
        fs::create_directories(data / "pred");
        cv::Mat image(size, CV_8UC3, cv::Scalar(40, 90, 160)), pred = cv::Mat::zeros(size, CV_8U);
        const cv::Point centre(size.width / 2, size.height / 2);
        const int radius = std::max(1, std::min(size.width, size.height) / 4);
        cv::circle(image, centre, radius, cv::Scalar(200, 200, 60), cv::FILLED);
        cv::circle(pred, centre, radius, value, cv::FILLED);
        ASSERT_TRUE(cv::imwrite((data / "images" / (name + ".png")).string(), image)) << name;
        ASSERT_TRUE(cv::imwrite((data / "pred" / (name + ".png")).string(), pred)) << name;
    }

    static test::CliResult score(const fs::path& data, const fs::path& out, const std::string& more = "",
                                 const fs::path& checkpoint = model) {
        return test::run_cli("score --checkpoint " + quoted(checkpoint.string()) + " --images " +
                             quoted((data / "images").string()) + " --pred " + quoted((data / "pred").string()) +
                             " --out " + quoted(out.string()) + " --threads 2 " + more);
    }
};
fs::path CliHostile::root, CliHostile::model, CliHostile::other_model;

}  // namespace

TEST_F(CliHostile, OddFilesAreFlaggedOneByOneAndTheRunFinishes) {
    const fs::path data = root / "odd_caf\xe9";  // a folder name that is not UTF-8 either
    add_item(data, "good");
    add_item(data, "caf\xe9");
    add_item(data, std::string(250, 'n'));  // a 254-byte file name
    add_item(data, "thin_2x5000", {2, 5000});
    add_item(data, "thin_5000x1", {5000, 1});
    add_item(data, "value_254", {64, 48}, 254);
    // Header claims of 32000x32000 pixels (the pixel data is that of an 8x8 image).
    std::vector<uint8_t> png;
    cv::imencode(".png", cv::Mat::zeros(8, 8, CV_8U), png);
    for (int at : {16, 20}) {
        png[at] = 0, png[at + 1] = 0, png[at + 2] = 0x7d, png[at + 3] = 0x00;  // 32000
    }
    add_item(data, "bomb");
    std::ofstream(data / "pred" / "bomb.png", std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(png.data()), static_cast<std::streamsize>(png.size()));
    // 30 separate dots, over --max-objects 20.
    add_item(data, "crowded");
    cv::Mat dots = cv::Mat::zeros(48, 64, CV_8U);
    for (int k = 0; k < 30; ++k) dots.at<uint8_t>(4 * (k / 10), 4 * (k % 10)) = 255;
    cv::imwrite((data / "pred" / "crowded.png").string(), dots);

    const fs::path out = root / "out_odd";
    const test::CliResult run = score(data, out, "--max-objects 20");
    ASSERT_EQ(run.exit_code, 0) << run.output;
    auto rows = rows_by_image(out / "images.csv");
    ASSERT_EQ(rows.size(), 8u) << test::read_text(out / "images.csv");
    EXPECT_FALSE(rows["good"]["score"].empty()) << rows["good"]["error"];
    EXPECT_FALSE(rows["caf\\xe9"]["score"].empty()) << rows["caf\\xe9"]["error"];
    EXPECT_FALSE(rows[std::string(250, 'n')]["score"].empty()) << rows[std::string(250, 'n')]["error"];
    for (const char* thin : {"thin_2x5000", "thin_5000x1"}) {
        EXPECT_EQ(rows[thin]["flags"], "processing_error") << thin;
        EXPECT_NE(rows[thin]["error"].find("too thin"), std::string::npos) << rows[thin]["error"];
    }
    EXPECT_EQ(rows["bomb"]["flags"], "too_large");
    EXPECT_NE(rows["bomb"]["error"].find("32000x32000"), std::string::npos) << rows["bomb"]["error"];
    EXPECT_EQ(rows["crowded"]["flags"], "too_many_objects");
    EXPECT_EQ(rows["value_254"]["flags"], "pred_kind_guessed");
    EXPECT_FALSE(rows["value_254"]["score"].empty());
    const nlohmann::json summary = nlohmann::json::parse(test::read_text(out / "summary.json"));
    EXPECT_NE(summary["config"]["images"].get<std::string>().find("odd_caf\\xe9"), std::string::npos);
    EXPECT_EQ(summary["flags"]["processing_error"], 2);

    const test::CliResult resumed = score(data, out, "--max-objects 20 --resume");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("8 images taken from the journal"), std::string::npos) << resumed.output;
}

TEST_F(CliHostile, ASecondRunIntoABusyFolderIsRefusedNamingTheHolder) {
    const fs::path data = root / "busy";
    add_item(data, "a");
    const fs::path out = root / "out_busy";
    fs::create_directories(out);
    {
        const FolderLock held(out);  // as a run in progress holds it
        const test::CliResult refused = score(data, out);
        EXPECT_EQ(refused.exit_code, 1);
        EXPECT_NE(refused.output.find("pid " + std::to_string(::getpid())), std::string::npos) << refused.output;
        EXPECT_FALSE(fs::exists(out / "images.csv"));
    }
    const test::CliResult after = score(data, out);  // the holder is gone: its lock file is no obstacle
    EXPECT_EQ(after.exit_code, 0) << after.output;
}

TEST_F(CliHostile, ResumeKnowsTheCheckpointByContentAndReadsTheJournalStrictly) {
    ASSERT_EQ(fs::file_size(model), fs::file_size(other_model)) << "the test needs two models of one size";
    const fs::path data = root / "resume";
    add_item(data, "a");
    add_item(data, "b");
    const fs::path out = root / "out_resume";
    ASSERT_EQ(score(data, out).exit_code, 0);
    const fs::path moved = root / "moved_model.safetensors";  // same content elsewhere: still the same model
    fs::copy_file(model, moved);
    const test::CliResult same = score(data, out, "--resume", moved);
    EXPECT_EQ(same.exit_code, 0) << same.output;
    EXPECT_NE(same.output.find("2 images taken from the journal"), std::string::npos) << same.output;

    const test::CliResult other = score(data, out, "--resume", other_model);
    EXPECT_EQ(other.exit_code, 1) << other.output;
    EXPECT_NE(other.output.find("checkpoint_sha256"), std::string::npos) << other.output;

    std::ofstream(out / ".partial/journal.jsonl", std::ios::app) << "{\"image\": [1, 2]}\n";
    const test::CliResult damaged = score(data, out, "--resume");
    EXPECT_EQ(damaged.exit_code, 1);
    EXPECT_NE(damaged.output.find("journal.jsonl: line 3"), std::string::npos) << damaged.output;
}

TEST_F(CliHostile, AFifoAsTheCheckpointIsRefusedAtOnce) {
    const fs::path data = root / "fifo";
    add_item(data, "a");
    const fs::path fifo = root / "checkpoint.pth";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    const test::CliResult run = test::run_cli("score --checkpoint " + quoted(fifo.string()) + " --images " +
                                              quoted((data / "images").string()) + " --pred " +
                                              quoted((data / "pred").string()) + " --out " +
                                              quoted((root / "out_fifo").string()),
                                              "timeout 120");
    EXPECT_EQ(run.exit_code, 1) << "124 would mean it waited for a writer: " << run.output;
    EXPECT_NE(run.output.find("not a regular file"), std::string::npos) << run.output;
}
