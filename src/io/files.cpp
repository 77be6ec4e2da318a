#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
namespace {

// A process killed between writing its temporary and renaming it leaves `<name>.tmp.<pid>` behind; the next write of
// the same file removes those whose process is gone (a live writer's temporary is left alone).
void remove_stale_temporaries(const std::filesystem::path& path) {
    const std::string prefix = path.filename().string() + ".tmp.";
    std::error_code ec;
    const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : ".";
    for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
        pid_t pid = 0;
        const char* digits = name.data() + prefix.size();
        const auto [end, error] = std::from_chars(digits, name.data() + name.size(), pid);
        if (error != std::errc() || end != name.data() + name.size() || pid <= 0) continue;
        if (::kill(pid, 0) != 0 && errno == ESRCH) std::filesystem::remove(entry.path(), ec);
    }
}

// Writes all of `contents` to fd; 0, or the errno of the failure.
int write_all(int fd, const std::string& contents) {
    size_t written = 0;
    while (written < contents.size()) {
        const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? errno : EIO;
        written += static_cast<size_t>(n);
    }
    return 0;
}

}  // namespace

void write_file_atomically(const std::filesystem::path& path, const std::string& contents) {
    remove_stale_temporaries(path);
    std::filesystem::path temporary = path;
    temporary += ".tmp." + std::to_string(::getpid());
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(path.string(), std::string("cannot write: ") + std::strerror(errno));
    if (const int problem = write_all(fd, contents)) {
        ::close(fd);
        ::unlink(temporary.c_str());
        throw Error(path.string(), std::string("cannot write: ") + std::strerror(problem));
    }
    bool synced = ::fsync(fd) == 0;
    bool closed = ::close(fd) == 0;
    if (!synced || !closed || std::rename(temporary.c_str(), path.c_str()) != 0) {
        std::string problem = std::strerror(errno);
        ::unlink(temporary.c_str());
        throw Error(path.string(), "cannot write: " + problem);
    }
}

void append_durably(const std::filesystem::path& path, const std::string& text) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(path.string(), std::string("cannot append: ") + std::strerror(errno));
    const int problem = write_all(fd, text);
    const bool synced = problem == 0 && ::fsync(fd) == 0;
    ::close(fd);
    if (problem) throw Error(path.string(), std::string("cannot append: ") + std::strerror(problem));
    if (!synced) throw Error(path.string(), std::string("cannot flush to disk: ") + std::strerror(errno));
}

}  // namespace sqasam
