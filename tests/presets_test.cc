// Every preset in presets/chips validates, names its sources and assumptions, and trains one
// small epoch end to end (on a slice of the real data when installed, else on generated IDX).
#include <gtest/gtest.h>

#include <filesystem>

#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

std::vector<std::string> PresetFiles() {
  std::vector<std::string> out;
  for (const auto& e :
       std::filesystem::directory_iterator(std::string(PIMTRAIN_SOURCE_DIR) + "/presets/chips")) {
    if (e.path().extension() == ".yaml") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(PresetTest, EveryChipPresetHasSourcesAndTrains) {
  auto files = PresetFiles();
  ASSERT_FALSE(files.empty());
  testing::TempDir dir;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(data_dir + "/train-images-idx3-ubyte.gz")) {
    testing::WriteTinyMnist(dir.path(), 128, 64, 28, /*gzip=*/true);
    data_dir = dir.path();
  }
  for (const auto& file : files) {
    SCOPED_TRACE(file);
    ConfigNode c = ResolveConfig({file}, {"data.dir=" + data_dir, "data.train_limit=128",
                                          "data.test_limit=64", "train.epochs=1"});
    ASSERT_TRUE(c.Has("source"));
    EXPECT_TRUE(c.At("source").Has("citation"));
    EXPECT_TRUE(c.At("source").Has("assumptions"));
    Session s(c);
    TrainSummary r = s.Train("", false, {});
    EXPECT_EQ(r.epochs.size(), 1u);
    EXPECT_GT(r.test_accuracy, 0.0);
  }
}

}  // namespace
}  // namespace pim
