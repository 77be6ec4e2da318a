// read_file: every byte or nothing; write_file_atomically: whole contents or nothing, short temporary names, no
// temporaries left behind by killed writers; the output-folder lock; file stamps and content hashes; non-UTF-8 names.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "sqasam/error.hpp"
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
    const fs::path dead = dir / (".sqasam-" + std::to_string(pid_max + 1) + "-0.tmp");
    const fs::path live = dir / (".sqasam-" + std::to_string(::getppid()) + "-3.tmp");
    const fs::path other = dir / "notes.tmp";
    for (const fs::path& leftover : {dead, live, other}) std::ofstream(leftover) << "half";

    write_file_atomically(target, "new contents");

    EXPECT_EQ(test::read_text(target), "new contents");
    EXPECT_FALSE(fs::exists(dead)) << "a dead writer's temporary must go";
    EXPECT_TRUE(fs::exists(live)) << "a live writer's temporary must stay";
    EXPECT_TRUE(fs::exists(other)) << "files that are not sqasam's temporaries are not touched";
    size_t files = 0;
    for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++files;
    EXPECT_EQ(files, 3u) << "images.csv, the live temporary and the other file";
}

TEST(IoFiles, ReadFileReturnsEveryByteOrNothing) {
    const fs::path dir = test::temp_dir("io_read_file");
    constexpr char raw[] = "line one\r\nzero \0 byte, then \xff\xfe and no final newline";
    const std::string bytes(raw, sizeof raw - 1);
    std::ofstream(dir / "data.bin", std::ios::binary) << bytes;
    std::ofstream(dir / "empty.txt").flush();
    EXPECT_EQ(read_file(dir / "data.bin"), bytes);
    EXPECT_EQ(read_file(dir / "empty.txt"), std::string());
    EXPECT_EQ(read_file(dir / "missing.txt"), std::nullopt);
}

TEST(IoFiles, ALongestLegalNameCanBeWrittenAtomically) {
    const fs::path dir = test::temp_dir("io_files_long");
    const fs::path target = dir / (std::string(250, 'n') + ".png");  // 254 bytes: within NAME_MAX (255)
    write_file_atomically(target, "png");
    EXPECT_EQ(test::read_text(target), "png");
}

TEST(IoFiles, ASecondLockOnAFolderIsRefusedNamingTheHolderAndADeadHoldersLockIsNot) {
    const fs::path dir = test::temp_dir("io_files_lock");
    {
        const FolderLock first(dir);
        try {
            const FolderLock second(dir);
            FAIL() << "a second lock on the folder was granted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("pid " + std::to_string(::getpid())), std::string::npos) << e.what();
        }
    }
    // Released with its holder; a lock file naming a process that is gone (what a killed run leaves) is no obstacle.
    std::ofstream(dir / ".sqasam.lock") << "999999999\n";
    EXPECT_NO_THROW(FolderLock again(dir));
}

TEST(IoFiles, StampsTellChangedFilesAndHashesAreCachedByStamp) {
    const fs::path dir = test::temp_dir("io_files_hash");
    const fs::path file = dir / "weights.bin";
    std::ofstream(file) << "abc";
    const auto stamp = file_stamp(file.string());
    ASSERT_TRUE(stamp.has_value());
    EXPECT_EQ(stamp->size, 3);
    EXPECT_FALSE(file_stamp((dir / "absent").string()).has_value());

    ASSERT_EQ(setenv("XDG_CACHE_HOME", (dir / "cache").c_str(), 1), 0);
    // SHA-256("abc"), FIPS 180-2's example.
    const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    EXPECT_EQ(file_sha256(file.string()), abc);
    ASSERT_TRUE(fs::exists(dir / "cache" / "sqasam" / "sha256.json"));
    EXPECT_NE(test::read_text(dir / "cache" / "sqasam" / "sha256.json").find(abc), std::string::npos);
    // The cached hash is used while the stamp holds: a cache entry doctored for this stamp is believed ...
    std::string cache = test::read_text(dir / "cache" / "sqasam" / "sha256.json");
    cache.replace(cache.find(abc), abc.size(), std::string(64, '0'));
    std::ofstream(dir / "cache" / "sqasam" / "sha256.json", std::ios::trunc) << cache;
    EXPECT_EQ(file_sha256(file.string()), std::string(64, '0'));
    // ... and a changed file is hashed again.
    std::ofstream(file, std::ios::trunc) << "abd";
    EXPECT_NE(file_sha256(file.string()), std::string(64, '0'));
    EXPECT_NE(file_sha256(file.string()), abc);
    unsetenv("XDG_CACHE_HOME");
}

TEST(IoFiles, NonUtf8BytesAreEscapedAndValidUtf8IsKept) {
    EXPECT_EQ(escape_non_utf8("caf\xe9.png"), "caf\\xe9.png");
    EXPECT_EQ(escape_non_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    EXPECT_EQ(escape_non_utf8("\xc0\xaf"), "\\xc0\\xaf");          // overlong '/'
    EXPECT_EQ(escape_non_utf8("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
    EXPECT_EQ(escape_non_utf8("\xe2\x82"), "\\xe2\\x82");          // cut short
}
