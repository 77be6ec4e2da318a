#pragma once
// Activation buffers reused across calls: first touches of fresh pages cost more here than many of the layers that
// fill them, so an encoder or decoder keeps its buffers from one image (or prompt) to the next. Also how the
// prompts of one call share the threads.
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace sqasam::sam {

// Hands each caller a workspace of its own, reusing those given back; concurrent callers never share one.
template <class Workspace>
class WorkspacePool {
public:
    class Lease {
    public:
        Lease(WorkspacePool& pool, std::unique_ptr<Workspace> workspace) : pool_(pool), workspace_(std::move(workspace)) {}
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        ~Lease() { pool_.give_back(std::move(workspace_)); }
        Workspace& operator*() { return *workspace_; }
        Workspace* operator->() { return workspace_.get(); }

    private:
        WorkspacePool& pool_;
        std::unique_ptr<Workspace> workspace_;
    };

    Lease take() {
        std::lock_guard lock(mutex_);
        if (idle_.empty()) return Lease(*this, std::make_unique<Workspace>());
        auto workspace = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(workspace));
    }

private:
    void give_back(std::unique_ptr<Workspace> workspace) {
        std::lock_guard lock(mutex_);
        idle_.push_back(std::move(workspace));
    }
    std::mutex mutex_;
    std::vector<std::unique_ptr<Workspace>> idle_;
};

// Grows a buffer to at least `count` elements; never shrinks it, so its pages stay mapped.
template <class T>
void ensure_size(std::vector<T>& buffer, size_t count) {
    if (buffer.size() < count) buffer.resize(count);
}

// Calls fn(i) for i in [0, count): a lone item outside any parallel region, so that its ops' own regions use every
// thread (inside a region they would be nested ones, which start their threads anew each time); several items side
// by side, one per thread at a time.
template <class Fn>
void for_each_side_by_side(size_t count, const Fn& fn) {
    if (count == 1) {
        fn(size_t{0});
        return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < count; ++i) fn(i);
}

}  // namespace sqasam::sam
