// `pimtrain cost`: tables, JSON with units, and errors for bad presets and points.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/cost/tech.h"
#include "pimtrain/sim/network_cost.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

std::string Cli() { return std::string(PIMTRAIN_CLI); }

TEST(CostCliTest, PrintsPaperVersusModelForAPreset) {
  auto r = testing::RunCommand(Cli() + " cost tpim");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("TOPS/W"), std::string::npos);
  EXPECT_NE(r.out.find("published figures"), std::string::npos);
  EXPECT_NE(r.out.find("low_power"), std::string::npos);
}

TEST(CostCliTest, JsonCarriesUnitsAndChecks) {
  auto r = testing::RunCommand(Cli() + " cost tpim --json --point low_power");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["operating_points"].size(), 1u);
  EXPECT_EQ(j["operating_points"][0]["tops_per_watt"]["unit"], "TOPS/W");
  EXPECT_EQ(j["operating_points"][0]["operating_point"]["name"], "low_power");
  EXPECT_EQ(j["expected"].size(), 4u);
  for (const auto& f : j["expected"]) EXPECT_TRUE(f["ok"].get<bool>()) << f.dump();
}

TEST(CostCliTest, BadInputIsOneLineAndExitTwo) {
  auto r = testing::RunCommand(Cli() + " cost no_such_chip");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no_such_chip"), std::string::npos);
  r = testing::RunCommand(Cli() + " cost tpim --point turbo");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown operating point 'turbo'"), std::string::npos);
  r = testing::RunCommand(Cli() + " cost tpim --set cost.voltage=7");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cost.voltage"), std::string::npos);
  // A config without a cost block.
  r = testing::RunCommand(Cli() + " cost " + std::string(PIMTRAIN_SOURCE_DIR) +
                          "/configs/mlp.yaml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no cost: block"), std::string::npos);
}

}  // namespace
}  // namespace pim

namespace pim {
namespace {

TEST(NetworkCostTest, ShapesOfTheBenchmarkNetworks) {
  auto vgg8 = BuiltinNetwork("vgg8");
  ASSERT_EQ(vgg8.size(), 8u);
  EXPECT_EQ(vgg8[0].k, 27);  // 3x3x3
  EXPECT_EQ(vgg8[0].n, 128);
  EXPECT_EQ(vgg8[0].m, 32 * 32);
  EXPECT_EQ(vgg8[2].m, 16 * 16);  // after the first pooling
  EXPECT_EQ(vgg8[6].k, 512 * 4 * 4);
  EXPECT_EQ(vgg8[6].n, 1024);
  auto alex = BuiltinNetwork("alexnet");
  ASSERT_EQ(alex.size(), 8u);
  EXPECT_EQ(alex[0].m, 55 * 55);
  EXPECT_EQ(alex[5].k, 9216);
  auto vgg16 = BuiltinNetwork("vgg16");
  ASSERT_EQ(vgg16.size(), 16u);
  EXPECT_EQ(vgg16[13].k, 25088);
  EXPECT_THROW(BuiltinNetwork("vgg9"), ConfigError);
}

TEST(NetworkCostTest, PricesEveryMacOfTheNetworkOnAsManyChipsAsItNeeds) {
  ConfigNode c = ResolveConfig({ResolvePresetOrFile("isaac")}, {});
  auto model = Registry<CostModel>::Create(c.At("cost"));
  auto layers = BuiltinNetwork("cnn");
  NetworkCost nc = PriceNetwork(c, *model, layers, NetworkSparsity{}, model->operating_point());
  double macs = 0;
  for (const auto& l : layers) macs += static_cast<double>(l.k * l.n * l.m);
  EXPECT_NEAR(nc.report.macs, macs, 1e-6 * macs);  // counts scaled to every column and position
  EXPECT_GT(nc.energy_per_inference_uj, 0);
  EXPECT_GE(nc.latency_s, nc.interval_s);
  EXPECT_GT(nc.interval_s, 0);
  EXPECT_GE(nc.chips * nc.arrays_per_chip, nc.arrays_needed);
  // More zero activations: less energy (zero-input cycles are skipped).
  NetworkCost sparse =
      PriceNetwork(c, *model, layers, NetworkSparsity{0.9, 0.0}, model->operating_point());
  EXPECT_LT(sparse.energy_per_inference_uj, nc.energy_per_inference_uj);
}

// The shape-only path is deterministic whatever the thread count.
TEST(NetworkCostTest, SameFiguresAtOneAndTwoThreads) {
  ConfigNode c = ResolveConfig({ResolvePresetOrFile("neuralpim")}, {});
  auto model = Registry<CostModel>::Create(c.At("cost"));
  auto layers = BuiltinNetwork("vgg8");
  SetDefaultThreads(1);
  NetworkCost a = PriceNetwork(c, *model, layers, NetworkSparsity{}, model->operating_point());
  SetDefaultThreads(2);
  NetworkCost b = PriceNetwork(c, *model, layers, NetworkSparsity{}, model->operating_point());
  EXPECT_EQ(a.report.energy_pj, b.report.energy_pj);
  EXPECT_EQ(a.report.cycles, b.report.cycles);
  EXPECT_EQ(a.ToJson(), b.ToJson());
}

// ResNets from the model presets' graphs: every weighted product at ImageNet shapes (the 1x1
// strided shortcuts included), the residual joins and global pooling as digital element adds.
TEST(NetworkCostTest, ResNetsFromTheirGraphsAtImageNetShapes) {
  const auto r50 = BuiltinNetwork("resnet50");
  int64_t weighted = 0, shortcuts = 0, adds = 0;
  double macs = 0;
  for (const auto& l : r50) {
    if (l.k == 0) {
      adds += l.elementwise_adds;
      continue;
    }
    ++weighted;
    macs += static_cast<double>(l.k * l.n * l.m);
    shortcuts += l.summary.find("shortcut") != std::string::npos;
  }
  EXPECT_EQ(weighted, 54);  // 1 stem + 16 blocks x 3 + 4 shortcuts + fc
  EXPECT_EQ(shortcuts, 4);
  EXPECT_NEAR(macs, 4089184256.0, 1.0);  // torchvision's resnet50 (v1.5)
  // 16 joins of 56^2 x 256, 28^2 x 512, 14^2 x 1024, 7^2 x 2048 outputs (3, 4, 6, 3 blocks),
  // plus the pool's 7 x 7 x 2048 inputs.
  EXPECT_EQ(adds, 3 * 802816 + 4 * 401408 + 6 * 200704 + 3 * 100352 + 100352);
  ConfigNode c = ResolveConfig({ResolvePresetOrFile("cascade")}, {});
  auto model = Registry<CostModel>::Create(c.At("cost"));
  NetworkCost nc = PriceNetwork(c, *model, BuiltinNetwork("resnet18"), NetworkSparsity{},
                                model->operating_point());
  EXPECT_NEAR(nc.report.macs, 1814073344.0, 1e-6 * 1814073344.0);
  EXPECT_GT(nc.report.EnergyByComponent()["elementwise"], 0);
  try {
    BuiltinNetwork("resnet51");
    ADD_FAILURE() << "an unknown network was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("resnet50"), std::string::npos) << e.what();
  }
}

// CASCADE's R-Mapping: an output's conversions do not grow with the layer's row blocks (dataflow
// A's do), so on a deep layer CASCADE's read-out is cheaper than ISAAC's per MAC.
TEST(NetworkCostTest, CascadeConvertsEachOutputOnceWhateverItsRowBlocks) {
  auto adc_pj_per_output = [](const char* preset, int64_t k) {
    ConfigNode c = ResolveConfig({ResolvePresetOrFile(preset)}, {});
    auto model = Registry<CostModel>::Create(c.At("cost"));
    std::vector<WeightedLayerShape> layer = {{"conv", k, 16, 1}};
    NetworkCost nc = PriceNetwork(c, *model, layer, NetworkSparsity{0.0, 0.0},
                                  model->operating_point());
    return nc.report.EnergyByComponent()["adc"] / 16.0;
  };
  const double c1 = adc_pj_per_output("cascade", 128);
  const double c9 = adc_pj_per_output("cascade", 9 * 128);
  const double a1 = adc_pj_per_output("isaac", 128);
  const double a9 = adc_pj_per_output("isaac", 9 * 128);
  EXPECT_NEAR(c9, c1, 1e-9 * c1);  // 15 ten-bit conversions per output either way
  // 32 per applied input cycle and row block (the inputs' quantization scale, and so the
  // top input cycle's use, varies a little with k).
  EXPECT_GT(a9, 8 * a1);
  EXPECT_LT(a9, 10 * a1);
  EXPECT_LT(c9, a9 / 5);
}

TEST(CostCliTest, NetworkFromShapesWithoutData) {
  auto r = testing::RunCommand(Cli() + " cost isaac --network vgg8 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto& f = j["operating_points"][0]["figures"];
  EXPECT_EQ(f["energy_per_inference"]["unit"], "uJ");
  EXPECT_GT(f["chips"]["value"].get<double>(), 1);
  // Each layer's arrays are printed and add up to the chip count's arrays.
  r = testing::RunCommand(Cli() + " cost tpim --network vgg8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("0 conv2d 27x128 @1024"), std::string::npos) << r.out;
  {
    ConfigNode c = ResolveConfig({ResolvePresetOrFile("tpim")}, {});
    auto model = Registry<CostModel>::Create(c.At("cost"));
    const NetworkCost nc = PriceNetwork(c, *model, BuiltinNetwork("vgg8"), NetworkSparsity{},
                                        model->operating_point());
    ASSERT_EQ(nc.layer_arrays.size(), 8u);
    double sum = 0;
    for (double a : nc.layer_arrays) sum += a;
    EXPECT_EQ(sum, nc.arrays_needed);
    EXPECT_GT(nc.layer_arrays[7], 0);
  }
  r = testing::RunCommand(Cli() + " cost pimqat --network model");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("inferences/s/mm2"), std::string::npos);
  r = testing::RunCommand(Cli() + " cost isaac --network vgg9");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown network 'vgg9'"), std::string::npos);
}

TEST(CostCliTest, DescribeListsCountersWithUnitsAndPricing) {
  auto r = testing::RunCommand(Cli() + " describe macro/analog_crossbar");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("adc_conversions"), std::string::npos);
  EXPECT_NE(r.out.find("conversion"), std::string::npos);
  EXPECT_NE(r.out.find("digital_macs"), std::string::npos);
  r = testing::RunCommand(Cli() + " describe cost_model/analog_crossbar");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ignored"), std::string::npos);
  EXPECT_NE(r.out.find("digital_mac"), std::string::npos);
}

}  // namespace
}  // namespace pim
