// `sqasam score-volumes` end to end with a random-weight test model: the nnU-Net layout of gen_volumes.py with two
// models, ground truth and probabilities (broken cases flagged, the run goes on), bad options, a run killed at a
// random moment then resumed, a used --out refused, and the real BraTS exams with five models and the NRRD set when
// ../shared is there.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

using test::read_csv;
using test::read_text;

size_t column(const std::vector<std::string>& header, const std::string& name) {
    const auto found = std::find(header.begin(), header.end(), name);
    EXPECT_NE(found, header.end()) << "no column " << name;
    return static_cast<size_t>(found - header.begin());
}

class CliVolumes : public ::testing::Test {
protected:
    static inline fs::path root, model;
    static void SetUpTestSuite() {
        root = test::temp_dir("cli_volumes");
        model = root / "test_model.safetensors";
        const auto made = test::run_cli("make-test-model --out " + model.string());
        ASSERT_EQ(made.exit_code, 0) << made.output;
    }
    static std::string base_args(const fs::path& out) {
        return "score-volumes --checkpoint " + model.string() + " --threads 2 --out " + out.string();
    }
};

fs::path nnunet() { return fs::path(test::ref_dir()) / "volumes" / "nnunet"; }

// The layout's two models with ground truth, as arguments for test::start_cli.
std::vector<std::string> layout_args(const fs::path& model, const fs::path& out, std::vector<std::string> more = {}) {
    std::vector<std::string> args{"score-volumes", "--checkpoint", model.string(), "--threads", "2", "--out",
                                  out.string(), "--images", (nnunet() / "imagesTs").string(), "--pred",
                                  (nnunet() / "model_a").string(), "--pred", "second=" + (nnunet() / "model_b").string(),
                                  "--gt", (nnunet() / "labelsTs").string(), "--max-slices-per-object", "3"};
    args.insert(args.end(), more.begin(), more.end());
    return args;
}

int run_logged(const std::vector<std::string>& args, const fs::path& log) {
    return test::wait_cli(test::start_cli(args, log.string()));
}

// Every file under a folder with its contents (the lock file aside: it is the run's, not a result).
std::map<std::string, std::string> snapshot(const fs::path& folder) {
    std::map<std::string, std::string> files;
    for (const auto& entry : fs::recursive_directory_iterator(folder))
        if (entry.is_regular_file() && entry.path().filename() != ".sqasam.lock")
            files[fs::relative(entry.path(), folder).string()] = read_text(entry.path().string());
    return files;
}

}  // namespace

TEST_F(CliVolumes, ScoresAnNnunetLayoutWithTwoModelsAndFlagsBrokenCases) {
    const fs::path out = root / "nnunet";
    const auto result = test::run_cli(base_args(out) + " --images " + (nnunet() / "imagesTs").string() +
                                      " --pred " + (nnunet() / "model_a").string() + " --pred second=" +
                                      (nnunet() / "model_b").string() + " --gt " + (nnunet() / "labelsTs").string() +
                                      " --prob --max-slices-per-object 3");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    for (const char* file : {"volumes.csv", "classes.csv", "objects.csv", "summary.json", "report.html"})
        EXPECT_TRUE(fs::exists(out / file)) << file;

    const auto volumes = read_csv(out / "volumes.csv");
    ASSERT_EQ(volumes.size(), 1u + 7 * 2);  // 7 cases x 2 models
    const auto& h = volumes[0];
    std::map<std::string, std::vector<std::string>> row;
    for (size_t r = 1; r < volumes.size(); ++r) row[volumes[r][column(h, "case")] + "/" + volumes[r][column(h, "model")]] = volumes[r];
    for (const char* name : {"case_a", "case_b", "case_c"})
        for (const char* model : {"model_a", "second"}) {
            const auto& r = row.at(std::string(name) + "/" + model);
            EXPECT_FALSE(r[column(h, "score")].empty()) << name << " " << model << ": " << r[column(h, "error")];
            EXPECT_FALSE(r[column(h, "true_dice")].empty());
            EXPECT_FALSE(r[column(h, "agreement")].empty());
            EXPECT_NE(r[column(h, "slices_encoded")], "0");
            EXPECT_EQ(r[column(h, "modality")], "ct");
        }
    EXPECT_FALSE(row.at("case_a/model_a")[column(h, "model_confidence")].empty());
    EXPECT_NE(row.at("case_a/second")[column(h, "flags")].find("missing_prob"), std::string::npos);
    EXPECT_NE(row.at("case_trunc/model_a")[column(h, "flags")].find("read_error"), std::string::npos);
    EXPECT_NE(row.at("case_4d/model_a")[column(h, "flags")].find("multichannel_image"), std::string::npos);
    EXPECT_NE(row.at("case_geom/model_a")[column(h, "flags")].find("geometry_mismatch"), std::string::npos);
    EXPECT_NE(row.at("case_nopred/second")[column(h, "flags")].find("missing_prediction"), std::string::npos);
    EXPECT_NE(std::find(h.begin(), h.end(), "dice_class_2_vessel"), h.end());

    const auto classes = read_csv(out / "classes.csv");
    size_t tumour_rows = 0;
    for (size_t r = 1; r < classes.size(); ++r) tumour_rows += classes[r][column(classes[0], "class_name")] == "tumour";
    EXPECT_EQ(tumour_rows, 6u);  // 3 good cases x 2 models

    const auto objects = read_csv(out / "objects.csv");
    ASSERT_GT(objects.size(), 1u);
    for (size_t r = 1; r < objects.size(); ++r) {
        EXPECT_LE(std::stoi(objects[r][column(objects[0], "slices_scored")]), 3);
        EXPECT_GE(std::stod(objects[r][column(objects[0], "volume_ml")]), 0.0);
    }

    const auto summary = nlohmann::json::parse(read_text((out / "summary.json").string()));
    EXPECT_EQ(summary["unit"], "volume");
    EXPECT_EQ(summary["n_cases"], 7);
    EXPECT_EQ(summary["n_models"], 2);
    EXPECT_EQ(summary["n_with_ground_truth"], 6);
    EXPECT_EQ(summary["class_names"]["1"], "tumour");
    EXPECT_FALSE(summary["ablation"].empty());
    EXPECT_EQ(summary["flags"]["geometry_mismatch"], 1);
    const std::string html = read_text((out / "report.html").string());
    for (const char* text : {"Agreement between models", "Scores per class", "Lowest-scored volumes", "along axis 2",
                             "case_trunc", "data:image/png;base64"})
        EXPECT_NE(html.find(text), std::string::npos) << text;
}

TEST_F(CliVolumes, BadOptionsStopBeforeAnythingIsWritten) {
    const fs::path out = root / "bad";
    const std::string data = " --images " + (nnunet() / "imagesTs").string() + " --pred " + (nnunet() / "model_a").string();
    auto result = test::run_cli(base_args(out) + data + " --window soft");
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.output.find("LEVEL,WIDTH"), std::string::npos) << result.output;
    result = test::run_cli(base_args(out) + data + " --pred " + (nnunet() / "model_a").string());
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.output.find("two --pred folders named 'model_a'"), std::string::npos) << result.output;
    result = test::run_cli(base_args(out) + " --images " + (root / "nowhere").string() + " --pred " +
                           (nnunet() / "model_a").string());
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.output.find("nowhere"), std::string::npos) << result.output;
    EXPECT_FALSE(fs::exists(out / "volumes.csv"));
}

TEST_F(CliVolumes, BratsExamsScoreWithFiveModels) {
    const fs::path brats = fs::path(test::shared_data_dir()) / "brats_toolkit_5models";
    if (!fs::exists(brats)) GTEST_SKIP() << "no " << brats;
    const fs::path out = root / "brats";
    std::string preds;
    for (const char* model : {"hnfnetv1", "isen", "sanet0", "scan", "yixinmpl"})
        preds += " --pred " + (brats / (std::string("pred_") + model)).string();
    const auto result = test::run_cli(base_args(out) + " --images " + (brats / "images").string() + preds +
                                      " --channel t1c --max-slices-per-object 2");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto volumes = read_csv(out / "volumes.csv");
    ASSERT_EQ(volumes.size(), 1u + 2 * 5);
    const auto& h = volumes[0];
    for (size_t r = 1; r < volumes.size(); ++r) {
        EXPECT_EQ(volumes[r][column(h, "flags")], "") << volumes[r][column(h, "error")];
        EXPECT_FALSE(volumes[r][column(h, "score")].empty());
        EXPECT_EQ(volumes[r][column(h, "modality")], "mr");
        const double agreement = std::stod(volumes[r][column(h, "agreement")]);
        EXPECT_GT(agreement, 0.5);
        EXPECT_LE(agreement, 1.0);
    }
}

TEST_F(CliVolumes, NrrdLabelsScoredAgainstThemselvesHaveDiceOne) {
    const fs::path nrrd = fs::path(test::shared_data_dir()) / "nrrd_pyradiomics_gtonly";
    if (!fs::exists(nrrd)) GTEST_SKIP() << "no " << nrrd;
    const fs::path out = root / "nrrd";
    const auto result = test::run_cli(base_args(out) + " --images " + (nrrd / "images").string() + " --pred " +
                                      (nrrd / "gt").string() + " --gt " + (nrrd / "gt").string() +
                                      " --max-slices-per-object 2");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto volumes = read_csv(out / "volumes.csv");
    ASSERT_EQ(volumes.size(), 1u + 5);
    const auto& h = volumes[0];
    for (size_t r = 1; r < volumes.size(); ++r) {
        const std::string name = volumes[r][column(h, "case")];
        if (name == "lung1" || name == "lung2") {  // labels without their image
            EXPECT_NE(volumes[r][column(h, "flags")].find("missing_image"), std::string::npos);
            continue;
        }
        EXPECT_EQ(volumes[r][column(h, "true_dice")], "1.000000") << name << ": " << volumes[r][column(h, "error")];
        EXPECT_FALSE(volumes[r][column(h, "score")].empty()) << name;
    }
}

TEST_F(CliVolumes, KilledRunResumesToTheSameResults) {
    const fs::path reference = root / "out_reference", resumed = root / "out_resumed";
    const auto start = std::chrono::steady_clock::now();
    ASSERT_EQ(run_logged(layout_args(model, reference), root / "reference.log"), 0)
        << read_text((root / "reference.log").string());
    const double full_run = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const pid_t pid = test::start_cli(layout_args(model, resumed), (root / "killed.log").string());
    SCOPED_TRACE(test::kill_after_first_journal_line(pid, (resumed / ".partial/journal.jsonl").string(), full_run));

    const fs::path log = root / "resume.log";
    ASSERT_EQ(run_logged(layout_args(model, resumed, {"--resume"}), log), 0) << read_text(log.string());
    EXPECT_NE(read_text(log.string()).find("taken from the journal of the earlier run"), std::string::npos)
        << "the killed run's finished cases must be taken over: " << read_text(log.string());
    for (const char* file : {"volumes.csv", "classes.csv", "objects.csv"})
        EXPECT_EQ(read_text((resumed / file).string()), read_text((reference / file).string())) << file;
    const std::string html = read_text((resumed / "report.html").string());
    EXPECT_NE(html.find("data:image/png;base64"), std::string::npos) << "the worst slices' pictures are shown";

    // Resuming under other settings is refused rather than mixing results.
    EXPECT_EQ(run_logged(layout_args(model, resumed, {"--resume", "--reducer", "min"}), root / "mixed.log"), 1);
    EXPECT_NE(read_text((root / "mixed.log").string()).find("reducer"), std::string::npos);
}

TEST_F(CliVolumes, AnotherRunIntoAUsedOutFolderIsRefusedAndTouchesNothing) {
    const fs::path out = root / "out_used", log = root / "used.log";
    auto args = [&](std::vector<std::string> more) {
        std::vector<std::string> all{"score-volumes", "--checkpoint", model.string(), "--threads", "2", "--out",
                                     out.string(), "--images", (nnunet() / "imagesTs").string(), "--pred",
                                     (nnunet() / "model_a").string(), "--max-slices-per-object", "2"};
        all.insert(all.end(), more.begin(), more.end());
        return all;
    };
    ASSERT_EQ(run_logged(args({}), log), 0) << read_text(log.string());
    const auto finished = snapshot(out);
    for (const char* file : {"volumes.csv", "classes.csv", "objects.csv", "summary.json", "report.html",
                             ".partial/config.json", ".partial/journal.jsonl"})
        EXPECT_TRUE(finished.count(file)) << file;

    EXPECT_EQ(run_logged(args({"--connectivity", "6"}), log), 1);
    EXPECT_NE(read_text(log.string()).find("connectivity was 26, now 6"), std::string::npos) << read_text(log.string());
    EXPECT_NE(read_text(log.string()).find("--overwrite"), std::string::npos);
    EXPECT_NE(run_logged(args({"--resume", "--overwrite"}), log), 0);  // one or the other
    EXPECT_EQ(snapshot(out), finished);

    ASSERT_EQ(run_logged(args({"--connectivity", "6", "--overwrite"}), log), 0) << read_text(log.string());
    EXPECT_NE(read_text((out / ".partial/config.json").string()).find("\"connectivity\": 6"), std::string::npos);
    // The same run again may recompute in place: nothing is lost.
    EXPECT_EQ(run_logged(args({"--connectivity", "6"}), log), 0) << read_text(log.string());

    // Results without their journal belong to a run whose settings cannot be compared: refused too.
    fs::remove_all(out / ".partial");
    const auto without_journal = snapshot(out);
    EXPECT_EQ(run_logged(args({"--connectivity", "6"}), log), 1);
    EXPECT_NE(read_text(log.string()).find("volumes.csv"), std::string::npos) << read_text(log.string());
    EXPECT_EQ(snapshot(out), without_journal);
}
