// Object and image scores with an injected mask source standing in for SAM; Dice, true Dice, model confidence.
#include <gtest/gtest.h>

#include <algorithm>

#include <opencv2/imgproc.hpp>

#include "sqasam/sqa.hpp"

using namespace sqasam;

namespace {

MaskPrediction prediction_of(const std::vector<cv::Mat>& masks, const std::vector<float>& iou) {
    MaskPrediction p;
    p.num_masks = static_cast<int>(masks.size());
    p.height = masks[0].rows;
    p.width = masks[0].cols;
    for (const cv::Mat& m : masks) {
        cv::Mat on = m != 0;
        cv::Mat binary = on / 255;
        p.masks.insert(p.masks.end(), binary.begin<uint8_t>(), binary.end<uint8_t>());
    }
    p.iou_predictions = iou;
    for (float value : iou) p.stability_scores.push_back(1 - value / 2);  // distinct, known values
    return p;
}

cv::Mat labels_of(const cv::Mat& mask8) {
    cv::Mat labels;
    mask8.convertTo(labels, CV_32S);
    return labels;
}

// A stand-in for SAM whose answer depends only on the prompt kind, and that records what it was asked. Like SAM's
// decoder it answers with 4 masks per prompt: the single-mask output, then the 3 multimask ones.
struct FakeSam {
    cv::Mat exact, empty, half, grown, shifted;  // candidate masks
    std::vector<std::vector<Prompt>> calls;

    explicit FakeSam(const cv::Mat& object) {
        exact = object.clone();
        empty = cv::Mat::zeros(object.size(), CV_8U);
        half = object.clone();
        half.rowRange(0, half.rows / 2).setTo(0);
        cv::dilate(object, grown, cv::Mat::ones(5, 5, CV_8U));
        cv::Mat shift = (cv::Mat_<double>(2, 3) << 1, 0, 3, 0, 1, 2);
        cv::warpAffine(object, shifted, shift, object.size(), cv::INTER_NEAREST);
    }

    // Point prompts: SAM rates the empty mask best, the exact one worst; single mask = grown.
    // Box prompts: best rated = half, best Dice = exact; single mask = shifted.
    std::vector<MaskPrediction> operator()(const std::vector<Prompt>& prompts) {
        calls.push_back(prompts);
        std::vector<MaskPrediction> out;
        for (const Prompt& prompt : prompts)
            out.push_back(prompt.box.has_value() ? prediction_of({shifted, half, exact, empty}, {0.6f, 0.9f, 0.8f, 0.1f})
                                                 : prediction_of({grown, exact, half, empty}, {0.4f, 0.2f, 0.5f, 0.7f}));
        return out;
    }
};

double iou(const cv::Mat& a, const cv::Mat& b) {
    double inter = cv::countNonZero(a & b), uni = cv::countNonZero(a | b);
    return inter / uni;
}

cv::Mat blob(cv::Size size, cv::Rect rect) {
    cv::Mat m = cv::Mat::zeros(size, CV_8U);
    m(rect).setTo(1);
    return m;
}

}  // namespace

TEST(SqaScoring, DiceConventions) {
    cv::Mat empty = cv::Mat::zeros(8, 8, CV_8U);
    cv::Mat some = blob({8, 8}, {1, 1, 3, 3});
    cv::Mat other = blob({8, 8}, {2, 2, 3, 3});
    EXPECT_EQ(dice(empty, empty), 1.0);
    EXPECT_EQ(dice(empty, some), 0.0);
    EXPECT_EQ(dice(some, some), 1.0);
    EXPECT_DOUBLE_EQ(dice(some, other), 2.0 * 4 / (9 + 9));  // 2x2 overlap of two 3x3 squares

    std::vector<PredictedObject> objects = find_objects(labels_of(some));
    ASSERT_EQ(objects.size(), 1u);
    Overlap none = overlap(objects[0], empty);
    EXPECT_EQ(none.dice, 0.0);
    EXPECT_EQ(none.iou, 0.0);
    Overlap shifted = overlap(objects[0], other);
    EXPECT_DOUBLE_EQ(shifted.dice, dice(some, other));
    EXPECT_DOUBLE_EQ(shifted.iou, iou(some, other));
}

TEST(SqaScoring, EveryMaskChoiceAndPromptIsRecorded) {
    cv::Size size(40, 30);
    cv::Mat object = blob(size, {8, 6, 14, 12});
    std::vector<PredictedObject> objects = find_objects(labels_of(object));
    FakeSam sam(object);
    ScoredObjects scored = score_objects("img", "model", objects, size, std::ref(sam), {});
    ASSERT_EQ(scored.objects.size(), 1u);
    const ObjectResult& r = scored.objects[0];

    const size_t by_iou = mask_choice_index(MaskChoice::BestPredictedIou);
    const size_t by_dice = mask_choice_index(MaskChoice::BestDice);
    const size_t single = mask_choice_index(MaskChoice::SingleMask);
    // Point prompt: best rated = empty (0.7), best Dice = exact, single = grown.
    EXPECT_EQ(r.point_prompt.dice[by_iou], dice(object, sam.empty));
    EXPECT_FLOAT_EQ(r.point_prompt.predicted_iou[by_iou], 0.7f);
    EXPECT_EQ(r.point_prompt.dice[by_dice], 1.0);
    EXPECT_FLOAT_EQ(r.point_prompt.predicted_iou[by_dice], 0.2f);
    EXPECT_DOUBLE_EQ(r.point_prompt.dice[single], dice(object, sam.grown));
    EXPECT_DOUBLE_EQ(r.point_prompt.iou[single], iou(object, sam.grown));
    // Box prompt: best rated = half (0.9), best Dice = exact, single = shifted.
    EXPECT_DOUBLE_EQ(r.box_prompt.dice[by_iou], dice(object, sam.half));
    EXPECT_DOUBLE_EQ(r.box_prompt.iou[by_iou], iou(object, sam.half));
    EXPECT_EQ(r.box_prompt.dice[by_dice], 1.0);
    EXPECT_FLOAT_EQ(r.box_prompt.predicted_iou[by_dice], 0.8f);
    EXPECT_DOUBLE_EQ(r.box_prompt.dice[single], dice(object, sam.shifted));
    EXPECT_FLOAT_EQ(r.box_prompt.predicted_iou[single], 0.6f);
    // Stability and boundary IoU follow the picked mask.
    EXPECT_FLOAT_EQ(r.box_prompt.stability[by_iou], 1 - 0.9f / 2);
    EXPECT_FLOAT_EQ(r.box_prompt.stability[single], 1 - 0.6f / 2);
    const int band = boundary_band_width(size);
    EXPECT_DOUBLE_EQ(r.box_prompt.boundary_iou[by_dice], 1.0);
    EXPECT_DOUBLE_EQ(r.box_prompt.boundary_iou[single], boundary_iou(object, sam.shifted, band));
    EXPECT_DOUBLE_EQ(r.point_prompt.boundary_iou[by_iou], boundary_iou(object, sam.empty, band));
    EXPECT_EQ(r.model, "model");
    // Point-box agreement is between the configured choice's masks (empty and half here).
    EXPECT_DOUBLE_EQ(r.point_box_dice, dice(sam.empty, sam.half));
    EXPECT_DOUBLE_EQ(r.compactness, compactness(object));

    // Default configuration: max over prompts, best predicted IoU; SAM's chosen masks are the overlay's.
    EXPECT_DOUBLE_EQ(r.score, std::max(dice(object, sam.empty), dice(object, sam.half)));
    EXPECT_EQ(cv::countNonZero(scored.sam_point_mask), 0);
    EXPECT_EQ(cv::norm(scored.sam_box_mask, sam.half, cv::NORM_INF), 0);
}

TEST(SqaScoring, ReducersCombinePointAndBoxDice) {
    cv::Size size(40, 30);
    cv::Mat object = blob(size, {8, 6, 14, 12});
    std::vector<PredictedObject> objects = find_objects(labels_of(object));
    FakeSam sam(object);
    const double point = dice(object, sam.grown), box = dice(object, sam.shifted);  // single-mask outputs
    ASSERT_NE(point, box);
    const std::vector<std::pair<Reducer, double>> expected{{Reducer::Max, std::max(point, box)},
                                                           {Reducer::Mean, (point + box) / 2},
                                                           {Reducer::Min, std::min(point, box)},
                                                           {Reducer::PointOnly, point},
                                                           {Reducer::BoxOnly, box}};
    for (const auto& [reducer, value] : expected) {
        ScoreOptions options;
        options.reducer = reducer;
        options.mask_choice = MaskChoice::SingleMask;
        ScoredObjects scored = score_objects("img", "model", objects, size, std::ref(sam), options);
        EXPECT_DOUBLE_EQ(scored.objects[0].score, value) << to_string(reducer);
        EXPECT_DOUBLE_EQ(scored.objects[0].score_with(reducer, MaskChoice::SingleMask), value);
    }
}

TEST(SqaScoring, PromptsAreTheObjectsPointsAndBoxesInOneBatchedCall) {
    cv::Size size(50, 40);
    cv::Mat mask = blob(size, {2, 3, 6, 5}) | blob(size, {30, 20, 10, 12});
    std::vector<PredictedObject> objects = find_objects(labels_of(mask));
    ASSERT_EQ(objects.size(), 2u);
    FakeSam sam(mask);
    score_objects("img", "model", objects, size, std::ref(sam), {});
    ASSERT_EQ(sam.calls.size(), 1u);  // one decoder pass per prompt gives the multimask and single outputs
    for (const auto& prompts : sam.calls) {
        ASSERT_EQ(prompts.size(), 4u);
        for (size_t i = 0; i < objects.size(); ++i) {
            const Prompt& point = prompts[2 * i];
            const Prompt& box = prompts[2 * i + 1];
            ASSERT_EQ(point.points.size(), 1u);
            EXPECT_FALSE(point.box.has_value());
            EXPECT_EQ(point.points[0].label, 1);
            EXPECT_EQ(point.points[0].x, objects[i].point.x);
            EXPECT_EQ(point.points[0].y, objects[i].point.y);
            EXPECT_TRUE(box.points.empty());
            ASSERT_TRUE(box.box.has_value());
            BoxPrompt expected = prompt_box(objects[i].bounds);
            EXPECT_EQ(box.box->x0, expected.x0);
            EXPECT_EQ(box.box->y1, expected.y1);
        }
    }
}

TEST(SqaScoring, TrueDiceBinaryMultiClassAndEmpty) {
    cv::Size size(20, 20);
    cv::Mat pred = labels_of(blob(size, {0, 0, 10, 10}));
    cv::Mat gt = labels_of(blob(size, {5, 0, 10, 10}));
    TrueDice binary = true_dice(pred, gt);
    EXPECT_DOUBLE_EQ(binary.dice, dice(pred, gt));
    ASSERT_EQ(binary.class_dice.size(), 1u);
    EXPECT_EQ(binary.class_dice[0].first, 1);

    // Class 2 only in the prediction, class 3 only in the truth: both count, with Dice 0.
    cv::Mat pred_multi = pred.clone(), gt_multi = gt.clone();
    pred_multi(cv::Rect(15, 15, 3, 3)).setTo(2);
    gt_multi(cv::Rect(0, 15, 3, 3)).setTo(3);
    TrueDice multi = true_dice(pred_multi, gt_multi);
    ASSERT_EQ(multi.class_dice.size(), 3u);
    EXPECT_EQ(multi.class_dice[1], std::make_pair(2, 0.0));
    EXPECT_EQ(multi.class_dice[2], std::make_pair(3, 0.0));
    EXPECT_DOUBLE_EQ(multi.dice, (dice(pred_multi == 1, gt_multi == 1) + 0 + 0) / 3);

    cv::Mat nothing = cv::Mat::zeros(size, CV_32S);
    TrueDice both_empty = true_dice(nothing, nothing);
    EXPECT_EQ(both_empty.dice, 1.0);
    EXPECT_TRUE(both_empty.class_dice.empty());
    EXPECT_EQ(true_dice(nothing, gt).dice, 0.0);
}

TEST(SqaScoring, ModelConfidenceIsMeanOfMaxPAndOneMinusP) {
    cv::Mat p = (cv::Mat_<float>(1, 4) << 0.0f, 0.5f, 0.9f, 0.2f);
    EXPECT_NEAR(model_confidence(p), (1.0 + 0.5 + 0.9 + 0.8) / 4, 1e-6);
}

TEST(SqaScoring, BoundaryIouComparesOutlinesWhateverTheSize) {
    cv::Size size(200, 200);
    cv::Mat big = blob(size, {20, 20, 160, 160});
    EXPECT_DOUBLE_EQ(boundary_iou(big, big, 3), 1.0);
    EXPECT_DOUBLE_EQ(boundary_iou(cv::Mat::zeros(size, CV_8U), cv::Mat::zeros(size, CV_8U), 3), 1.0);
    EXPECT_DOUBLE_EQ(boundary_iou(big, cv::Mat::zeros(size, CV_8U), 3), 0.0);
    // A mask one pixel smaller all round: its Dice stays near 1, its boundary IoU does not.
    cv::Mat smaller = blob(size, {21, 21, 158, 158});
    EXPECT_GT(dice(big, smaller), 0.98);
    // Bands of width 3: the big one's ring is 20..22 and 177..179; the smaller one's 21..23 and 176..178.
    auto ring = [&](int x, int side) {
        return blob(size, {x, x, side, side}) & ~blob(size, {x + 3, x + 3, side - 6, side - 6});
    };
    cv::Mat a = ring(20, 160), b = ring(21, 158);
    const double expected = double(cv::countNonZero(a & b)) / cv::countNonZero(a | b);
    EXPECT_NEAR(boundary_iou(big, smaller, 3), expected, 1e-12);
    EXPECT_LT(expected, 0.6);
    // The image border counts as outside: a mask filling the image has its band along the border.
    cv::Mat full(size, CV_8U, cv::Scalar(1));
    EXPECT_NEAR(boundary_iou(full, big, 3), 0.0, 1e-12);
    EXPECT_EQ(boundary_band_width({1000, 1000}), 28);  // 2 % of the diagonal
    EXPECT_EQ(boundary_band_width({10, 10}), 1);
}

TEST(SqaScoring, CompactnessIsHighForDiscsAndLowForThinShapes) {
    cv::Mat disc = cv::Mat::zeros(101, 101, CV_8U);
    cv::circle(disc, {50, 50}, 40, 1, cv::FILLED);
    EXPECT_GT(compactness(disc), 0.9);
    cv::Mat line = cv::Mat::zeros(101, 101, CV_8U);
    line.row(50).setTo(1);
    EXPECT_LT(compactness(line), 0.05);
    cv::Mat ring = disc.clone();
    cv::circle(ring, {50, 50}, 30, 0, cv::FILLED);
    EXPECT_LT(compactness(ring), compactness(disc) / 2);  // the hole's outline counts
    EXPECT_DOUBLE_EQ(compactness(blob({5, 5}, {2, 2, 1, 1})), 1.0);  // a single pixel
}

TEST(SqaScoring, ProbabilityFeaturesFromAKnownMap) {
    // Foreground predicted on the left half; p = 0.9 there, 0.3 on the right half except a 0.5 strip.
    cv::Mat labels = cv::Mat::zeros(64, 64, CV_32S);
    labels(cv::Rect(0, 0, 32, 64)).setTo(1);
    cv::Mat p(64, 64, CV_32F, cv::Scalar(0.3f));
    p(cv::Rect(0, 0, 32, 64)).setTo(0.9f);
    p(cv::Rect(48, 0, 16, 64)).setTo(0.5f);
    Features f;
    add_probability_features(f, p, labels);
    EXPECT_NEAR(f.at("confidence_foreground"), 0.9, 1e-6);
    // soft Dice = 2 sum(p y) / (sum p + sum y)
    const double sum_py = 0.9 * 32 * 64, sum_p = sum_py + 0.3 * 16 * 64 + 0.5 * 16 * 64, sum_y = 32 * 64;
    EXPECT_NEAR(f.at("soft_dice"), 2 * sum_py / (sum_p + sum_y), 1e-6);
    // The band around the outline (x = 32) holds 0.9 on the left and 0.7 (= max(0.3, 0.7)) on the right.
    EXPECT_GT(f.at("confidence_boundary"), 0.7);
    EXPECT_LT(f.at("confidence_boundary"), 0.9);
    // The least confident 8x8 patch lies wholly in the 0.5 strip.
    EXPECT_NEAR(f.at("confidence_worst_patch"), 0.5, 1e-6);
    EXPECT_FALSE(f.count("model_confidence")) << "that one is ImageResult's own field";

    Features empty;
    add_probability_features(empty, p, cv::Mat::zeros(64, 64, CV_32S));
    EXPECT_FALSE(empty.count("confidence_foreground"));
    EXPECT_NEAR(empty.at("soft_dice"), 0.0, 1e-12);
}

TEST(SqaScoring, ObjectFeaturesAggregateTheObjects) {
    ObjectResult small, large;
    small.area = 10;
    large.area = 90;
    small.box_prompt.dice.fill(0.2);
    large.box_prompt.dice.fill(0.8);
    small.point_prompt.dice.fill(0.0);
    large.point_prompt.dice.fill(0.0);
    small.box_prompt.boundary_iou.fill(0.1);
    large.box_prompt.boundary_iou.fill(0.5);
    small.compactness = 0.3;
    large.compactness = 0.9;
    ScoreOptions options;
    options.reducer = Reducer::BoxOnly;
    options.mask_choice = MaskChoice::SingleMask;
    Features f;
    add_object_features(f, {small, large}, options, {20, 10});
    EXPECT_DOUBLE_EQ(f.at("sam_dice_mean"), 0.5);
    EXPECT_DOUBLE_EQ(f.at("sam_dice_area_weighted"), (10 * 0.2 + 90 * 0.8) / 100);
    EXPECT_DOUBLE_EQ(f.at("sam_dice_worst"), 0.2);
    EXPECT_DOUBLE_EQ(f.at("sam_box_boundary_iou"), (10 * 0.1 + 90 * 0.5) / 100);
    EXPECT_DOUBLE_EQ(f.at("compactness"), (10 * 0.3 + 90 * 0.9) / 100);
    EXPECT_DOUBLE_EQ(f.at("foreground_fraction"), 100.0 / 200);
    EXPECT_DOUBLE_EQ(f.at("largest_object_share"), 0.9);

    ImageResult image;
    image.features = f;
    image.n_objects = 2;
    image.model_confidence = 0.7;
    const Features all = all_features(image);
    EXPECT_EQ(all.at("n_objects"), 2);
    EXPECT_EQ(all.at("model_confidence"), 0.7);
    // Every feature recorded is one image_features() lists.
    for (const auto& [name, value] : all)
        EXPECT_TRUE(std::any_of(image_features().begin(), image_features().end(),
                                [&](const FeatureInfo& info) { return name == info.name; }))
            << name;
}

TEST(SqaScoring, EachModelFamilyIsPromptedAsItWasTrained) {
    for (ModelType type : {ModelType::MedSam, ModelType::LiteMedSam}) {
        const PromptingDefaults d = default_prompting(type);
        EXPECT_EQ(d.reducer, Reducer::BoxOnly) << to_string(type);
        EXPECT_EQ(d.mask_choice, MaskChoice::SingleMask) << to_string(type);
        EXPECT_NE(d.reason.find("box"), std::string::npos);
    }
    for (ModelType type : {ModelType::VitB, ModelType::VitL, ModelType::VitH, ModelType::VitT, ModelType::Custom}) {
        const PromptingDefaults d = default_prompting(type);
        EXPECT_EQ(d.reducer, Reducer::Max) << to_string(type);
        EXPECT_EQ(d.mask_choice, MaskChoice::BestPredictedIou) << to_string(type);
    }
    for (ModelType type : {ModelType::VitB, ModelType::LiteMedSam})
        EXPECT_EQ(default_prompting(type).aggregation, ImageAggregation::AreaWeighted) << to_string(type);
}
