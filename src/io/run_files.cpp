// What a run needs around its files: the output-folder lock, file stamps, content hashes, names as UTF-8.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"

namespace sqasam {
namespace fs = std::filesystem;
namespace {

std::string read_all(int fd) {
    std::string text;
    char buffer[64];
    ssize_t got;
    while ((got = ::pread(fd, buffer, sizeof buffer, static_cast<off_t>(text.size()))) > 0) text.append(buffer, got);
    return text;
}

// Bytes in the valid UTF-8 sequence starting at p (RFC 3629: no overlong forms, surrogates or values past
// U+10FFFF), or 0 when none starts there.
size_t utf8_sequence_length(const unsigned char* p, size_t left) {
    auto continuation = [&](size_t i, unsigned char low = 0x80, unsigned char high = 0xBF) {
        return i < left && p[i] >= low && p[i] <= high;
    };
    const unsigned char c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return continuation(1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        const bool second = c == 0xE0 ? continuation(1, 0xA0) : c == 0xED ? continuation(1, 0x80, 0x9F) : continuation(1);
        return second && continuation(2) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        const bool second = c == 0xF0 ? continuation(1, 0x90) : c == 0xF4 ? continuation(1, 0x80, 0x8F) : continuation(1);
        return second && continuation(2) && continuation(3) ? 4 : 0;
    }
    return 0;
}

int64_t nanoseconds(const timespec& time) { return int64_t{time.tv_sec} * 1000000000 + time.tv_nsec; }

fs::path hash_cache_path() {
    if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache && *cache) return fs::path(cache) / "sqasam/sha256.json";
    if (const char* home = std::getenv("HOME"); home && *home) return fs::path(home) / ".cache/sqasam/sha256.json";
    return {};
}

std::string sha256_of(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, std::string("cannot read: ") + std::strerror(errno));
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1)
        throw Error(path, "cannot start a SHA-256 digest");
    std::vector<char> buffer(1 << 20);
    while (in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        EVP_DigestUpdate(context.get(), buffer.data(), static_cast<size_t>(in.gcount()));
    }
    if (in.bad()) throw Error(path, "read failed while hashing");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(context.get(), digest, &length);
    std::string hex;
    for (unsigned int i = 0; i < length; ++i) {
        char pair[3];
        std::snprintf(pair, sizeof pair, "%02x", digest[i]);
        hex += pair;
    }
    return hex;
}

}  // namespace

FolderLock::FolderLock(const fs::path& folder) {
    const fs::path path = folder / ".sqasam.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(path.string(), std::string("cannot create the run lock: ") + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int problem = errno;
        std::string holder = read_all(fd_);
        ::close(fd_);
        if (problem != EWOULDBLOCK) throw Error(path.string(), std::string("cannot lock: ") + std::strerror(problem));
        holder = holder.substr(0, holder.find_first_not_of("0123456789"));
        throw Error(folder.string(), "another sqasam run" + (holder.empty() ? "" : " (pid " + holder + ")") +
                                         " is writing into this folder; wait for it to end or choose another --out");
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
        const std::string problem = std::strerror(errno);
        ::close(fd_);
        throw Error(path.string(), "cannot write the run lock: " + problem);
    }
}

FolderLock::~FolderLock() { ::close(fd_); }  // releases the lock; the file stays (removing it would race)

std::optional<FileStamp> file_stamp(const std::string& path) {
    struct stat info {};
    if (path.empty() || ::stat(path.c_str(), &info) != 0) return std::nullopt;
    return FileStamp{info.st_size, nanoseconds(info.st_mtim)};
}

std::string file_sha256(const std::string& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) throw Error(path, std::string("cannot read: ") + std::strerror(errno));
    if (!S_ISREG(info.st_mode)) throw Error(path, "not a regular file");  // reading a FIFO would wait forever
    std::error_code ec;
    const std::string key = fs::absolute(path, ec).string();
    const nlohmann::json stamp = {{"size", info.st_size},
                                  {"mtime_ns", nanoseconds(info.st_mtim)},
                                  {"ctime_ns", nanoseconds(info.st_ctim)},
                                  {"inode", info.st_ino}};
    const fs::path cache_path = hash_cache_path();
    nlohmann::json cache = nlohmann::json::object();
    if (!cache_path.empty()) {
        cache = nlohmann::json::parse(read_file(cache_path).value_or(""), nullptr, false);
        if (!cache.is_object()) cache = nlohmann::json::object();
        const nlohmann::json entry = cache.value(key, nlohmann::json());
        if (entry.is_object() && entry.value("stamp", nlohmann::json()) == stamp && entry.value("sha256", nlohmann::json()).is_string())
            return entry["sha256"].get<std::string>();
    }
    const std::string sha256 = sha256_of(path);
    if (!cache_path.empty()) {
        cache[key] = {{"stamp", stamp}, {"sha256", sha256}};
        try {
            fs::create_directories(cache_path.parent_path(), ec);
            write_file_atomically(cache_path, cache.dump(1, ' ', false, nlohmann::json::error_handler_t::replace));
        } catch (const Error&) {  // a read-only home: hash again next time
        }
    }
    return sha256;
}

std::string escape_non_utf8(const std::string& text) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    std::string escaped;
    for (size_t i = 0; i < text.size();) {
        if (const size_t length = utf8_sequence_length(bytes + i, text.size() - i)) {
            escaped.append(text, i, length);
            i += length;
        } else {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", bytes[i++]);
            escaped += hex;
        }
    }
    return escaped;
}

}  // namespace sqasam
