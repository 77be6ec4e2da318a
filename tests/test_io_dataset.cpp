// Pairing images with predictions, probability maps and ground truth: folders and manifests.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "sqasam/error.hpp"
#include "sqasam/io.hpp"
#include "test_support.hpp"

using namespace sqasam;
namespace fs = std::filesystem;

namespace {

void touch(const fs::path& path) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << "x";
}

const DatasetItem* find(const Dataset& dataset, const std::string& name) {
    for (const auto& item : dataset.items)
        if (item.name == name) return &item;
    return nullptr;
}

}  // namespace

TEST(IoDataset, FoldersMatchByBaseNameAcrossExtensions) {
    fs::path root = test::temp_dir("io_dataset_match");
    touch(root / "images/b.jpg");
    touch(root / "images/a.JPEG");
    touch(root / "images/c.tif");
    touch(root / "images/notes.txt");  // not an image: ignored
    touch(root / "images/.hidden.png");
    touch(root / "pred/a.png");
    touch(root / "pred/b.bmp");
    touch(root / "pred/orphan.png");  // a prediction without an image
    touch(root / "gt/a.png");
    touch(root / "gt/b.png");

    Dataset dataset = match_folders({(root / "images").string(), (root / "pred").string(), "", (root / "gt").string()});
    EXPECT_TRUE(dataset.has_gt);
    EXPECT_FALSE(dataset.has_prob);
    ASSERT_EQ(dataset.items.size(), 4u);
    std::vector<std::string> names;
    for (const auto& item : dataset.items) names.push_back(item.name);
    EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "orphan"}));  // sorted

    const DatasetItem* a = find(dataset, "a");
    EXPECT_EQ(a->image, (root / "images/a.JPEG").string());
    EXPECT_EQ(a->pred, (root / "pred/a.png").string());
    EXPECT_EQ(a->gt, (root / "gt/a.png").string());
    EXPECT_EQ(find(dataset, "b")->pred, (root / "pred/b.bmp").string());
    EXPECT_TRUE(find(dataset, "c")->pred.empty());   // missing prediction
    EXPECT_TRUE(find(dataset, "c")->gt.empty());     // missing ground truth
    EXPECT_TRUE(find(dataset, "orphan")->image.empty());
    for (const auto& item : dataset.items) EXPECT_TRUE(item.problem.empty()) << item.name;
}

TEST(IoDataset, TwoFilesWithOneBaseNameAreAProblemOfThatItem) {
    fs::path root = test::temp_dir("io_dataset_ambiguous");
    touch(root / "images/a.jpg");
    touch(root / "images/b.jpg");
    touch(root / "pred/a.png");
    touch(root / "pred/a.bmp");
    touch(root / "pred/b.png");
    Dataset dataset = match_folders({(root / "images").string(), (root / "pred").string(), "", ""});
    const DatasetItem* a = find(dataset, "a");
    EXPECT_TRUE(a->pred.empty());
    EXPECT_NE(a->problem.find("a.bmp"), std::string::npos) << a->problem;
    EXPECT_NE(a->problem.find("a.png"), std::string::npos) << a->problem;
    EXPECT_TRUE(find(dataset, "b")->problem.empty());
}

TEST(IoDataset, MissingOrEmptyFoldersStopTheRun) {
    fs::path root = test::temp_dir("io_dataset_missing");
    touch(root / "images/a.jpg");
    fs::create_directories(root / "empty");
    EXPECT_THROW(match_folders({(root / "images").string(), (root / "nope").string(), "", ""}), Error);
    EXPECT_THROW(match_folders({(root / "images").string(), (root / "empty").string(), "", ""}), Error);
    try {
        match_folders({(root / "nothing").string(), (root / "images").string(), "", ""});
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), (root / "nothing").string());
    }
}

TEST(IoDataset, ManifestResolvesRelativePathsAndAnyColumnOrder) {
    fs::path root = test::temp_dir("io_dataset_manifest");
    std::ofstream(root / "list.csv") << "gt,Image,pred\n"
                                        "gt/z.png,img/z.jpg,/abs/z.png\n"
                                        "\n"
                                        ",\"img/with, comma.jpg\",pred/w.png\r\n";
    Dataset dataset = read_manifest((root / "list.csv").string());
    EXPECT_TRUE(dataset.has_gt);
    EXPECT_FALSE(dataset.has_prob);
    ASSERT_EQ(dataset.items.size(), 2u);
    EXPECT_EQ(dataset.items[0].name, "with, comma");  // sorted by name
    EXPECT_EQ(dataset.items[0].image, (root / "img/with, comma.jpg").string());
    EXPECT_TRUE(dataset.items[0].gt.empty());
    EXPECT_EQ(dataset.items[1].name, "z");
    EXPECT_EQ(dataset.items[1].pred, "/abs/z.png");
    EXPECT_EQ(dataset.items[1].gt, (root / "gt/z.png").string());
}

TEST(IoDataset, ManifestErrors) {
    fs::path root = test::temp_dir("io_dataset_manifest_errors");
    std::ofstream(root / "no_pred.csv") << "image,gt\na.jpg,a.png\n";
    EXPECT_THROW(read_manifest((root / "no_pred.csv").string()), Error);
    std::ofstream(root / "dup.csv") << "image,pred\nx/a.jpg,a.png\ny/a.png,b.png\n";
    EXPECT_THROW(read_manifest((root / "dup.csv").string()), Error);
    EXPECT_THROW(read_manifest((root / "absent.csv").string()), Error);
}
