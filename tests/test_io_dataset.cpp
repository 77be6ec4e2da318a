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
    touch(root / "pred/orphan.png");  // a prediction without an image: not an item
    touch(root / "gt/a.png");
    touch(root / "gt/b.png");

    Dataset dataset =
        match_folders({(root / "images").string(), {{"", (root / "pred").string(), ""}}, (root / "gt").string()});
    EXPECT_TRUE(dataset.has_gt);
    ASSERT_EQ(dataset.models.size(), 1u);
    EXPECT_EQ(dataset.models[0].name, "pred");  // the folder's name
    EXPECT_FALSE(dataset.models[0].has_prob);
    ASSERT_EQ(dataset.items.size(), 3u);
    std::vector<std::string> names;
    for (const auto& item : dataset.items) names.push_back(item.name);
    EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));  // sorted
    EXPECT_EQ(dataset.models[0].unmatched_predictions,
              (std::vector<std::string>{(root / "pred/orphan.png").string()}));

    const DatasetItem* a = find(dataset, "a");
    EXPECT_EQ(a->image, (root / "images/a.JPEG").string());
    EXPECT_EQ(a->predictions.at(0).pred, (root / "pred/a.png").string());
    EXPECT_EQ(a->gt, (root / "gt/a.png").string());
    EXPECT_EQ(find(dataset, "b")->predictions.at(0).pred, (root / "pred/b.bmp").string());
    EXPECT_TRUE(find(dataset, "c")->predictions.at(0).pred.empty());   // missing prediction
    EXPECT_TRUE(find(dataset, "c")->gt.empty());     // missing ground truth
    for (const auto& item : dataset.items) EXPECT_TRUE(item.problem.empty()) << item.name;
}

TEST(IoDataset, ImagesWithoutPredictionNameTheClosestUnmatchedPrediction) {
    fs::path root = test::temp_dir("io_dataset_hints");
    for (const char* name : {"cju0qkwl35piu0993l0dewei2", "cju0roawvklrq0799vmjorwfv", "cju0s690hkp960855tjuaqvv0"})
        touch(root / "images" / (std::string(name) + ".jpg"));
    touch(root / "pred/cju0roawvklrq0799vmjorwfv.png");  // the one that matches
    touch(root / "pred/cju0qkwl35piu0993l0dewei2_mask.png");
    touch(root / "pred/cju0s690hkp960855tjuaqvv0_mask.png");
    touch(root / "pred/unrelated.png");
    const Dataset dataset = match_folders({(root / "images").string(), {{"", (root / "pred").string(), ""}}, ""});
    ASSERT_EQ(dataset.items.size(), 3u);
    EXPECT_EQ(dataset.models[0].unmatched_predictions.size(), 3u);
    const auto hints = unmatched_name_hints(dataset, 0);
    ASSERT_EQ(hints.size(), 2u);
    EXPECT_EQ(hints[0], "image cju0qkwl35piu0993l0dewei2.jpg: no prediction named cju0qkwl35piu0993l0dewei2.*, "
                        "closest cju0qkwl35piu0993l0dewei2_mask.png");
    EXPECT_NE(hints[1].find("closest cju0s690hkp960855tjuaqvv0_mask.png"), std::string::npos) << hints[1];
    EXPECT_EQ(unmatched_name_hints(dataset, 0, 1).size(), 1u);
}

TEST(IoDataset, TwoFilesWithOneBaseNameAreAProblemOfThatItem) {
    fs::path root = test::temp_dir("io_dataset_ambiguous");
    touch(root / "images/a.jpg");
    touch(root / "images/b.jpg");
    touch(root / "pred/a.png");
    touch(root / "pred/a.bmp");
    touch(root / "pred/b.png");
    Dataset dataset = match_folders({(root / "images").string(), {{"", (root / "pred").string(), ""}}, ""});
    const DatasetItem* a = find(dataset, "a");
    EXPECT_TRUE(a->predictions.at(0).pred.empty());
    EXPECT_NE(a->problem.find("a.bmp"), std::string::npos) << a->problem;
    EXPECT_NE(a->problem.find("a.png"), std::string::npos) << a->problem;
    EXPECT_TRUE(find(dataset, "b")->problem.empty());
}

TEST(IoDataset, MissingOrEmptyFoldersStopTheRun) {
    fs::path root = test::temp_dir("io_dataset_missing");
    touch(root / "images/a.jpg");
    fs::create_directories(root / "empty");
    EXPECT_THROW(match_folders({(root / "images").string(), {{"", (root / "nope").string(), ""}}, ""}), Error);
    EXPECT_THROW(match_folders({(root / "images").string(), {{"", (root / "empty").string(), ""}}, ""}), Error);
    try {
        match_folders({(root / "nothing").string(), {{"", (root / "images").string(), ""}}, ""});
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
    ASSERT_EQ(dataset.models.size(), 1u);
    EXPECT_FALSE(dataset.models[0].has_prob);
    ASSERT_EQ(dataset.items.size(), 2u);
    EXPECT_EQ(dataset.items[0].name, "with, comma");  // sorted by name
    EXPECT_EQ(dataset.items[0].image, (root / "img/with, comma.jpg").string());
    EXPECT_TRUE(dataset.items[0].gt.empty());
    EXPECT_EQ(dataset.items[1].name, "z");
    EXPECT_EQ(dataset.items[1].predictions.at(0).pred, "/abs/z.png");
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

TEST(IoDataset, SeveralModelsFoldersAndProbabilities) {
    fs::path root = test::temp_dir("io_dataset_models");
    touch(root / "images/a.jpg");
    touch(root / "images/b.jpg");
    touch(root / "unet/a.png");
    touch(root / "unet/b.png");
    touch(root / "other/out/a.png");
    touch(root / "probs/a.png");
    Dataset dataset = match_folders({(root / "images").string(),
                                     {{"", (root / "unet").string(), ""},
                                      {"second", (root / "other/out").string(), (root / "probs").string()}},
                                     ""});
    ASSERT_EQ(dataset.models.size(), 2u);
    EXPECT_EQ(dataset.models[0].name, "unet");
    EXPECT_FALSE(dataset.models[0].has_prob);
    EXPECT_EQ(dataset.models[1].name, "second");
    EXPECT_TRUE(dataset.models[1].has_prob);
    const DatasetItem* b = find(dataset, "b");
    ASSERT_EQ(b->predictions.size(), 2u);
    EXPECT_EQ(b->predictions[0].pred, (root / "unet/b.png").string());
    EXPECT_TRUE(b->predictions[1].pred.empty());
    EXPECT_EQ(find(dataset, "a")->predictions[1].prob, (root / "probs/a.png").string());

    // Two folders with one name must be told apart.
    touch(root / "x/unet/a.png");
    EXPECT_THROW(match_folders({(root / "images").string(),
                                {{"", (root / "unet").string(), ""}, {"", (root / "x/unet").string(), ""}}, ""}),
                 Error);
}

TEST(IoDataset, NamedFolderArguments) {
    EXPECT_EQ(split_named_folder("unet=/data/pred"), std::make_pair(std::string("unet"), std::string("/data/pred")));
    EXPECT_EQ(split_named_folder("/data/pred"), std::make_pair(std::string(), std::string("/data/pred")));
    EXPECT_EQ(split_named_folder("/data/a=b"), std::make_pair(std::string(), std::string("/data/a=b")));  // '/' in NAME
    // An existing folder whose name holds '=' is a folder, not NAME=DIR.
    const fs::path dir = test::temp_dir("io_dataset_named");
    fs::create_directories(dir / "x=y");
    const fs::path previous = fs::current_path();
    fs::current_path(dir);
    const auto named = split_named_folder("x=y");
    fs::current_path(previous);
    EXPECT_EQ(named, std::make_pair(std::string(), std::string("x=y")));
    EXPECT_EQ(split_named_folder("x=z"), std::make_pair(std::string("x"), std::string("z")));
}

// The name score and score-volumes give a model: NAME, else the folder's own name, always valid UTF-8.
TEST(IoDataset, ModelNamesComeFromNameOrFolder) {
    EXPECT_EQ(model_name("unet", "/data/pred"), "unet");
    EXPECT_EQ(model_name("", "/data/pred"), "pred");
    EXPECT_EQ(model_name("", "/data/pred/"), "pred");  // a trailing slash names the same folder
    EXPECT_EQ(model_name("", "."), fs::current_path().filename().string());
    EXPECT_EQ(model_name("", ".."), fs::current_path().parent_path().filename().string());
    EXPECT_EQ(model_name("", "/data/caf\xe9"), "caf\\xe9");
}

TEST(IoDataset, ManifestWithSeveralModels) {
    fs::path root = test::temp_dir("io_dataset_manifest_models");
    std::ofstream(root / "list.csv") << "image,pred:UNet,prob:UNet,pred:nnU-Net,gt\n"
                                        "a.jpg,u/a.png,p/a.png,n/a.png,g/a.png\n"
                                        "b.jpg,u/b.png,,,\n";
    Dataset dataset = read_manifest((root / "list.csv").string());
    ASSERT_EQ(dataset.models.size(), 2u);
    EXPECT_EQ(dataset.models[0].name, "UNet");  // as written, in the header's order
    EXPECT_TRUE(dataset.models[0].has_prob);
    EXPECT_EQ(dataset.models[1].name, "nnU-Net");
    EXPECT_FALSE(dataset.models[1].has_prob);
    EXPECT_EQ(dataset.items[0].predictions[1].pred, (root / "n/a.png").string());
    EXPECT_EQ(dataset.items[0].predictions[0].prob, (root / "p/a.png").string());
    EXPECT_TRUE(dataset.items[1].predictions[1].pred.empty());

    std::ofstream(root / "orphan_prob.csv") << "image,pred,prob:other\na.jpg,a.png,b.png\n";
    EXPECT_THROW(read_manifest((root / "orphan_prob.csv").string()), Error);
}

TEST(IoDataset, CsvFieldsMayHoldSeparatorsQuotesAndLineBreaks) {
    fs::path root = test::temp_dir("io_dataset_csv");
    std::ofstream(root / "t.csv") << "a,b\r\n\"x, \"\"quoted\"\"\",\"two\nlines\"\n\n  \nlast,\n";
    const std::vector<CsvRow> rows = read_csv((root / "t.csv").string());
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_EQ(rows[1].fields, (std::vector<std::string>{"x, \"quoted\"", "two\nlines"}));
    EXPECT_EQ(rows[1].line, 2);
    EXPECT_EQ(rows[2].fields, (std::vector<std::string>{"last", ""}));
    EXPECT_EQ(rows[2].line, 6);
    std::ofstream(root / "open.csv") << "a\n\"never closed\n";
    EXPECT_THROW(read_csv((root / "open.csv").string()), Error);
}
