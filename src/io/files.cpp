#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {

void write_file_atomically(const std::filesystem::path& path, const std::string& contents) {
    std::filesystem::path temporary = path;
    temporary += ".tmp." + std::to_string(::getpid());
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(path.string(), std::string("cannot write: ") + std::strerror(errno));
    size_t written = 0;
    while (written < contents.size()) {
        ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::string problem = std::strerror(errno);
            ::close(fd);
            ::unlink(temporary.c_str());
            throw Error(path.string(), "cannot write: " + problem);
        }
        written += static_cast<size_t>(n);
    }
    bool synced = ::fsync(fd) == 0;
    bool closed = ::close(fd) == 0;
    if (!synced || !closed || std::rename(temporary.c_str(), path.c_str()) != 0) {
        std::string problem = std::strerror(errno);
        ::unlink(temporary.c_str());
        throw Error(path.string(), "cannot write: " + problem);
    }
}

}  // namespace sqasam
