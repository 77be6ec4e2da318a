// The scoring records' small functions. They live in the io library, which every stage links, so evaluation
// (which re-scores objects for the ablation) and scoring share one definition.
#include <algorithm>
#include <iterator>

#include "sqasam/error.hpp"
#include "sqasam/results.hpp"

namespace sqasam {
namespace {

template <typename Enum, size_t N>
Enum from_name(const std::string& name, const std::array<std::pair<Enum, const char*>, N>& names, const char* what) {
    for (const auto& [value, text] : names)
        if (name == text) return value;
    std::string choices;
    for (const auto& entry : names) choices += (choices.empty() ? "" : ", ") + std::string(entry.second);
    throw Error("", std::string("unknown ") + what + " '" + name + "' (choose one of " + choices + ")");
}

template <typename Enum, size_t N>
std::string to_name(Enum value, const std::array<std::pair<Enum, const char*>, N>& names) {
    for (const auto& [candidate, text] : names)
        if (candidate == value) return text;
    return "?";
}

constexpr std::array<std::pair<MaskChoice, const char*>, 3> kMaskChoiceNames{
    {{MaskChoice::BestPredictedIou, "best_iou"}, {MaskChoice::BestDice, "best_dice"}, {MaskChoice::SingleMask, "single"}}};
constexpr std::array<std::pair<Reducer, const char*>, 5> kReducerNames{{{Reducer::Max, "max"},
                                                                        {Reducer::Mean, "mean"},
                                                                        {Reducer::Min, "min"},
                                                                        {Reducer::PointOnly, "point"},
                                                                        {Reducer::BoxOnly, "box"}}};
constexpr std::array<std::pair<ImageAggregation, const char*>, 2> kAggregationNames{
    {{ImageAggregation::Mean, "mean"}, {ImageAggregation::AreaWeighted, "area"}}};

}  // namespace

std::string to_string(MaskChoice choice) { return to_name(choice, kMaskChoiceNames); }
std::string to_string(Reducer reducer) { return to_name(reducer, kReducerNames); }
std::string to_string(ImageAggregation aggregation) { return to_name(aggregation, kAggregationNames); }

MaskChoice mask_choice_from_string(const std::string& name) {
    return from_name(name, kMaskChoiceNames, "mask choice");
}
Reducer reducer_from_string(const std::string& name) { return from_name(name, kReducerNames, "reducer"); }
ImageAggregation aggregation_from_string(const std::string& name) {
    return from_name(name, kAggregationNames, "aggregation");
}

std::size_t mask_choice_index(MaskChoice choice) {
    return static_cast<std::size_t>(
        std::distance(kAllMaskChoices.begin(), std::find(kAllMaskChoices.begin(), kAllMaskChoices.end(), choice)));
}

double reduce(Reducer reducer, double point_dice, double box_dice) {
    switch (reducer) {
        case Reducer::Max: return std::max(point_dice, box_dice);
        case Reducer::Mean: return (point_dice + box_dice) / 2;
        case Reducer::Min: return std::min(point_dice, box_dice);
        case Reducer::PointOnly: return point_dice;
        case Reducer::BoxOnly: return box_dice;
    }
    return point_dice;
}

double ObjectResult::score_with(Reducer reducer, MaskChoice choice) const {
    std::size_t k = mask_choice_index(choice);
    return reduce(reducer, point_prompt.dice[k], box_prompt.dice[k]);
}

}  // namespace sqasam
