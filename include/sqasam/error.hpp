#pragma once
// Every failure sqasam reports carries the file it concerns, so a batch user can act on it.
#include <stdexcept>
#include <string>

namespace sqasam {

class Error : public std::runtime_error {
public:
    Error(std::string file, const std::string& problem)
        : std::runtime_error(file.empty() ? problem : file + ": " + problem),
          file_(std::move(file)), problem_(problem) {}
    const std::string& file() const { return file_; }
    const std::string& problem() const { return problem_; }

private:
    std::string file_;
    std::string problem_;
};

}  // namespace sqasam
