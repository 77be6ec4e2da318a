// The single agreement metrics between a quality value and the true Dice (conventions in sqasam/eval.hpp).
#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>

#include "sqasam/eval.hpp"

namespace sqasam {
namespace {

// Positions 0..n-1 ordered by key, ties by image name, then by position: the documented deterministic order.
template <typename Less>
std::vector<std::size_t> order_by(const std::vector<std::string>& names, std::size_t n, Less less) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        if (less(a, b)) return true;
        if (less(b, a)) return false;
        return names[a] < names[b];
    });
    return order;
}

// Mean over k = 1..n of the mean risk (1 - Dice) of the first k images in `order`.
double area_under_risk_coverage(const std::vector<double>& true_dice, const std::vector<std::size_t>& order) {
    double cumulative_risk = 0, area = 0;
    for (std::size_t k = 0; k < order.size(); ++k) {
        cumulative_risk += 1.0 - true_dice[order[k]];
        area += cumulative_risk / static_cast<double>(k + 1);
    }
    return area / static_cast<double>(order.size());
}

}  // namespace

std::optional<double> pearson(const std::vector<double>& x, const std::vector<double>& y) {
    const std::size_t n = x.size();
    if (n < 2 || y.size() != n) return std::nullopt;
    const double mean_x = std::accumulate(x.begin(), x.end(), 0.0) / n;
    const double mean_y = std::accumulate(y.begin(), y.end(), 0.0) / n;
    double sxy = 0, sxx = 0, syy = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double dx = x[i] - mean_x, dy = y[i] - mean_y;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if (sxx == 0 || syy == 0) return std::nullopt;  // a constant vector has no correlation
    return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

std::vector<double> average_ranks(const std::vector<double>& values) {
    std::vector<std::size_t> order(values.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
    std::vector<double> ranks(values.size());
    for (std::size_t start = 0; start < order.size();) {
        std::size_t end = start + 1;
        while (end < order.size() && values[order[end]] == values[order[start]]) ++end;
        const double mean_rank = 0.5 * static_cast<double>(start + 1 + end);  // mean of ranks start+1..end
        for (std::size_t i = start; i < end; ++i) ranks[order[i]] = mean_rank;
        start = end;
    }
    return ranks;
}

std::optional<double> spearman(const std::vector<double>& x, const std::vector<double>& y) {
    if (x.size() != y.size()) return std::nullopt;
    return pearson(average_ranks(x), average_ranks(y));
}

std::optional<double> bottom_k_accuracy(const Pairs& pairs, double fraction) {
    const std::size_t n = pairs.value.size();
    if (n == 0) return std::nullopt;
    const auto n_k = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(n)));
    auto lowest = [&](const std::vector<double>& key) {
        auto order = order_by(pairs.names, n, [&](std::size_t a, std::size_t b) { return key[a] < key[b]; });
        order.resize(n_k);
        std::sort(order.begin(), order.end());
        return order;
    };
    const auto by_score = lowest(pairs.value), by_dice = lowest(pairs.true_dice);
    std::vector<std::size_t> both;
    std::set_intersection(by_score.begin(), by_score.end(), by_dice.begin(), by_dice.end(), std::back_inserter(both));
    return static_cast<double>(both.size()) / static_cast<double>(n_k);
}

std::optional<double> auroc_failure(const std::vector<double>& score, const std::vector<bool>& failed) {
    const auto n_failed = static_cast<double>(std::count(failed.begin(), failed.end(), true));
    const auto n_passed = static_cast<double>(failed.size()) - n_failed;
    if (n_failed == 0 || n_passed == 0 || score.size() != failed.size()) return std::nullopt;
    // Mann-Whitney: the rank sum of the passed images counts the (passed, failed) pairs in which the passed
    // image scores higher, ties counting 1/2.
    const auto ranks = average_ranks(score);
    double passed_rank_sum = 0;
    for (std::size_t i = 0; i < ranks.size(); ++i)
        if (!failed[i]) passed_rank_sum += ranks[i];
    const double pairs_ranked_right = passed_rank_sum - n_passed * (n_passed + 1) / 2;
    return pairs_ranked_right / (n_passed * n_failed);
}

std::optional<double> aurc(const Pairs& pairs) {
    if (pairs.value.empty()) return std::nullopt;
    const auto& value = pairs.value;
    const auto most_trusted_first =
        order_by(pairs.names, value.size(), [&](std::size_t a, std::size_t b) { return value[a] > value[b]; });
    return area_under_risk_coverage(pairs.true_dice, most_trusted_first);
}

std::optional<double> optimal_aurc(const std::vector<double>& true_dice) {
    if (true_dice.empty()) return std::nullopt;
    std::vector<std::size_t> lowest_risk_first(true_dice.size());
    std::iota(lowest_risk_first.begin(), lowest_risk_first.end(), std::size_t{0});
    std::sort(lowest_risk_first.begin(), lowest_risk_first.end(),
              [&](std::size_t a, std::size_t b) { return true_dice[a] > true_dice[b]; });
    return area_under_risk_coverage(true_dice, lowest_risk_first);
}

double percentile(std::vector<double> values, double q) {
    if (values.empty()) return std::nan("");
    std::sort(values.begin(), values.end());
    const double position = std::clamp(q, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
    const auto below = static_cast<std::size_t>(std::floor(position));
    const auto above = std::min(below + 1, values.size() - 1);
    return values[below] + (values[above] - values[below]) * (position - static_cast<double>(below));
}

}  // namespace sqasam
