// Scoring cases of an nnU-Net layout with a stand-in for SAM: slices encoded once each, true Dice and agreement
// against numpy, scores from the stand-in's masks, the flags of broken cases, channel matching, class names.
#include <gtest/gtest.h>

#include <filesystem>
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
