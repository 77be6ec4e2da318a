#pragma once
// Progress of a scoring run on stderr. On a terminal: one line rewritten in place after every image and every batch
// of objects. Elsewhere (nohup, CI, `2> log`): plain lines, one at least every `interval` (a clock thread keeps the
// beat while one image takes long) and one at the end, so that a log shows a long job is alive and when it ends.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>

#include "sqasam/sqa.hpp"

namespace sqasam::cli {

class ScoreProgress {
public:
    // interval 0: a plain line after every image and batch of objects, no clock thread.
    ScoreProgress(std::FILE* stream, bool terminal, std::chrono::seconds interval);
    ~ScoreProgress();
    ScoreProgress(const ScoreProgress&) = delete;
    ScoreProgress& operator=(const ScoreProgress&) = delete;

    void operator()(const RunProgress& progress);  // the pipeline's ProgressCallback

private:
    std::string line(const RunProgress& p) const;  // "12/100 images (12%), elapsed 1:02, ETA 4:31, ..."
    void keep_the_beat();

    std::FILE* stream_;
    bool terminal_;
    std::chrono::seconds interval_;
    std::chrono::steady_clock::time_point start_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::optional<RunProgress> latest_;
    bool done_ = false;
    std::thread clock_;
};

}  // namespace sqasam::cli
