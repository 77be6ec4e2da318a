// write_file_atomically: whole contents or nothing, and no temporaries left behind by killed writers.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sqasam/io.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

TEST(IoFiles, WriteReplacesTheFileAndRemovesTemporariesOfDeadWriters) {
    const fs::path dir = test::temp_dir("io_files");
    const fs::path target = dir / "images.csv";
    std::ofstream(target) << "old";
    // pid_max + 1 can never be a live process; the parent (the test runner) surely is one.
    std::ifstream pid_max_file("/proc/sys/kernel/pid_max");
    long pid_max = 0;
    pid_max_file >> pid_max;
    ASSERT_GT(pid_max, 0);
    const fs::path dead = dir / ("images.csv.tmp." + std::to_string(pid_max + 1));
    const fs::path live = dir / ("images.csv.tmp." + std::to_string(::getppid()));
    const fs::path other = dir / ("objects.csv.tmp." + std::to_string(pid_max + 1));
    for (const fs::path& leftover : {dead, live, other}) std::ofstream(leftover) << "half";

    write_file_atomically(target, "new contents");

    EXPECT_EQ(test::read_text(target), "new contents");
    EXPECT_FALSE(fs::exists(dead)) << "a dead writer's temporary must go";
    EXPECT_TRUE(fs::exists(live)) << "a live writer's temporary must stay";
    EXPECT_TRUE(fs::exists(other)) << "only the written file's temporaries are touched";
    size_t files = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++files;
    EXPECT_EQ(files, 3u) << "images.csv, the live temporary and the other file's";
}
