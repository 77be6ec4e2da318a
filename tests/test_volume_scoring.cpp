// Scoring cases of an nnU-Net layout with a stand-in for SAM: slices encoded once each, true Dice and agreement
// against numpy, scores from the stand-in's masks, the flags of broken cases, channel matching, class names; the
// journal behind --resume (a resumed run scores only what is missing and gives what a whole run gives).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <new>
#include <set>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/volume.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace sqasam;

namespace {

fs::path volumes_dir() { return fs::path(test::ref_dir()) / "volumes"; }
fs::path nnunet() { return volumes_dir() / "nnunet"; }

// SAM's stand-in: every prompt's 4 masks are its box filled (a point gets its 3x3 neighbourhood). Records the
// slices it is given.
struct BoxSam {
    std::vector<cv::Mat> slices;

    Segmenter segmenter() {
        return [this](const cv::Mat& rgb) -> MaskSource {
            slices.push_back(rgb.clone());
            const cv::Size size = rgb.size();
            return [size](const std::vector<Prompt>& prompts) {
                std::vector<MaskPrediction> out;
                for (const Prompt& prompt : prompts) {
                    cv::Mat mask = cv::Mat::zeros(size, CV_8U);
                    if (prompt.box)
                        mask(cv::Rect(cv::Point(int(prompt.box->x0), int(prompt.box->y0)),
                                      cv::Point(int(prompt.box->x1) + 1, int(prompt.box->y1) + 1))) = 1;
                    else
                        cv::rectangle(mask, cv::Point(int(prompt.points[0].x) - 1, int(prompt.points[0].y) - 1),
                                      cv::Point(int(prompt.points[0].x) + 1, int(prompt.points[0].y) + 1), 1,
                                      cv::FILLED);
                    MaskPrediction p;
                    p.num_masks = 4;
                    p.height = size.height;
                    p.width = size.width;
                    for (int k = 0; k < 4; ++k) p.masks.insert(p.masks.end(), mask.datastart, mask.dataend);
                    p.iou_predictions = {0.5f, 0.9f, 0.8f, 0.7f};
                    out.push_back(std::move(p));
                }
                return out;
            };
        };
    }
};

VolumeDataset layout(const std::string& channel = "0") {
    VolumeFolders folders;
    folders.images = (nnunet() / "imagesTs").string();
    folders.preds = {{"model_a", (nnunet() / "model_a").string()}, {"model_b", (nnunet() / "model_b").string()}};
    folders.gt = (nnunet() / "labelsTs").string();
    folders.prob = true;
    folders.channel = channel;
    return match_volume_folders(folders);
}

const VolumeCase& find_case(const VolumeDataset& dataset, const std::string& name) {
    for (const VolumeCase& item : dataset.cases)
        if (item.name == name) return item;
    throw std::runtime_error("no case " + name);
}

// Every case of a run, in order, with its worst slices' pictures.
std::vector<CaseOutcome> run_cases(const VolumeDataset& dataset, const Segmenter& segmenter,
                                   const VolumeRunOptions& options, VolumeJournal& journal,
                                   size_t* from_journal = nullptr) {
    std::vector<CaseOutcome> outcomes;
    score_volume_cases(dataset, segmenter, options, journal, [&](const VolumeRunProgress& progress) {
        outcomes.push_back(std::move(*progress.outcome));
        if (from_journal) *from_journal += progress.from_journal;
    });
    return outcomes;
}

bool same(const std::optional<double>& a, const std::optional<double>& b) {
    return a.has_value() == b.has_value() && (!a || *a == *b);
}

bool same_pixels(const cv::Mat& a, const cv::Mat& b) {
    return a.size() == b.size() && (a.empty() || cv::countNonZero(a != b) == 0);
}

// A case read back from the journal is the case as it was scored, to the bit.
void expect_same_case(const CaseOutcome& resumed, const CaseOutcome& scored) {
    SCOPED_TRACE(scored.name);
    EXPECT_EQ(resumed.name, scored.name);
    ASSERT_EQ(resumed.volumes.size(), scored.volumes.size());
    for (size_t m = 0; m < scored.volumes.size(); ++m) {
        const VolumeResult &a = resumed.volumes[m], &b = scored.volumes[m];
        EXPECT_EQ(a.model, b.model);
        EXPECT_TRUE(same(a.volume.score, b.volume.score));
        EXPECT_EQ(a.volume.flags, b.volume.flags);
        EXPECT_EQ(a.volume.error, b.volume.error);
        EXPECT_TRUE(same(a.volume.true_dice, b.volume.true_dice));
        EXPECT_EQ(a.volume.class_dice, b.volume.class_dice);
        EXPECT_TRUE(same(a.volume.model_confidence, b.volume.model_confidence));
        EXPECT_EQ(a.slices_encoded, b.slices_encoded);
        EXPECT_TRUE(same(a.agreement, b.agreement));
        EXPECT_TRUE(same(a.model_agreement, b.model_agreement));
        EXPECT_EQ(a.modality, b.modality);
        ASSERT_EQ(a.classes.size(), b.classes.size());
        for (size_t c = 0; c < a.classes.size(); ++c) {
            EXPECT_EQ(a.classes[c].voxels, b.classes[c].voxels);
            EXPECT_TRUE(same(a.classes[c].score, b.classes[c].score));
        }
    }
    ASSERT_EQ(resumed.objects.size(), scored.objects.size());
    for (size_t o = 0; o < scored.objects.size(); ++o) {
        const VolumeObjectResult &a = resumed.objects[o], &b = scored.objects[o];
        EXPECT_EQ(a.model, b.model);
        EXPECT_EQ(a.bounds, b.bounds);
        EXPECT_EQ(a.score, b.score);
        ASSERT_EQ(a.slices.size(), b.slices.size());
        for (size_t x = 0; x < a.slices.size(); ++x) {
            EXPECT_EQ(a.slices[x].slice, b.slices[x].slice);
            const auto &box_a = a.slices[x].cross_section.box, &box_b = b.slices[x].cross_section.box;
            EXPECT_TRUE(std::equal(std::begin(box_a), std::end(box_a), std::begin(box_b)));
            EXPECT_EQ(a.slices[x].cross_section.box_prompt.dice, b.slices[x].cross_section.box_prompt.dice);
            EXPECT_EQ(a.slices[x].cross_section.score, b.slices[x].cross_section.score);
        }
    }
    ASSERT_EQ(resumed.worst_slices.size(), scored.worst_slices.size());
    for (size_t w = 0; w < scored.worst_slices.size(); ++w) {
        const auto &a = resumed.worst_slices[w], &b = scored.worst_slices[w];
        EXPECT_EQ(a.slice, b.slice);
        EXPECT_EQ(a.cross_sections.size(), b.cross_sections.size());
        EXPECT_TRUE(same_pixels(a.gray, b.gray));
        EXPECT_TRUE(same_pixels(a.sam_point_mask, b.sam_point_mask));
        EXPECT_TRUE(same_pixels(a.sam_box_mask, b.sam_box_mask));
        EXPECT_TRUE(same_pixels(a.prediction != 0, b.prediction != 0));
    }
}

bool has_flag(const VolumeResult& row, const std::string& flag) {
    return std::find(row.volume.flags.begin(), row.volume.flags.end(), flag) != row.volume.flags.end();
}

}  // namespace

TEST(VolumeScoring, LayoutFindsCasesChannelsAndClassNames) {
    const VolumeDataset dataset = layout();
    std::vector<std::string> names;
    for (const VolumeCase& item : dataset.cases) names.push_back(item.name);
    EXPECT_EQ(names, (std::vector<std::string>{"case_4d", "case_a", "case_b", "case_c", "case_geom", "case_nopred",
                                               "case_trunc"}));
    const VolumeCase& a = find_case(dataset, "case_a");
    EXPECT_EQ(fs::path(a.image).filename(), "case_a_0000.nii.gz");
    EXPECT_EQ(fs::path(a.pred[1]).filename(), "case_a.nii.gz");
    EXPECT_EQ(fs::path(a.prob[0]).filename(), "case_a.npz");
    EXPECT_EQ(a.prob[1], "");
    EXPECT_EQ(fs::path(a.gt).parent_path().filename(), "labelsTs");
    EXPECT_EQ(dataset.class_names, (std::map<int, std::string>{{1, "tumour"}, {2, "vessel"}}));
    EXPECT_EQ(fs::path(dataset.dataset_json).filename(), "dataset.json");

    const VolumeDataset second = layout("1");
    EXPECT_EQ(fs::path(find_case(second, "case_a").image).filename(), "case_a_0001.nii.gz");
    EXPECT_EQ(find_case(second, "case_b").image, "");
}

TEST(VolumeScoring, EachSliceIsEncodedOnceAndTrueDiceMatchesNumpy) {
    const nlohmann::json reference =
        nlohmann::json::parse(test::read_text((volumes_dir() / "reference.json").string()));
    const VolumeDataset dataset = layout();
    VolumeRunOptions options;
    options.objects.max_slices = 4;
    for (const char* name : {"case_a", "case_b", "case_c"}) {
        SCOPED_TRACE(name);
        BoxSam sam;
        const CaseOutcome outcome = score_case(find_case(dataset, name), dataset, sam.segmenter(), options);
        ASSERT_EQ(outcome.volumes.size(), 2u);

        // The slices of all objects of both models, each encoded once.
        std::set<long> planned;
        for (const VolumeObjectResult& object : outcome.objects) {
            EXPECT_LE(object.slices.size(), 4u);
            for (const SliceScore& slice : object.slices) planned.insert(slice.slice);
        }
        EXPECT_EQ(sam.slices.size(), planned.size());
        EXPECT_EQ(outcome.volumes[0].slices_encoded, static_cast<int>(planned.size()));
        for (size_t a = 0; a < sam.slices.size(); ++a)
            for (size_t b = a + 1; b < sam.slices.size(); ++b)
                EXPECT_GT(cv::norm(sam.slices[a], sam.slices[b], cv::NORM_L1), 0) << "a slice encoded twice";

        for (size_t m = 0; m < 2; ++m) {
            const VolumeResult& row = outcome.volumes[m];
            const auto& expected = reference["nnunet"][name][row.model];
            // Model b has no probabilities beside its predictions.
            EXPECT_EQ(row.volume.flags, m == 0 ? std::vector<std::string>{} : std::vector<std::string>{"missing_prob"})
                << row.volume.error;
            ASSERT_TRUE(row.volume.true_dice);
            EXPECT_NEAR(*row.volume.true_dice, expected["dice"].get<double>(), 1e-9);
            ASSERT_EQ(row.volume.class_dice.size(), expected["class_dice"].size());
            for (const auto& [label, dice] : row.volume.class_dice)
                EXPECT_NEAR(dice, expected["class_dice"][std::to_string(label)].get<double>(), 1e-9) << label;
            ASSERT_TRUE(row.agreement);
            EXPECT_NEAR(*row.agreement, reference["nnunet"][name]["agreement"].get<double>(), 1e-9);
            EXPECT_NEAR(*row.model_agreement, *row.agreement, 1e-12);  // two models: the same pair
            EXPECT_EQ(row.modality, Modality::CT);
        }
        ASSERT_TRUE(outcome.volumes[0].volume.model_confidence);
        EXPECT_NEAR(*outcome.volumes[0].volume.model_confidence,
                    reference["nnunet"][name]["model_a"]["model_confidence"].get<double>(), 1e-6);
    }
}

TEST(VolumeScoring, NestedClassesShareTheirEncodedSlices) {
    VolumeFolders folders;
    folders.images = (volumes_dir() / "nested/imagesTs").string();
    folders.preds = {{"pred", (volumes_dir() / "nested/pred").string()}};
    const VolumeDataset dataset = match_volume_folders(folders);
    ASSERT_EQ(dataset.cases.size(), 1u);
    VolumeRunOptions options;
    options.objects.max_slices = 5;
    BoxSam sam;
    const CaseOutcome outcome = score_case(dataset.cases.front(), dataset, sam.segmenter(), options);
    ASSERT_EQ(outcome.objects.size(), 3u);  // classes 1, 2 and 4, over slices 14..25, 4..35 and 10..29

    std::set<long> encoded, own_bin_centres;
    for (const VolumeObjectResult& object : outcome.objects) {
        SCOPED_TRACE("class " + std::to_string(object.class_label));
        // Every object still gets its evenly spaced slices, as many as it would alone.
        std::vector<long> slices;
        for (const SliceScore& slice : object.slices) slices.push_back(slice.slice);
        EXPECT_EQ(slices, choose_slices(object.bounds[2], object.bounds[5], 5));
        EXPECT_GE(slices.size(), 3u);
        for (const SliceScore& slice : object.slices) EXPECT_GT(slice.cross_section.area, 0);
        encoded.insert(slices.begin(), slices.end());
        // The rule before: each object alone took the centre slice of each of 5 equal parts of its extent.
        for (int part = 0; part < 5; ++part)
            own_bin_centres.insert(object.bounds[2] + static_cast<long>((part + 0.5) * object.n_slices / 5));
    }
    EXPECT_EQ(sam.slices.size(), encoded.size());
    EXPECT_EQ(outcome.volumes[0].slices_encoded, static_cast<int>(encoded.size()));
    EXPECT_EQ(encoded, (std::set<long>{8, 12, 16, 20, 24, 28, 32}));
    EXPECT_EQ(own_bin_centres.size(), 12u);
}

TEST(VolumeScoring, ScoresAreAreaWeightedMeansOfTheStandInsDice) {
    const VolumeDataset dataset = layout();
    VolumeRunOptions options;
    BoxSam sam;
    const CaseOutcome outcome = score_case(find_case(dataset, "case_b"), dataset, sam.segmenter(), options);
    ASSERT_FALSE(outcome.objects.empty());
    std::map<std::string, std::pair<double, int>> by_model;
    for (const VolumeObjectResult& object : outcome.objects) {
        double weighted = 0, area = 0;
        for (const SliceScore& slice : object.slices) {
            const ObjectResult& s = slice.cross_section;
            const double box_area = double(s.box[2] - s.box[0] + 1) * (s.box[3] - s.box[1] + 1);
            const double box_dice = 2.0 * s.area / (s.area + box_area);  // the box holds the whole cross-section
            EXPECT_NEAR(s.box_prompt.dice[0], box_dice, 1e-12);
            EXPECT_NEAR(s.score, std::max(box_dice, s.point_prompt.dice[0]), 1e-12);
            weighted += s.area * s.score;
            area += s.area;
        }
        EXPECT_NEAR(object.score, weighted / area, 1e-12);
        by_model[object.model].first += object.score;
        by_model[object.model].second += 1;
    }
    for (const VolumeResult& row : outcome.volumes) {
        ASSERT_TRUE(row.volume.score) << row.model;
        EXPECT_NEAR(*row.volume.score, by_model[row.model].first / by_model[row.model].second, 1e-12);
        EXPECT_EQ(row.volume.n_objects, by_model[row.model].second);
        int class_objects = 0;
        for (const ClassResult& c : row.classes) class_objects += c.n_objects;
        EXPECT_EQ(class_objects, row.volume.n_objects);
    }
    ASSERT_EQ(outcome.worst_slices.size(), 2u);
    for (const auto& worst : outcome.worst_slices) {
        EXPECT_FALSE(worst.gray.empty());
        EXPECT_EQ(worst.gray.size(), worst.prediction.size());
        EXPECT_EQ(worst.gray.size(), worst.sam_box_mask.size());
        EXPECT_GT(cv::countNonZero(worst.sam_box_mask), 0);
        EXPECT_FALSE(worst.cross_sections.empty());
    }
}

TEST(VolumeScoring, BrokenCasesAreFlaggedAndNotScored) {
    const VolumeDataset dataset = layout();
    VolumeRunOptions options;
    const std::map<std::string, std::string> expected{{"case_trunc", "read_error"},
                                                      {"case_4d", "multichannel_image"},
                                                      {"case_nopred", "missing_prediction"}};
    for (const auto& [name, flag] : expected) {
        SCOPED_TRACE(name);
        BoxSam sam;
        const CaseOutcome outcome = score_case(find_case(dataset, name), dataset, sam.segmenter(), options);
        for (const VolumeResult& row : outcome.volumes) {
            EXPECT_TRUE(has_flag(row, flag)) << row.model << ": " << row.volume.error;
            EXPECT_FALSE(row.volume.score);
        }
        EXPECT_TRUE(sam.slices.empty());
    }
    BoxSam sam;
    const CaseOutcome geom = score_case(find_case(dataset, "case_geom"), dataset, sam.segmenter(), options);
    EXPECT_TRUE(has_flag(geom.volumes[0], "geometry_mismatch")) << geom.volumes[0].volume.error;
    EXPECT_NE(geom.volumes[0].volume.error.find("spacing"), std::string::npos) << geom.volumes[0].volume.error;
    EXPECT_TRUE(has_flag(geom.volumes[1], "missing_prediction"));
    EXPECT_TRUE(sam.slices.empty());

    // The 4D image with a channel is read.
    options.channel = 1;
    BoxSam four;
    const CaseOutcome picked = score_case(find_case(dataset, "case_4d"), dataset, four.segmenter(), options);
    EXPECT_FALSE(has_flag(picked.volumes[0], "multichannel_image")) << picked.volumes[0].volume.error;
    EXPECT_TRUE(picked.volumes[0].volume.score);
}

TEST(VolumeScoring, AResumedRunScoresOnlyWhatIsMissingAndGivesWhatAWholeRunGives) {
    const VolumeDataset dataset = layout();
    VolumeRunOptions options;
    options.objects.max_slices = 3;
    const nlohmann::json config = {{"test", "resume"}};

    const fs::path whole_out = test::temp_dir("volume_journal_whole");
    BoxSam whole_sam;
    std::vector<CaseOutcome> whole;
    {
        VolumeJournal journal(whole_out, config, false);
        whole = run_cases(dataset, whole_sam.segmenter(), options, journal);
    }
    ASSERT_EQ(whole.size(), dataset.cases.size());

    // A run killed after its first three cases: their lines are in the journal, then a torn one.
    const fs::path out = test::temp_dir("volume_journal_resumed");
    VolumeDataset first_three = dataset;
    first_three.cases.resize(3);
    BoxSam first_sam;
    {
        VolumeJournal journal(out, config, false);
        run_cases(first_three, first_sam.segmenter(), options, journal);
    }
    std::ofstream(out / ".partial/journal.jsonl", std::ios::app) << R"({"case": "case_torn", "models": [)";

    BoxSam rest_sam;
    size_t from_journal = 0;
    std::vector<CaseOutcome> resumed;
    {
        VolumeJournal journal(out, config, true);
        EXPECT_EQ(journal.finished().size(), 3u);
        // A second run into the folder while this one holds it is refused.
        const std::string refused = test::error_of([&] { VolumeJournal(out, config, true); });
        EXPECT_NE(refused.find("another sqasam run"), std::string::npos) << refused;
        resumed = run_cases(dataset, rest_sam.segmenter(), options, journal, &from_journal);
    }
    EXPECT_EQ(from_journal, 3u);
    EXPECT_EQ(first_sam.slices.size() + rest_sam.slices.size(), whole_sam.slices.size())
        << "the journaled cases' slices are not encoded again";
    ASSERT_EQ(resumed.size(), whole.size());
    for (size_t c = 0; c < whole.size(); ++c) expect_same_case(resumed[c], whole[c]);
    size_t pictures = 0;
    for (size_t c = 0; c < 3; ++c)
        for (const auto& worst : resumed[c].worst_slices) pictures += !worst.gray.empty();
    EXPECT_GT(pictures, 0u) << "the journaled cases' worst slices come back with their pictures";

    // Resuming under another configuration is refused, naming the setting.
    const std::string other = test::error_of([&] { VolumeJournal(out, {{"test", "other"}}, true); });
    EXPECT_NE(other.find("test was \"resume\", now \"other\""), std::string::npos) << other;
}

TEST(VolumeScoring, AChangedInputIsScoredAgainAndADamagedJournalIsAnError) {
    const fs::path data = test::temp_dir("volume_journal_data");
    fs::copy(nnunet(), data / "nnunet", fs::copy_options::recursive);
    VolumeFolders folders;
    folders.images = (data / "nnunet/imagesTs").string();
    folders.preds = {{"model_a", (data / "nnunet/model_a").string()}};
    const VolumeDataset dataset = match_volume_folders(folders);
    VolumeDataset two = dataset;
    two.cases.resize(2);
    VolumeRunOptions options;
    options.objects.max_slices = 2;
    const nlohmann::json config = {{"test", "changes"}};
    const fs::path out = test::temp_dir("volume_journal_changes");
    {
        VolumeJournal journal(out, config, false);
        BoxSam sam;
        run_cases(two, sam.segmenter(), options, journal);
    }

    // The second case's prediction is rewritten: only that case is scored again, and its new line replaces the old.
    const VolumeCase& changed = two.cases[1];
    fs::last_write_time(changed.pred[0], fs::last_write_time(changed.pred[0]) + std::chrono::seconds(5));
    {
        VolumeJournal journal(out, config, true);
        EXPECT_TRUE(journal.up_to_date(two.cases[0]));
        EXPECT_FALSE(journal.up_to_date(changed));
        size_t from_journal = 0;
        BoxSam sam;
        run_cases(two, sam.segmenter(), options, journal, &from_journal);
        EXPECT_EQ(from_journal, 1u);
        EXPECT_FALSE(sam.slices.empty());
    }
    {
        VolumeJournal journal(out, config, true);
        EXPECT_EQ(journal.finished().size(), 2u);
        EXPECT_TRUE(journal.up_to_date(changed));
    }

    // A line that is not a record (not the torn last one) stops the resume with the file and the line.
    const fs::path lines = out / ".partial/journal.jsonl";
    const std::string text = test::read_text(lines.string());
    std::ofstream(lines) << "{\"case\": 7}\n" << text;
    const std::string damaged = test::error_of([&] { VolumeJournal(out, config, true); });
    EXPECT_NE(damaged.find("journal.jsonl"), std::string::npos) << damaged;
    EXPECT_NE(damaged.find("line 1 is not a journal record"), std::string::npos) << damaged;
}

TEST(VolumeScoring, AnExceptionWhileScoringACaseFlagsItAndTheRunGoesOn) {
    const VolumeDataset dataset = layout();
    VolumeDataset two = dataset;  // two cases that score
    two.cases = {find_case(dataset, "case_a"), find_case(dataset, "case_b")};
    BoxSam sam;
    const Segmenter working = sam.segmenter();
    size_t calls = 0;
    const Segmenter failing_first = [&](const cv::Mat& rgb) -> MaskSource {
        if (calls++ == 0) throw std::bad_alloc();
        return working(rgb);
    };
    VolumeJournal journal(test::temp_dir("volume_journal_failure"), {{"test", "failure"}}, false);
    const std::vector<CaseOutcome> outcomes = run_cases(two, failing_first, {}, journal);
    ASSERT_EQ(outcomes.size(), 2u);
    for (const VolumeResult& row : outcomes[0].volumes) {
        EXPECT_TRUE(has_flag(row, "processing_error")) << row.volume.error;
        EXPECT_NE(row.volume.error.find("case_a: out of memory"), std::string::npos) << row.volume.error;
        EXPECT_FALSE(row.volume.score);
    }
    for (const VolumeResult& row : outcomes[1].volumes) EXPECT_TRUE(row.volume.score) << row.volume.error;
}

TEST(VolumeScoring, AFailureWhileWritingTheOutputsLeavesTheOldSetWhole) {
    const VolumeDataset dataset = layout();
    VolumeReportInput input;
    for (const char* name : {"case_a", "case_b"}) {
        BoxSam sam;
        CaseOutcome outcome = score_case(find_case(dataset, name), dataset, sam.segmenter(), {});
        input.volumes.insert(input.volumes.end(), outcome.volumes.begin(), outcome.volumes.end());
        input.objects.insert(input.objects.end(), outcome.objects.begin(), outcome.objects.end());
    }
    const fs::path dir = test::temp_dir("volume_report_swap");
    write_volume_report(dir.string(), input);
    const std::vector<std::string> outputs{"volumes.csv", "classes.csv", "objects.csv", "summary.json", "report.html"};
    std::map<std::string, std::string> old_set;
    for (const std::string& name : outputs) old_set[name] = test::read_text((dir / name).string());

    // Fewer volumes, and a configuration value that is not UTF-8: JSON cannot hold it, so writing stops after the
    // CSVs and the page, before summary.json.
    VolumeReportInput broken = input;
    broken.volumes.resize(2);
    broken.config["images"] = "caf\xe9";
    EXPECT_ANY_THROW(write_volume_report(dir.string(), broken));
    for (const auto& [name, contents] : old_set) EXPECT_EQ(test::read_text((dir / name).string()), contents) << name;

    broken.config = nlohmann::json::object();
    write_volume_report(dir.string(), broken);
    EXPECT_NE(test::read_text((dir / "volumes.csv").string()), old_set["volumes.csv"]);
    EXPECT_FALSE(fs::exists(dir / ".report-staging"));
}
