// `pimtrain cost`: tables, JSON with units, and errors for bad presets and points.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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
