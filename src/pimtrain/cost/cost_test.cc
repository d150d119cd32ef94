// Cost model: schedules, technology scaling, pricing arithmetic and the derived figures.
#include <gtest/gtest.h>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/cost/pipeline.h"
#include "pimtrain/cost/report.h"
#include "pimtrain/cost/tech.h"

namespace pim {
namespace {

TEST(PipelineTest, SequentialRunsStagesOneAfterAnother) {
  PipelineTiming t = SequentialSchedule({1, 3, 2}, 4);
  EXPECT_DOUBLE_EQ(t.initiation_interval, 6);
  EXPECT_DOUBLE_EQ(t.total, 24);
  EXPECT_DOUBLE_EQ(SequentialSchedule({1, 3, 2}, 0).total, 0);
}

TEST(PipelineTest, PipelinedIsBoundByTheSlowestStage) {
  PipelineTiming t = PipelinedSchedule({1, 3, 2}, 4);
  EXPECT_DOUBLE_EQ(t.initiation_interval, 3);
  EXPECT_DOUBLE_EQ(t.fill, 1);
  EXPECT_DOUBLE_EQ(t.drain, 2);
  EXPECT_DOUBLE_EQ(t.total, 1 + 4 * 3 + 2);
  // One item takes the sum of the stages; the same as sequential.
  EXPECT_DOUBLE_EQ(PipelinedSchedule({1, 3, 2}, 1).total, 6);
  // Balanced stages: the pipeline approaches n * II.
  EXPECT_DOUBLE_EQ(PipelinedSchedule({2, 2, 2, 2}, 100).total, 2 * 3 + 100 * 2);
  // The first of equal maxima is the bottleneck; the total does not depend on which.
  PipelineTiming u = PipelinedSchedule({3, 1, 3}, 5);
  EXPECT_DOUBLE_EQ(u.total, 7 + 4 * 3);
  EXPECT_DOUBLE_EQ(PipelinedSchedule({}, 5).total, 0);
}

TEST(TechTest, LoadsScalesWithVoltageAndNode) {
  TechTable t = LoadTech("28nm");
  EXPECT_EQ(t.node_nm, 28);
  const double e = t.energy_pj.at("sram8t_and");
  EXPECT_DOUBLE_EQ(t.Energy("sram8t_and", t.nominal_voltage), e);
  EXPECT_NEAR(t.Energy("sram8t_and", t.nominal_voltage / 2), e / 4, 1e-15);
  TechTable s = t.ScaledTo(14);
  EXPECT_NEAR(s.energy_pj.at("sram8t_and"), e / 2, 1e-15);
  EXPECT_NEAR(s.area_um2.at("sram6t_cell"), t.area_um2.at("sram6t_cell") / 4, 1e-12);
  // Lower voltage: slower clock and less leakage; at V_th the clock stops.
  EXPECT_LT(t.MaxFrequencyMhz(0.6), t.MaxFrequencyMhz(0.9));
  EXPECT_DOUBLE_EQ(t.MaxFrequencyMhz(0.9), t.max_frequency_mhz);
  EXPECT_EQ(t.MaxFrequencyMhz(t.threshold_voltage), 0);
  EXPECT_NEAR(t.LeakageMw(2.0, 0.45), 2.0 * t.leakage_mw_per_mm2 / 8, 1e-12);
}

TEST(TechTest, ErrorsNameTheTableAndTheEntry) {
  try {
    LoadTech("7nm_imaginary");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("7nm_imaginary"), std::string::npos);
  }
  TechTable t = LoadTech("28nm");
  try {
    t.Energy("flux_capacitor", 0.9);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("flux_capacitor"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("28nm.yaml"), std::string::npos);
  }
}

std::unique_ptr<CostModel> BitSerialCost(const std::string& extra = "") {
  return Registry<CostModel>::CreateFrom(ParseYaml(
      "{impl: bitserial_sram, voltage: 0.9, frequency_mhz: 100, chip_area_mm2: 2.0" + extra + "}",
      "test"));
}

TEST(CostModelTest, PricesEachCountWithItsComponent) {
  auto model = BitSerialCost(", energy_pj: {chip_cycle: 0.5}");
  const TechTable& t = model->tech();
  ActionCounts c;
  c.Add("cell_and_ops", 1000);
  c.Add("bitserial_cycles", 40);
  c.Add("macs", 500);
  HardwareParams hw = {{"arrays_total", 4}, {"input_bits", 8}, {"bitlines", 128}};
  PricedCounts p = model->Price(c, Stage::kForward, hw, model->operating_point());
  EXPECT_NEAR(p.cycles, 10, 1e-12);  // 40 array cycles over 4 arrays in parallel
  const double array = 1000 * t.energy_pj.at("sram8t_and") + 40 * t.energy_pj.at("array_cycle");
  EXPECT_NEAR(p.energy_pj.at("array"), array, 1e-9);
  EXPECT_NEAR(p.energy_pj.at("adder_tree"), 1000 * t.energy_pj.at("adder_tree_toggle"), 1e-9);
  EXPECT_NEAR(p.energy_pj.at("chip_overhead"), 10 * 0.5, 1e-12);
  // Half the voltage: a quarter of the dynamic energy, the same cycles.
  OperatingPoint low{"low", 0.45, 100};
  PricedCounts q = model->Price(c, Stage::kForward, hw, low);
  EXPECT_NEAR(q.TotalEnergyPj(), p.TotalEnergyPj() / 4, 1e-9);
  EXPECT_DOUBLE_EQ(q.cycles, p.cycles);
}

TEST(CostModelTest, ReportDerivesFiguresFromEnergyAndTime) {
  auto model = BitSerialCost();
  LayerHardware l;
  l.hw = {{"arrays_total", 1}, {"input_bits", 8}, {"bitlines", 128}};
  l.counts[0].Add("cell_and_ops", 1'000'000);
  l.counts[0].Add("bitserial_cycles", 1000);
  l.counts[0].Add("macs", 2'000'000);
  l.counts[1].Add("bitserial_cycles", 500);
  l.counts[1].Add("macs", 1'000'000);
  CostReport r = BuildCostReport(*model, {l}, model->operating_point(), RunShape{100, 10});
  EXPECT_EQ(r.items.size(), 2u);
  EXPECT_DOUBLE_EQ(r.cycles, 1500);
  EXPECT_DOUBLE_EQ(r.seconds, 1500 / 100e6);
  EXPECT_DOUBLE_EQ(r.ops, 6e6);
  EXPECT_NEAR(r.leakage_energy_pj, r.leakage_mw * 1e-3 * r.seconds * 1e12, 1e-6);
  EXPECT_NEAR(r.tops_per_watt, r.ops / r.energy_pj, 1e-12);
  EXPECT_NEAR(r.power_mw, r.energy_pj * 1e-12 / r.seconds * 1e3, 1e-9);
  EXPECT_NEAR(r.gops_per_mm2, r.ops / r.seconds / 1e9 / 2.0, 1e-9);
  EXPECT_NEAR(r.samples_per_second, 100 / r.seconds, 1e-6);
  double by_stage = 0;
  for (const auto& [k, v] : r.EnergyByStage()) by_stage += v;
  // Off-chip traffic is in no stage: here the labels alone (100 samples of one byte).
  EXPECT_DOUBLE_EQ(r.offchip_bits, 100 * 8);
  EXPECT_NEAR(by_stage + r.offchip_energy_pj, r.dynamic_energy_pj, 1e-6);
  double by_component = 0;
  for (const auto& [k, v] : r.EnergyByComponent()) by_component += v;
  EXPECT_NEAR(by_component, r.energy_pj, 1e-6);
  EXPECT_NE(r.ToJson().find("\"unit\": \"TOPS/W\""), std::string::npos);
}

TEST(CostModelTest, LayerPipelinedScheduleIsNeverSlowerThanSequential) {
  auto model = BitSerialCost();
  std::vector<LayerHardware> layers(3);
  for (int i = 0; i < 3; ++i) {
    layers[i].layer = i;
    layers[i].hw = {{"arrays_total", 1}, {"bitlines", 128}};
    for (int s = 0; s < 3; ++s) layers[i].counts[s].Add("bitserial_cycles", 640 * (i + 1));
    layers[i].counts[3].Add("weight_writes", 128 * 10);
  }
  CostReport seq = BuildCostReport(*model, layers, model->operating_point(),
                                   RunShape{64, 16, StageSchedule::kSequential});
  CostReport pipe = BuildCostReport(*model, layers, model->operating_point(),
                                    RunShape{64, 16, StageSchedule::kLayerPipelined});
  EXPECT_DOUBLE_EQ(seq.cycles, seq.sequential_seconds * 100e6);
  EXPECT_LT(pipe.cycles, seq.cycles);
  // 4 batches of 16: chain of 9 stages per sample (10,20,30 FP; 30,20,10 BP; 30,20,10 GC
  // cycles per sample), bottleneck 30: per batch sum + 15 * 30, plus the write-backs.
  const double chain = 60 + 60 + 60;
  EXPECT_NEAR(pipe.cycles, 4 * (chain + 15 * 30) + 3 * 10, 1e-9);
}

TEST(CostModelTest, SuperPipelineOverlapsFpAndGcAndPredictsErrorsOnItsOwnUnit) {
  auto model = BitSerialCost(", epu_lanes: 1");
  std::vector<LayerHardware> layers(3);
  const int64_t n = 64;
  for (int i = 0; i < 3; ++i) {
    layers[i].layer = i;
    layers[i].hw = {{"arrays_total", 1}, {"bitlines", 128}, {"input_bits", 8}};
    layers[i].counts[0].Add("bitserial_cycles", n * 10 * (i + 1));   // FP 10, 20, 30 per sample
    layers[i].counts[2].Add("bitserial_cycles", n * 5 * (3 - i));    // GC 15, 10, 5
    layers[i].counts[1].Add("epu_shift_adds", n * 4);                // EPU 4 per layer per sample
    layers[i].counts[3].Add("shadow_weight_writes", 128 * 10);       // overlapped write-back
  }
  CostReport r = BuildCostReport(*model, layers, model->operating_point(),
                                 RunShape{n, 16, StageSchedule::kSuperPipelined});
  // Chain: FP 60, EPU 12, then the GCs in parallel (max 15) = 87; interval: the slowest unit,
  // layer 2's macro max(30, 5) = 30 (the EPU's 12 is less).
  EXPECT_NEAR(r.cycles, 4 * (87 + 15 * 30), 1e-9);
  EXPECT_NEAR(r.sequential_seconds * 100e6, n * (60 + 30 + 12), 1e-9);
  EXPECT_GT(r.EnergyByComponent()["error_prediction"], 0);
  EXPECT_EQ(r.EnergyByStage()["update"] > 0, true);  // shadow writes cost energy, no time
}

// Stage balancing: the idle arrays take copies of the slowest layer macro, one at a time, and
// every copy is written at each update.
TEST(CostModelTest, ReplicationBalancesTheSuperPipelineOnIdleArrays) {
  auto model = BitSerialCost(", epu_lanes: 1");
  std::vector<LayerHardware> layers(3);
  const int64_t n = 64;
  for (int i = 0; i < 3; ++i) {
    layers[i].layer = i;
    layers[i].hw = {{"arrays_total", 6}, {"arrays_used", 1}, {"bitlines", 128},
                    {"input_bits", 8}};
    layers[i].counts[0].Add("bitserial_cycles", n * 10 * (i + 1));   // FP 10, 20, 30 per sample
    layers[i].counts[2].Add("bitserial_cycles", n * 5 * (3 - i));    // GC 15, 10, 5
    layers[i].counts[1].Add("epu_shift_adds", n * 4);                // EPU 12 per sample
    layers[i].counts[3].Add("shadow_weight_writes", 128 * 10);
  }
  RunShape plain{n, 16, StageSchedule::kSuperPipelined};
  RunShape balanced = plain;
  balanced.replicate_stages = true;
  CostReport a = BuildCostReport(*model, layers, model->operating_point(), plain);
  CostReport b = BuildCostReport(*model, layers, model->operating_point(), balanced);
  // Units 15, 20, 30 with 3 spare arrays: layer 2 (30 -> 15), layer 1 (20 -> 10), then layer 0
  // (15 -> 7.5); the interval is then max(15, 10, 7.5, EPU 12) = 15, the chain stays 87.
  EXPECT_EQ(b.replicas, (std::map<int, int>{{0, 2}, {1, 2}, {2, 2}}));
  EXPECT_NEAR(a.cycles, 4 * (87 + 15 * 30), 1e-9);
  EXPECT_NEAR(b.cycles, 4 * (87 + 15 * 15), 1e-9);
  EXPECT_NEAR(b.EnergyByStage()["update"], 2 * a.EnergyByStage()["update"], 1e-6);
  EXPECT_NE(b.ToTable().find("copies per layer"), std::string::npos);
}

TEST(CostModelTest, BackpropCannotBeSuperPipelined) {
  // Errors propagated through the arrays (BP cycles on the macros) are not local: a
  // super_pipelined request is priced layer-pipelined, and the report says so.
  auto model = BitSerialCost("");
  std::vector<LayerHardware> layers(2);
  for (int i = 0; i < 2; ++i) {
    layers[i].layer = i;
    layers[i].hw = {{"arrays_total", 1}, {"bitlines", 128}, {"input_bits", 8}};
    for (int s = 0; s < 3; ++s) layers[i].counts[s].Add("bitserial_cycles", 64 * 10);
  }
  CostReport super = BuildCostReport(*model, layers, model->operating_point(),
                                     RunShape{64, 16, StageSchedule::kSuperPipelined});
  CostReport layer = BuildCostReport(*model, layers, model->operating_point(),
                                     RunShape{64, 16, StageSchedule::kLayerPipelined});
  EXPECT_TRUE(super.super_pipeline_refused);
  EXPECT_FALSE(layer.super_pipeline_refused);
  EXPECT_EQ(super.shape.schedule, StageSchedule::kLayerPipelined);
  EXPECT_DOUBLE_EQ(super.cycles, layer.cycles);
  EXPECT_NE(super.ToTable().find("needs local errors"), std::string::npos);
}

// Off-chip traffic per tensor (docs/cost.md, "Off-chip traffic"): 1000 samples, batch 100,
// two layers of 100 8-bit inputs per sample, so each layer keeps 80 000 bits for a batch.
TEST(CostModelTest, ActivationsSpillOnlyTheirOverflowingPart) {
  std::vector<LayerHardware> layers(2);
  for (int i = 0; i < 2; ++i) {
    layers[i].layer = i;
    layers[i].hw = {{"arrays_total", 1}, {"bitlines", 128}, {"input_bits", 8}};
    layers[i].counts[0].Add("input_buffer_writes", 1000 * 100);  // 100 inputs per sample
    layers[i].counts[0].Add("bitserial_cycles", 1000);
  }
  const RunShape shape{1000, 100, StageSchedule::kSequential};
  auto small = BitSerialCost(", activation_buffer_kb: 1");    // 8192 bits
  auto medium = BitSerialCost(", activation_buffer_kb: 10");  // 81 920 bits: layer 1 and a bit
  auto large = BitSerialCost(", activation_buffer_kb: 100");  // both layers
  CostReport a = BuildCostReport(*small, layers, small->operating_point(), shape);
  CostReport m = BuildCostReport(*medium, layers, medium->operating_point(), shape);
  CostReport b = BuildCostReport(*large, layers, large->operating_point(), shape);
  const double inputs = 1000 * 100 * 8, labels = 1000 * 8;
  EXPECT_TRUE(a.activations_spill);
  EXPECT_TRUE(m.activations_spill);
  EXPECT_FALSE(b.activations_spill);
  // Everything fits: the inputs (already off chip, read once) and the labels.
  EXPECT_DOUBLE_EQ(b.offchip_bits, inputs + labels);
  EXPECT_EQ(b.offchip_bits_by_tensor.count("activations.1"), 0u);
  // The last layer's tensor is kept first: 8192 of its 80 000 bits stay, the rest of it is
  // written and read back; layer 0's inputs are re-read (not written: they are in memory).
  const double spill1 = 1000 * 800 * (80000.0 - 8192) / 80000;
  EXPECT_DOUBLE_EQ(a.offchip_bits_by_tensor.at("activations.1"), 2 * spill1);
  EXPECT_DOUBLE_EQ(a.offchip_bits_by_tensor.at("activations.0"), inputs);
  EXPECT_DOUBLE_EQ(a.offchip_bits, inputs + labels + 2 * spill1 + inputs);
  // Only the overflowing part: layer 1 fits, 1920 bits of layer 0's batch stay.
  EXPECT_EQ(m.offchip_bits_by_tensor.count("activations.1"), 0u);
  EXPECT_DOUBLE_EQ(m.offchip_bits_by_tensor.at("activations.0"),
                   1000 * 800 * (80000.0 - 1920) / 80000);
  EXPECT_NEAR(a.EnergyByComponent()["offchip"], a.offchip_bits * 20.0, 1e-6);
}

TEST(CostModelTest, OperatingPointsAreValidated) {
  auto model = BitSerialCost(
      ", operating_points: [{name: slow, voltage: 0.6, frequency_mhz: 20}]");
  EXPECT_EQ(model->FindOperatingPoint("slow").frequency_mhz, 20);
  EXPECT_THROW(model->FindOperatingPoint("fast"), ConfigError);
  EXPECT_THROW(BitSerialCost(", operating_points: [{name: x, voltage: 9, frequency_mhz: 1}]"),
               ConfigError);
  EXPECT_THROW(BitSerialCost(", operating_points: [{name: x, volts: 1, frequency_mhz: 1}]"),
               ConfigError);
}

}  // namespace
}  // namespace pim

namespace pim {
namespace {

// A component of the tests only: two counters nobody prices.
PIM_DECLARE_COUNTERS(TestOnlyCounters, "cost test",
                     {"test_only_pulses", "pulse", "WU", "a counter of this test alone"},
                     {"macs", "MAC", "FP", "logical multiply-accumulates"});

std::unique_ptr<CostModel> AnalogModel() {
  return Registry<CostModel>::CreateFrom(
      ParseYaml("impl: analog_crossbar\ntech: 32nm\n", "test.yaml"));
}

TEST(DeclaredCounterTest, AddingOrReadingAnUndeclaredCounterFails) {
  ActionCounts c;
  c.Add("test_only_pulses", 3);
  EXPECT_EQ(c.Get("test_only_pulses"), 3);
  EXPECT_EQ(c.Get("macs"), 0);  // declared, none counted
  EXPECT_DEATH(c.Add("no_such_counter", 1), "nobody declared");
  EXPECT_DEATH(c.Get("no_such_counter"), "nobody declared");
  // A name declared twice must agree on its unit.
  EXPECT_DEATH(CounterTable::Declare({"macs", "op", "FP", "x", "elsewhere"}), "unit");
  const CounterInfo* info = CounterTable::Find("test_only_pulses");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->unit, "pulse");
  EXPECT_EQ(info->owner, "cost test");
}

TEST(DeclaredCounterTest, CostModelMustPriceOrIgnoreEveryCounterOfItsMacro) {
  auto model = AnalogModel();
  // The cost model covers 'macs' (ignored, with a reason) but not the test's pulses.
  ASSERT_TRUE(model->pricing().count("macs"));
  EXPECT_FALSE(model->pricing().at("macs").priced);
  EXPECT_FALSE(model->pricing().at("macs").how.empty());
  try {
    model->CheckCovers(TestOnlyCounters(), "cost.impl");
    FAIL() << "an unpriced counter passed validation";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cost.impl"), std::string::npos) << m;
    EXPECT_NE(m.find("'test_only_pulses'"), std::string::npos) << m;
    EXPECT_NE(m.find("pulse"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  // A set of counters it prices passes.
  CounterSet priced("cost test", {{"adc_conversions", "conversion", "FP BP", "ADC conversions"}});
  EXPECT_NO_THROW(model->CheckCovers(priced, "cost.impl"));
}

TEST(DeclaredCounterTest, PricingACounterOfAnotherMacroIsRefusedAtRunTime) {
  // A count that reaches a cost model which does not know it stops the pricing (never priced 0).
  auto model = AnalogModel();
  LayerHardware l;
  l.hw = {{"rows", 128}, {"cols", 128}, {"arrays_total", 1}};
  l.counts[0].Add("test_only_pulses", 1);
  EXPECT_DEATH(BuildCostReport(*model, {l}, model->operating_point(), RunShape{}),
               "neither prices nor ignores");
}

// Analog GC and WU: the periphery's digital MACs and the cell writes cost energy and time.
TEST(AnalogCostTest, GradientAndUpdateArePriced) {
  auto model = AnalogModel();
  HardwareParams hw = {{"rows", 128}, {"cols", 128}, {"arrays_total", 8}, {"arrays_used", 8}};
  ActionCounts gc, wu;
  gc.Add("digital_macs", 1000000);
  wu.Add("weight_writes", 128 * 128 * 8);
  const OperatingPoint op = model->operating_point();
  PricedCounts g = model->Price(gc, Stage::kGradient, hw, op);
  PricedCounts w = model->Price(wu, Stage::kUpdate, hw, op);
  // 16-bit MACs: (256 + 32) full-adder bits of 3 fJ each.
  EXPECT_NEAR(g.energy_pj.at("digital_mac"), 1e6 * 288 * 0.003, 1e-6);
  // 8 units at 1.2 GHz against a 10 MHz input cycle: 960 MACs per cycle.
  EXPECT_NEAR(g.cycles, 1e6 / 960.0, 1e-9);
  EXPECT_NEAR(w.energy_pj.at("weight_write"), 128 * 128 * 8 * 0.1, 1e-9);
  // 128 rows per array, one 100 ns pulse each, arrays in parallel: 128 input cycles of 100 ns.
  EXPECT_NEAR(w.cycles, 128, 1e-9);
}

// A network whose weights need more arrays than the chip has: the tiles that are not resident
// are written again before each pass that reads them, every batch, in the 'reprogram' stage.
TEST(AnalogCostTest, LayersLargerThanTheChipPayTheirReprogramming) {
  auto model = AnalogModel();
  auto layer = [](int id, double arrays_used) {
    LayerHardware l;
    l.layer = id;
    l.hw = {{"rows", 128}, {"cols", 128}, {"arrays_total", 8}, {"arrays_used", arrays_used}};
    l.counts[0].Add("input_cycles", 100);
    l.counts[1].Add("macs", 10);
    l.hw["cells_used"] = arrays_used * 128 * 128;  // the occupancy of one programming
    return l;
  };
  RunShape shape{64, 32, StageSchedule::kSequential};
  CostReport fits = BuildCostReport(*model, {layer(0, 4), layer(1, 4)}, model->operating_point(),
                                    shape);
  EXPECT_EQ(fits.reprogram_cell_writes, 0);
  EXPECT_EQ(fits.EnergyByStage().count("reprogram"), 0u);
  CostReport big = BuildCostReport(*model, {layer(0, 8), layer(1, 8)}, model->operating_point(),
                                   shape);
  // Half the 16 arrays are resident; the other half, 8 x 16384 cells, is written twice (FP, BP)
  // per batch, 2 batches.
  EXPECT_NEAR(big.reprogram_cell_writes, 8.0 * 16384 * 2 * 2, 1);
  EXPECT_NEAR(big.EnergyByStage().at("reprogram"), 8.0 * 16384 * 4 * 0.1, 1e-6);
  EXPECT_GT(big.CyclesByStage().at("reprogram"), 0);
  EXPECT_GT(big.cycles, fits.cycles);
  EXPECT_NE(big.ToTable().find("streamed"), std::string::npos);
}

}  // namespace
}  // namespace pim
