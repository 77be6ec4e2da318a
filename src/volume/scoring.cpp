// One case: its image, every model's prediction, ground truth and probabilities -> scored volumes, classes and
// objects. Slices are encoded once for all the objects of all models that are scored on them.
#include <algorithm>
#include <map>
#include <set>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sqasam/error.hpp"
#include "sqasam/volume.hpp"
#include "volume/volume_internal.hpp"

namespace sqasam {
namespace {

void note(ImageResult& result, const std::string& flag, const std::string& message) {
    result.flags.push_back(flag);
    if (!message.empty()) result.error += (result.error.empty() ? "" : "; ") + message;
}

// A label volume as one row of CV_32S, for the 2D label-map functions (true_dice).
cv::Mat as_row(const LabelVolume& volume) {
    return cv::Mat(1, static_cast<int>(volume.labels.size()), CV_32S, const_cast<int32_t*>(volume.labels.data()));
}

std::map<int, long> class_voxels(const LabelVolume& volume) {
    std::map<int, long> counts;
    for (int32_t v : volume.labels)
        if (v != 0) ++counts[v];
    return counts;
}

// A case's model that has a usable prediction, and what scoring it needs.
struct ModelWork {
    std::optional<LabelVolume> labels;
    std::vector<VolumeObject> objects;
};

// Reads the prediction of model m and everything measured against it; problems become flags of its row.
void read_model(const VolumeCase& item, size_t m, const VolumeGeometry& grid, const std::optional<LabelVolume>& gt,
                const VolumeDataset& dataset, const VolumeRunOptions& options, int axis, VolumeResult& row,
                ModelWork& work) {
    try {
        work.labels = read_label_volume(item.pred[m], options.pred_threshold);
    } catch (const Error& e) {
        note(row.volume, "prediction_error", e.what());
        return;
    }
    const std::string difference = geometry_difference(grid, work.labels->geometry, options.tolerance);
    if (!difference.empty()) {
        note(row.volume, "geometry_mismatch", item.pred[m] + ": the prediction's grid is not the image's: " + difference);
        work.labels.reset();
        return;
    }
    if (gt) {
        const TrueDice truth = true_dice(as_row(*work.labels), as_row(*gt));
        row.volume.true_dice = truth.dice;
        row.volume.class_dice = truth.class_dice;
    }
    if (dataset.has_prob) {
        if (item.prob[m].empty()) {
            note(row.volume, "missing_prob", "no " + item.name + ".npz beside the prediction");
        } else {
            try {
                row.volume.model_confidence = volume_model_confidence(item.prob[m], grid);
            } catch (const Error& e) {
                note(row.volume, "prob_error", e.what());
            }
        }
    }
    VolumeObjectOptions object_options = options.objects;
    object_options.slice_axis = axis;
    work.objects = find_volume_objects(*work.labels, object_options);
    row.volume.n_objects = static_cast<int>(work.objects.size());
    if (std::none_of(work.labels->labels.begin(), work.labels->labels.end(), [](int32_t v) { return v != 0; }))
        note(row.volume, "empty_prediction", "");
    if (work.objects.empty()) note(row.volume, "no_objects", "");
}

// Dice between the models' predictions (2D rules: mean over classes present in either), for the models that have
// one: the case's mean over all pairs, and per model the median of its Dice with each other model (as 2D's
// model_agreement: one poor model does not drag the others down).
void add_agreement(const std::vector<ModelWork>& work, std::vector<VolumeResult>& rows) {
    std::vector<size_t> present;
    for (size_t m = 0; m < work.size(); ++m)
        if (work[m].labels) present.push_back(m);
    if (present.size() < 2) return;
    std::vector<std::vector<double>> with_others(work.size());
    double total = 0;
    for (size_t a = 0; a < present.size(); ++a)
        for (size_t b = a + 1; b < present.size(); ++b) {
            const double d = true_dice(as_row(*work[present[a]].labels), as_row(*work[present[b]].labels)).dice;
            with_others[present[a]].push_back(d);
            with_others[present[b]].push_back(d);
            total += d;
        }
    const double pairs = static_cast<double>(present.size() * (present.size() - 1) / 2);
    for (size_t m : present) {
        rows[m].agreement = total / pairs;
        rows[m].model_agreement = percentile(with_others[m], 50);
    }
}

std::vector<ClassResult> class_results(const VolumeResult& row, const std::vector<VolumeObjectResult>& objects,
                                       const std::map<int, long>& voxels, const ScoreOptions& options) {
    std::map<int, ClassResult> classes;
    for (const auto& [label, count] : voxels) {
        classes[label].class_label = label;
        classes[label].voxels = count;
    }
    for (const auto& [label, dice] : row.volume.class_dice) {
        classes[label].class_label = label;
        classes[label].true_dice = dice;
    }
    std::map<int, std::vector<const VolumeObjectResult*>> objects_of;
    for (const VolumeObjectResult& object : objects) {
        classes[object.class_label].class_label = object.class_label;
        objects_of[object.class_label].push_back(&object);
    }
    std::vector<ClassResult> results;
    for (auto& [label, result] : classes) {
        const std::vector<const VolumeObjectResult*>& scored = objects_of[label];
        result.n_objects = static_cast<int>(scored.size());
        result.score = volume_score(scored, options.reducer, options.mask_choice, options.aggregation);
        results.push_back(result);
    }
    return results;
}

}  // namespace

double VolumeObjectResult::score_with(Reducer reducer, MaskChoice choice) const {
    std::vector<const ObjectResult*> sections;
    for (const SliceScore& slice : slices) sections.push_back(&slice.cross_section);
    return image_score(sections, reducer, choice, ImageAggregation::AreaWeighted).value_or(0.0);
}

std::optional<double> volume_score(const std::vector<const VolumeObjectResult*>& objects, Reducer reducer,
                                   MaskChoice choice, ImageAggregation aggregation) {
    return aggregate_score(objects, reducer, choice, aggregation, &VolumeObjectResult::voxels);
}

CaseOutcome score_case(const VolumeCase& item, const VolumeDataset& dataset, const Segmenter& segmenter,
                       const VolumeRunOptions& options) {
    using volume_detail::FlaggedError;
    const size_t n_models = dataset.models.size();
    CaseOutcome outcome;
    outcome.name = item.name;
    std::vector<VolumeResult>& rows = outcome.volumes;
    rows.resize(n_models);
    for (size_t m = 0; m < n_models; ++m) {
        rows[m].volume.image = item.name;
        rows[m].volume.model = rows[m].model = dataset.models[m].name;
    }
    auto note_all = [&](const std::string& flag, const std::string& message) {
        for (VolumeResult& row : rows) note(row.volume, flag, message);
    };
    if (!item.problem.empty()) note_all("ambiguous_name", item.problem);
    if (item.image.empty()) note_all("missing_image", "no image file or DICOM folder for this case");
    for (size_t m = 0; m < n_models; ++m)
        if (item.pred[m].empty())
            note(rows[m].volume, "missing_prediction", "no prediction for this case in " + dataset.models[m].folder);
    if (!item.problem.empty() || item.image.empty()) return outcome;

    WindowedVolume gray;
    try {
        const ImageVolume image = read_image_volume(item.image, options.channel);
        gray = window_volume(image, options.window);
    } catch (const FlaggedError& e) {
        note_all(e.flag(), e.what());
        return outcome;
    } catch (const Error& e) {
        note_all("read_error", e.what());
        return outcome;
    }
    for (VolumeResult& row : rows) row.modality = gray.modality;
    const VolumeGeometry& grid = gray.geometry;
    const int axis = options.objects.slice_axis >= 0 ? options.objects.slice_axis : default_slice_axis(grid);

    std::optional<LabelVolume> gt;
    if (dataset.has_gt) {
        if (item.gt.empty()) {
            note_all("missing_gt", "no ground truth for this case");
        } else {
            try {
                gt = read_label_volume(item.gt);
                const std::string difference = geometry_difference(grid, gt->geometry, options.tolerance);
                if (!difference.empty()) throw Error(item.gt, "the ground truth's grid is not the image's: " + difference);
            } catch (const Error& e) {
                gt.reset();
                note_all("gt_error", e.what());
            }
        }
    }

    std::vector<ModelWork> work(n_models);
    for (size_t m = 0; m < n_models; ++m)
        if (!item.pred[m].empty()) read_model(item, m, grid, gt, dataset, options, axis, rows[m], work[m]);
    gt.reset();
    add_agreement(work, rows);

    // Which cross-sections are scored on which slice: slice -> (model, object, cross-section).
    struct Entry {
        size_t model, object, cross_section;
    };
    std::map<long, std::vector<Entry>> plan;
    std::vector<std::vector<VolumeObjectResult>> results(n_models);
    const double voxel_ml = grid.spacing[0] * grid.spacing[1] * grid.spacing[2] / 1000.0;
    for (size_t m = 0; m < n_models; ++m)
        for (size_t o = 0; o < work[m].objects.size(); ++o) {
            const VolumeObject& object = work[m].objects[o];
            VolumeObjectResult result;
            result.case_name = item.name;
            result.model = dataset.models[m].name;
            result.class_label = object.class_label;
            result.component = object.component;
            result.voxels = object.voxels;
            result.volume_ml = static_cast<double>(object.voxels) * voxel_ml;
            result.bounds = object.bounds;
            result.n_slices = object.n_slices;
            results[m].push_back(std::move(result));
            for (size_t x = 0; x < object.slices.size(); ++x) plan[object.slices[x]].push_back({m, o, x});
        }

    // SAM's mask unions per (model, slice), PNG-compressed (bit 0 point, bit 1 box), for the worst-slice pictures.
    std::map<std::pair<size_t, long>, std::vector<uint8_t>> sam_masks;
    int encoded = 0;
    for (const auto& [slice, entries] : plan) {
        cv::Mat rgb;
        cv::cvtColor(volume_slice(gray.gray.data(), grid, axis, slice), rgb, cv::COLOR_GRAY2RGB);
        const MaskSource sam = segmenter(rgb);
        ++encoded;
        for (size_t m = 0; m < n_models; ++m) {
            std::vector<PredictedObject> cross_sections;
            std::vector<const Entry*> owners;
            for (const Entry& entry : entries)
                if (entry.model == m) {
                    cross_sections.push_back(work[m].objects[entry.object].cross_sections[entry.cross_section]);
                    owners.push_back(&entry);
                }
            if (cross_sections.empty()) continue;
            ScoredObjects scored =
                score_objects(item.name, dataset.models[m].name, cross_sections, rgb.size(), sam, options.score);
            for (size_t x = 0; x < owners.size(); ++x)
                results[m][owners[x]->object].slices.push_back({slice, std::move(scored.objects[x])});
            const cv::Mat both = scored.sam_point_mask + scored.sam_box_mask * 2;
            cv::imencode(".png", both, sam_masks[{m, slice}]);
        }
    }

    for (size_t m = 0; m < n_models; ++m) {
        VolumeResult& row = rows[m];
        row.slices_encoded = encoded;
        std::vector<const VolumeObjectResult*> scored;
        for (VolumeObjectResult& object : results[m]) {
            object.score = object.score_with(options.score.reducer, options.score.mask_choice);
            scored.push_back(&object);
        }
        row.volume.score =
            volume_score(scored, options.score.reducer, options.score.mask_choice, options.score.aggregation);
        if (work[m].labels)
            row.classes = class_results(row, results[m], class_voxels(*work[m].labels), options.score);

        // The slice where the lowest-scored object scored lowest.
        const auto worst = std::min_element(results[m].begin(), results[m].end(),
                                            [](const auto& a, const auto& b) { return a.score < b.score; });
        if (worst == results[m].end() || worst->slices.empty()) continue;
        const auto lowest = std::min_element(worst->slices.begin(), worst->slices.end(), [](const auto& a, const auto& b) {
            return a.cross_section.score < b.cross_section.score;
        });
        CaseOutcome::WorstSlice picture;
        picture.model = row.model;
        picture.slice = lowest->slice;
        picture.axis = axis;
        picture.gray = volume_slice(gray.gray.data(), grid, axis, lowest->slice);
        picture.prediction = volume_slice(work[m].labels->labels.data(), grid, axis, lowest->slice);
        const cv::Mat both = cv::imdecode(sam_masks.at({m, lowest->slice}), cv::IMREAD_UNCHANGED);
        picture.sam_point_mask = both & 1;
        picture.sam_box_mask = (both & 2) / 2;
        for (const VolumeObjectResult& object : results[m])
            for (const SliceScore& slice : object.slices)
                if (slice.slice == lowest->slice) picture.cross_sections.push_back(slice.cross_section);
        outcome.worst_slices.push_back(std::move(picture));
    }
    for (auto& model_objects : results)
        for (VolumeObjectResult& object : model_objects) outcome.objects.push_back(std::move(object));
    return outcome;
}

}  // namespace sqasam
