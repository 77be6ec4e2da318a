// The score command's progress reporter (src/cli/progress.cpp) on its own: plain lines at least every interval
// while nothing finishes, object progress within an image, the terminal's rewritten line.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "cli/progress.hpp"

using sqasam::RunProgress;
using sqasam::cli::ScoreProgress;

namespace {

// What the reporter wrote to a temporary file.
struct Captured {
    std::FILE* file = std::tmpfile();
    ~Captured() { std::fclose(file); }
    std::string text() const {
        std::fflush(file);
        std::rewind(file);
        std::string all;
        char buffer[4096];
        while (size_t n = std::fread(buffer, 1, sizeof buffer, file)) all.append(buffer, n);
        return all;
    }
};

size_t count(const std::string& text, const std::string& part) {
    size_t n = 0;
    for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
}

RunProgress after(size_t finished, size_t total, std::string image) {
    RunProgress p;
    p.finished = p.computed = finished;
    p.total = p.to_compute = total;
    p.image = std::move(image);
    return p;
}

}  // namespace

TEST(CliProgress, PlainLinesKeepTheBeatWhileNothingFinishes) {
    Captured out;
    {
        ScoreProgress progress(out.file, false, std::chrono::seconds(1));
        std::this_thread::sleep_for(std::chrono::milliseconds(2600));
        EXPECT_GE(count(out.text(), "sqasam score: elapsed 0:0"), 2u) << out.text();
        EXPECT_NE(out.text().find("first image not done yet"), std::string::npos);
        progress(after(1, 3, "a"));
        EXPECT_EQ(count(out.text(), "1/3 images"), 0u) << "between beats nothing is written";
        std::this_thread::sleep_for(std::chrono::milliseconds(1300));
        EXPECT_NE(out.text().find("sqasam score: 1/3 images (33%), elapsed "), std::string::npos) << out.text();
        EXPECT_NE(out.text().find(", last a\n"), std::string::npos) << out.text();
        progress(after(3, 3, "c"));
        EXPECT_EQ(count(out.text(), "3/3 images (100%)"), 1u) << "the end is written at once: " << out.text();
        std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    }
    EXPECT_EQ(count(out.text(), "3/3 images (100%)"), 1u) << "nothing after the end: " << out.text();
    EXPECT_EQ(out.text().find('\r'), std::string::npos);
}

TEST(CliProgress, IntervalZeroWritesEveryImageAndBatchOfObjects) {
    Captured out;
    {
        ScoreProgress progress(out.file, false, std::chrono::seconds(0));
        RunProgress within = after(0, 2, "big");
        within.objects_done = 32;
        within.objects_total = 5000;
        progress(within);
        progress(after(1, 2, "big"));
        progress(after(2, 2, "small"));
    }
    const std::string text = out.text();
    EXPECT_EQ(count(text, "\n"), 3u) << text;
    EXPECT_NE(text.find("sqasam score: 0/2 images (0%), elapsed 0:00, ETA --:--, big: 32/5000 objects\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("sqasam score: 1/2 images (50%)"), std::string::npos) << text;
    EXPECT_NE(text.find("sqasam score: 2/2 images (100%), elapsed 0:00, ETA 0:00, last small\n"), std::string::npos)
        << text;
}

TEST(CliProgress, ATerminalGetsOneRewrittenLineEndedAtTheEnd) {
    Captured out;
    {
        ScoreProgress progress(out.file, true, std::chrono::seconds(1));
        progress(after(1, 2, "a"));
        progress(after(2, 2, "b"));
    }
    const std::string text = out.text();
    EXPECT_EQ(count(text, "\r\033[K"), 2u) << text;
    EXPECT_EQ(count(text, "\n"), 1u) << text;
    EXPECT_EQ(text.back(), '\n');
    EXPECT_EQ(text.find("sqasam score:"), std::string::npos) << "no prefix on the terminal line";
}
