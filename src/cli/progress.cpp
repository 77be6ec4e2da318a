#include "cli/progress.hpp"

#include <cmath>
#include <string>

namespace sqasam::cli {
namespace {

std::string clock_text(double seconds) {
    long s = std::lround(seconds);
    char text[32];
    if (s >= 3600) std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else std::snprintf(text, sizeof text, "%ld:%02ld", s / 60, s % 60);
    return text;
}

}  // namespace

ScoreProgress::ScoreProgress(std::FILE* stream, bool terminal, std::chrono::seconds interval)
    : stream_(stream), terminal_(terminal), interval_(interval), start_(std::chrono::steady_clock::now()) {
    if (!terminal_ && interval_.count() > 0) clock_ = std::thread([this] { keep_the_beat(); });
}

ScoreProgress::~ScoreProgress() {
    {
        std::lock_guard lock(mutex_);
        done_ = true;
    }
    wake_.notify_all();
    if (clock_.joinable()) clock_.join();
}

std::string ScoreProgress::line(const RunProgress& p) const {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const std::string eta = p.computed == 0 ? "--:--"
                                            : clock_text(elapsed / static_cast<double>(p.computed) *
                                                         static_cast<double>(p.to_compute - p.computed));
    char head[160];
    std::snprintf(head, sizeof head, "%zu/%zu images (%.0f%%), elapsed %s, ETA %s", p.finished, p.total,
                  100.0 * static_cast<double>(p.finished) / static_cast<double>(p.total), clock_text(elapsed).c_str(),
                  eta.c_str());
    std::string text = head;
    if (p.objects_total > 0)
        text += ", " + p.image + (p.model.empty() ? "" : " (" + p.model + ")") + ": " + std::to_string(p.objects_done) +
                "/" + std::to_string(p.objects_total) + " objects";
    else if (!p.image.empty())
        text += ", last " + p.image;
    return text;
}

void ScoreProgress::operator()(const RunProgress& progress) {
    std::lock_guard lock(mutex_);
    latest_ = progress;
    const bool last = progress.finished == progress.total && progress.objects_total == 0;
    if (terminal_) {
        std::fprintf(stream_, "\r\033[K%s%s", line(progress).c_str(), last ? "\n" : "");
    } else if (last || interval_.count() == 0) {
        std::fprintf(stream_, "sqasam score: %s\n", line(progress).c_str());
    }
    std::fflush(stream_);
}

void ScoreProgress::keep_the_beat() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, interval_, [this] { return done_; })) {
        if (latest_ && latest_->finished == latest_->total && latest_->objects_total == 0) continue;  // said at the end
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
        if (latest_) std::fprintf(stream_, "sqasam score: %s\n", line(*latest_).c_str());
        else std::fprintf(stream_, "sqasam score: elapsed %s, first image not done yet\n", clock_text(elapsed).c_str());
        std::fflush(stream_);
    }
}

}  // namespace sqasam::cli
