#include "test_support.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

namespace sqasam::test {

std::string ref_dir() { return SQASAM_REF_DIR; }
std::string shared_data_dir() { return SQASAM_SHARED_DATA; }
std::string source_dir() { return SQASAM_SOURCE_DIR; }
std::string cli_path() { return SQASAM_CLI; }

std::string temp_dir(const std::string& name) {
    namespace fs = std::filesystem;
    // Per process: CTest runs the cases of one suite as parallel processes.
    fs::path dir = fs::path(SQASAM_REF_DIR).parent_path() / "test-tmp" / (name + "-" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir.string();
}

NpyArray read_npy(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path);
    char magic[8];
    in.read(magic, 8);
    if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error("not a .npy file: " + path);
    uint32_t header_len = 0;
    if (magic[6] == 1) {
        uint16_t len16 = 0;
        in.read(reinterpret_cast<char*>(&len16), 2);
        header_len = len16;
    } else {
        in.read(reinterpret_cast<char*>(&header_len), 4);
    }
    std::string header(header_len, '\0');
    in.read(header.data(), header_len);
    NpyArray array;
    auto descr_at = header.find("'descr': '");
    if (descr_at == std::string::npos) throw std::runtime_error("npy header without descr: " + path);
    array.dtype = header.substr(descr_at + 10, 3);
    if (header.find("'fortran_order': True") != std::string::npos)
        throw std::runtime_error("fortran-order npy not supported: " + path);
    auto open = header.find('(', header.find("'shape'"));
    auto close = header.find(')', open);
    std::string dims = header.substr(open + 1, close - open - 1);
    int64_t count = 1;
    size_t pos = 0;
    while (pos < dims.size()) {
        size_t comma = dims.find(',', pos);
        std::string token = dims.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (token.find_first_of("0123456789") != std::string::npos) {
            array.shape.push_back(std::stoll(token));
            count *= array.shape.back();
        }
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    array.values.resize(count);
    auto read_as = [&](auto tag) {
        using T = decltype(tag);
        std::vector<T> raw(count);
        in.read(reinterpret_cast<char*>(raw.data()), count * sizeof(T));
        if (!in) throw std::runtime_error("truncated npy data: " + path);
        for (int64_t i = 0; i < count; ++i) array.values[i] = static_cast<float>(raw[i]);
    };
    if (array.dtype == "<f4") read_as(float{});
    else if (array.dtype == "<f8") read_as(double{});
    else if (array.dtype == "|u1" || array.dtype == "|b1") read_as(uint8_t{});
    else if (array.dtype == "<i4") read_as(int32_t{});
    else if (array.dtype == "<i8") read_as(int64_t{});
    else throw std::runtime_error("unsupported npy dtype " + array.dtype + ": " + path);
    return array;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) throw std::runtime_error("max_abs_diff: size mismatch");
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
    return worst;
}

double max_abs(const std::vector<float>& a) {
    double worst = 0;
    for (float v : a) worst = std::max(worst, std::fabs(double(v)));
    return worst;
}

double relative_l2(const std::vector<float>& a, const std::vector<float>& reference) {
    if (a.size() != reference.size()) throw std::runtime_error("relative_l2: size mismatch");
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        double d = double(a[i]) - double(reference[i]);
        diff += d * d;
        norm += double(reference[i]) * double(reference[i]);
    }
    return std::sqrt(diff / std::max(norm, 1e-30));
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
    const std::string text = read_text(path);
    std::vector<std::vector<std::string>> rows(1, std::vector<std::string>(1));
    bool quoted = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (quoted) {
            if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') rows.back().back() += text[++i];
            else if (c == '"') quoted = false;
            else rows.back().back() += c;
        } else if (c == '"') {
            quoted = true;
        } else if (c == ',') {
            rows.back().emplace_back();
        } else if (c == '\n') {
            rows.emplace_back(1);
        } else if (c != '\r') {
            rows.back().back() += c;
        }
    }
    if (rows.back() == std::vector<std::string>(1)) rows.pop_back();  // after the last newline
    return rows;
}

CliResult run_cli(const std::string& arguments, const std::string& environment) {
    const std::string command = environment + " " + cli_path() + " " + arguments + " 2>&1";
    CliResult result;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) throw std::runtime_error("cannot run " + command);
    char buffer[4096];
    while (size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) result.output.append(buffer, n);
    const int status = ::pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return result;
}

pid_t start_cli(const std::vector<std::string>& args, const std::string& log) {
    const pid_t pid = fork();
    if (pid == 0) {
        if (FILE* out = std::fopen(log.c_str(), "w")) {
            dup2(fileno(out), STDOUT_FILENO);
            dup2(fileno(out), STDERR_FILENO);
        }
        std::string cli = cli_path();
        std::vector<std::string> copies = args;
        std::vector<char*> argv{cli.data()};
        for (std::string& arg : copies) argv.push_back(arg.data());
        argv.push_back(nullptr);
        execv(cli.c_str(), argv.data());
        _exit(127);
    }
    return pid;
}

int wait_cli(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string kill_after_first_journal_line(pid_t pid, const std::string& journal, double full_run) {
    const auto start = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    auto journaled = [&] {
        std::error_code ec;
        return std::filesystem::file_size(journal, ec) > 0 && !ec;
    };
    while (elapsed() < 2 * full_run && !journaled()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const unsigned seed = std::random_device{}();
    std::mt19937 random(seed);
    const double delay = std::uniform_real_distribution<double>(0.0, 0.8)(random) * std::max(0.0, full_run - elapsed());
    const std::string trace = "seed " + std::to_string(seed) + ": killed " + std::to_string(elapsed() + delay) +
                              " s into a " + std::to_string(full_run) + " s run";
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
    kill(pid, SIGKILL);
    wait_cli(pid);
    return trace;
}

std::vector<float> random_values(size_t n, uint32_t seed, float low, float high) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(low, high);
    std::vector<float> values(n);
    for (float& v : values) v = dist(rng);
    return values;
}

double logit_mask_iou(const std::vector<float>& a, const std::vector<float>& b) {
    size_t both = 0, either = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        both += a[i] > 0 && b[i] > 0;
        either += a[i] > 0 || b[i] > 0;
    }
    return either ? double(both) / double(either) : 1.0;
}

double mask_iou(const uint8_t* ours, const float* theirs, size_t count) {
    size_t both = 0, either = 0;
    for (size_t i = 0; i < count; ++i) {
        both += ours[i] && theirs[i] > 0.5f;
        either += ours[i] || theirs[i] > 0.5f;
    }
    return either ? double(both) / double(either) : 1.0;
}

}  // namespace sqasam::test
