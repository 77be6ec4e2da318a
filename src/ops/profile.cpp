// The op profile: per-thread accumulators of exclusive time and FLOPs per op class, summed when asked.
#include <omp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <vector>

#include "ops/ops.hpp"

namespace sqasam::ops {
namespace {

std::atomic<bool> profiling{false};

using Clock = std::chrono::steady_clock;

struct ThreadTotals {
    std::array<double, kOpClassCount> seconds{}, flops{};
    std::array<int64_t, kOpClassCount> calls{};
};

// Every thread that ever recorded; OpenMP's pool threads live as long as the process, and so do their totals.
std::mutex registry_mutex;
std::vector<ThreadTotals*>& registry() {
    static std::vector<ThreadTotals*> all;
    return all;
}

ThreadTotals& thread_totals() {
    thread_local ThreadTotals* totals = [] {
        auto* t = new ThreadTotals();  // never freed: the registry may be read after the thread ends
        std::lock_guard lock(registry_mutex);
        registry().push_back(t);
        return t;
    }();
    return *totals;
}

thread_local ProfileScope* innermost = nullptr;

double seconds_since(Clock::time_point since, Clock::time_point now) {
    return std::chrono::duration<double>(now - since).count();
}

}  // namespace

const char* to_string(OpClass op) {
    switch (op) {
        case OpClass::product: return "matrix products";
        case OpClass::attention_product: return "attention products";
        case OpClass::convolution: return "convolutions";
        case OpClass::attention_other: return "attention softmax, rel-pos terms, tiles";
        case OpClass::layer_norm: return "LayerNorm";
        case OpClass::gelu: return "GELU";
        case OpClass::softmax: return "softmax, exp";
        case OpClass::bf16_conversion: return "bf16 conversions";
        case OpClass::packing: return "operand packing";
        case OpClass::layout: return "layout copies (partition, transpose, im2col)";
        case OpClass::elementwise: return "element-wise adds";
        case OpClass::resampling: return "mask resampling, thresholds (postprocessing)";
    }
    return "?";
}

bool is_product(OpClass op) {
    return op == OpClass::product || op == OpClass::attention_product || op == OpClass::convolution;
}

void start_profile() {
    std::lock_guard lock(registry_mutex);
    for (ThreadTotals* t : registry()) *t = ThreadTotals();
    profiling = true;
}

OpProfile stop_profile() {
    profiling = false;
    OpProfile profile;
    std::lock_guard lock(registry_mutex);
    for (const ThreadTotals* t : registry())
        for (int i = 0; i < kOpClassCount; ++i) {
            profile.thread_seconds[i] += t->seconds[i];
            profile.flops[i] += t->flops[i];
            profile.calls[i] += t->calls[i];
        }
    return profile;
}

ProfileScope::ProfileScope(OpClass op, double flops) {
    if (!profiling.load(std::memory_order_relaxed)) return;
    active_ = true;
    // A product inside an attention op counts as attention's product.
    op_ = op == OpClass::product && innermost && innermost->op_ == OpClass::attention_other ? OpClass::attention_product
                                                                                            : op;
    flops_ = flops;
    // Time on the calling thread stands for every thread the op keeps busy: all of them outside a parallel region.
    weight_ = omp_in_parallel() ? 1 : omp_get_max_threads();
    parent_ = innermost;
    start_ = Clock::now();
    if (parent_) parent_->pause(start_);
    innermost = this;
}

ProfileScope::~ProfileScope() {
    if (!active_) return;
    const auto now = Clock::now();
    ThreadTotals& totals = thread_totals();
    const int i = int(op_);
    totals.seconds[i] += (accumulated_ + seconds_since(start_, now)) * weight_;
    totals.flops[i] += flops_;
    totals.calls[i] += 1;
    innermost = parent_;
    if (parent_) parent_->start_ = now;
}

void ProfileScope::pause(Clock::time_point now) { accumulated_ += seconds_since(start_, now); }

}  // namespace sqasam::ops
