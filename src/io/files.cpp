#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
namespace {

// Temporaries are named `.sqasam-<pid>-<n>.tmp` in the target's folder, whatever the target's name, so the name
// stays short (a 254-byte target name plus a suffix would pass NAME_MAX). A process killed between writing its
// temporary and renaming it leaves one behind; the first write into a folder removes those whose process is gone
// (a live writer's temporaries are left alone), once per folder and process.
constexpr std::string_view kTemporaryPrefix = ".sqasam-";
constexpr std::string_view kTemporarySuffix = ".tmp";

void remove_stale_temporaries(const std::filesystem::path& folder) {
    static std::mutex mutex;
    static std::set<std::filesystem::path> cleaned;
    {
        std::lock_guard<std::mutex> lock(mutex);
        if (!cleaned.insert(folder).second) return;
    }
    std::error_code ec;
    for (std::filesystem::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(kTemporaryPrefix) || !name.ends_with(kTemporarySuffix)) continue;
        pid_t pid = 0;
        const char* digits = name.data() + kTemporaryPrefix.size();
        const auto [end_of_pid, error] = std::from_chars(digits, name.data() + name.size(), pid);
        if (error != std::errc() || *end_of_pid != '-' || pid <= 0) continue;
        std::error_code ignored;
        if (::kill(pid, 0) != 0 && errno == ESRCH) std::filesystem::remove(it->path(), ignored);
    }
}

std::filesystem::path temporary_beside(const std::filesystem::path& path) {
    static std::atomic<unsigned long> counter{0};
    const std::filesystem::path folder = path.has_parent_path() ? path.parent_path() : ".";
    remove_stale_temporaries(folder);
    return folder / (std::string(kTemporaryPrefix) + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
                     std::string(kTemporarySuffix));
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

std::optional<std::string> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

void write_file_atomically(const std::filesystem::path& path, const std::string& contents) {
    const std::filesystem::path temporary = temporary_beside(path);
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
