// CostReport: pricing a period's counts and the derived figures.
#include "pimtrain/cost/report.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fmt/format.h>

#include "pimtrain/base/error.h"
#include "pimtrain/cost/pipeline.h"

namespace pim {

double StageCost::EnergyPj() const {
  double e = 0;
  for (const auto& [k, v] : energy_pj) e += v;
  return e;
}

namespace {

// The per-sample chain of a training step: FP(0..L-1), then BP(L-1..0) and GC(L-1..0), each
// (layer, stage) its own unit, in cycles per sample.
std::vector<double> BackpropChain(const std::vector<StageCost>& items, double per_sample) {
  std::vector<double> chain;
  auto add = [&](Stage s, bool reverse) {
    std::vector<double> part;
    for (const auto& it : items) {
      if (it.stage == s) part.push_back(it.cycles * per_sample);
    }
    if (reverse) std::reverse(part.begin(), part.end());
    chain.insert(chain.end(), part.begin(), part.end());
  };
  add(Stage::kForward, false);
  add(Stage::kBackward, true);
  add(Stage::kGradient, true);
  return chain;
}

// The period's serial work outside the pipeline: weight write-back (and reprogramming) and the
// calibration passes.
double UpdateCycles(const std::vector<StageCost>& items) {
  double wu = 0;
  for (const auto& it : items) {
    if (it.stage == Stage::kUpdate || it.stage == Stage::kCalibration) wu += it.cycles;
  }
  return wu;
}

// Batches of `batch` samples through a pipeline of the given (fill, II, drain) per batch.
double PerBatch(const RunShape& shape, const std::vector<double>& chain) {
  const int64_t full = shape.samples / shape.batch_size;
  const int64_t rest = shape.samples % shape.batch_size;
  double c = static_cast<double>(full) * PipelinedSchedule(chain, shape.batch_size).total;
  if (rest > 0) c += PipelinedSchedule(chain, rest).total;
  return c;
}

// Layer-pipelined (backprop): the chain above per batch; the pipeline drains at every weight
// update, whose write-back cycles (per period already) are added.
double LayerPipelinedCycles(const std::vector<StageCost>& items, const RunShape& shape) {
  if (shape.samples <= 0 || shape.batch_size <= 0) return 0;
  return PerBatch(shape, BackpropChain(items, 1.0 / static_cast<double>(shape.samples))) +
         UpdateCycles(items);
}

// Super-pipelined (SP-PIM, local errors): per sample, FP(0..L-1), then the error prediction
// unit (all layers' local errors from the output error), then the GCs, which no longer wait
// for each other. Each layer's double-buffered macro runs its FP and GC from different buffers,
// so the two overlap inside the macro: the macro's interval is max(FP_l, GC_l), not the sum.
// Units: one per layer macro, and the EPU. Weight write-back goes to the shadow buffer
// (overlapped); the pipeline still drains at each update so that the numbers match the
// functional model (no stale weights).
double SuperPipelinedCycles(const std::vector<StageCost>& items, const RunShape& shape,
                            const std::map<int, int>& replicas, double* interval,
                            double* chain_length) {
  if (shape.samples <= 0 || shape.batch_size <= 0) return 0;
  const double per_sample = 1.0 / static_cast<double>(shape.samples);
  std::map<int, double> fp, gc;
  double epu = 0;
  for (const auto& it : items) {
    if (it.stage == Stage::kForward) fp[it.layer] += it.cycles * per_sample;
    if (it.stage == Stage::kGradient) gc[it.layer] += it.cycles * per_sample;
    // Error propagation through a transposed array, if the algorithm still uses one.
    if (it.stage == Stage::kBackward) gc[it.layer] += it.cycles * per_sample;
    epu += it.epu_cycles * per_sample;
  }
  double fp_sum = 0, gc_max = 0, ii = epu;
  for (const auto& [l, c] : fp) {
    fp_sum += c;
    // r copies of the layer's weights take every r-th sample: the unit's interval / r.
    auto r = replicas.find(l);
    const double copies = r != replicas.end() ? r->second : 1;
    ii = std::max(ii, std::max(c, gc[l]) / copies);
  }
  for (const auto& [l, c] : gc) gc_max = std::max(gc_max, c);
  const double chain = fp_sum + epu + gc_max;
  if (interval) *interval = ii;
  if (chain_length) *chain_length = chain;
  // As a pipeline: everything before the bottleneck is fill, after it drain.
  const int64_t full = shape.samples / shape.batch_size;
  const int64_t rest = shape.samples % shape.batch_size;
  auto batch = [&](int64_t n) { return n > 0 ? chain + static_cast<double>(n - 1) * ii : 0.0; };
  return static_cast<double>(full) * batch(shape.batch_size) + batch(rest) +
         UpdateCycles(items);
}

// Stage balancing on the super-pipeline: the arrays no layer occupies hold copies of the layer
// that sets the interval (its FP or GC per sample), one copy at a time while a copy fits, as
// ISAAC replicates the weights of its slow layers. Returns copies per layer (1: none).
std::map<int, int> Replicas(const std::vector<StageCost>& items,
                            const std::vector<LayerHardware>& layers, double arrays_total) {
  std::map<int, double> fp, gc, arrays;
  for (const auto& it : items) {
    if (it.stage == Stage::kForward) fp[it.layer] += it.cycles;
    if (it.stage == Stage::kGradient || it.stage == Stage::kBackward) gc[it.layer] += it.cycles;
  }
  double spare = arrays_total;
  for (const auto& l : layers) {
    arrays[l.layer] = std::max(1.0, HwParam(l.hw, "arrays_used", 1));
    spare -= arrays[l.layer];
  }
  std::map<int, double> unit;  // the layer macro's time: max(FP, GC), as in the interval
  std::map<int, int> r;
  for (const auto& [l, c] : fp) {
    unit[l] = std::max(c, gc[l]);
    r[l] = 1;
  }
  while (!unit.empty()) {
    int slow = unit.begin()->first;
    for (const auto& [l, u] : unit) {
      if (u / r[l] > unit[slow] / r[slow]) slow = l;
    }
    if (arrays[slow] > spare) break;  // the bottleneck cannot get another copy
    spare -= arrays[slow];
    ++r[slow];
  }
  return r;
}

const char* ScheduleName(StageSchedule s) {
  switch (s) {
    case StageSchedule::kSequential: return "sequential";
    case StageSchedule::kLayerPipelined: return "layer_pipelined";
    case StageSchedule::kSuperPipelined: return "super_pipelined";
  }
  return "?";
}

std::string Si(double v, const char* unit) {
  const char* prefixes[] = {"p", "n", "u", "m", "", "k", "M", "G", "T", "P"};
  if (v == 0 || !std::isfinite(v)) return fmt::format("{:.3g} {}", v, unit);
  int e = static_cast<int>(std::floor(std::log10(std::fabs(v)) / 3));
  e = std::clamp(e, -4, 5);
  return fmt::format("{:.4g} {}{}", v / std::pow(1000.0, e), prefixes[e + 4], unit);
}

}  // namespace

CostReport BuildCostReport(const CostModel& model, const std::vector<LayerHardware>& layers,
                           const OperatingPoint& op, const RunShape& shape) {
  CostReport r;
  r.op = op;
  r.tech = model.tech().name;
  r.shape = shape;
  HardwareParams hw = layers.empty() ? HardwareParams{} : layers.front().hw;
  r.area_mm2 = model.AreaMm2(hw);
  r.chip_area_mm2 = model.ChipAreaMm2(hw);
  r.leakage_mw = model.LeakageMw(hw, op);
  r.max_frequency_mhz = model.tech().MaxFrequencyMhz(op.voltage);
  r.access_time_ns = model.AccessTimeNs(op);
  for (const auto& l : layers) {
    for (int s = 0; s < kNumStages; ++s) {
      const ActionCounts& c = l.counts[s];
      if (c.empty()) continue;
      for (const auto& [name, n] : c.counts()) {
        // Config validation (CostModel::CheckCovers) makes this unreachable from user input.
        PIM_CHECK_MSG(model.pricing().count(name) > 0,
                      "counter '" + name + "' reached a cost model that neither prices nor "
                      "ignores it");
      }
      PricedCounts p = model.Price(c, static_cast<Stage>(s), l.hw, op);
      StageCost item;
      item.layer = l.layer;
      item.summary = l.summary;
      item.stage = static_cast<Stage>(s);
      item.stage_name = StageName(item.stage);
      item.energy_pj = std::move(p.energy_pj);
      item.cycles = p.cycles;
      item.epu_cycles = p.epu_cycles;
      // A calibration pass's reads compute no part of the network: not in the ops of TOPS/W.
      item.macs = item.stage == Stage::kCalibration ? 0.0 : static_cast<double>(c.Get("macs"));
      if (item.stage == Stage::kForward) {
        // The layer's FP inputs: written once into its input buffer (bit-serial macros), or
        // converted once into the input format (floating-point macros).
        const int64_t elements = c.Get("input_buffer_writes") > 0 ? c.Get("input_buffer_writes")
                                                                  : c.Get("format_conversions");
        item.activation_bits = static_cast<double>(elements) * HwParam(l.hw, "input_bits", 8);
      }
      r.items.push_back(std::move(item));
    }
  }
  // Layers larger than the chip: the arrays the layers occupy (weight-stationary) against the
  // chip's. A training period reprograms, every batch, the tiles that are not resident before
  // each pass reading them (FP; BP when it runs on the arrays).
  for (const auto& l : layers) r.arrays_needed += HwParam(l.hw, "arrays_used", 0);
  r.arrays_available = HwParam(hw, "arrays_total", 0);
  if (shape.samples > 0 && r.arrays_available > 0 && r.arrays_needed > r.arrays_available) {
    const double resident = r.arrays_available / r.arrays_needed;
    const double batches = std::ceil(static_cast<double>(shape.samples) /
                                     static_cast<double>(std::max<int64_t>(1, shape.batch_size)));
    for (const auto& l : layers) {
      const ActionCounts& bp = l.counts[static_cast<int>(Stage::kBackward)];
      const ActionCounts& fp = l.counts[static_cast<int>(Stage::kForward)];
      if (!model.pricing().count("weight_writes") || !model.pricing().at("weight_writes").priced) {
        continue;
      }
      // Cells of one programming of the layer: the occupancy of its last programming (cells
      // holding weight bits, `cells_used`), else every cell of its arrays.
      const double cells = HwParam(l.hw, "cells_used",
                                   HwParam(l.hw, "arrays_used", 0) * CellsPerArray(l.hw));
      if (cells <= 0) continue;
      const double passes = (fp.empty() ? 0.0 : 1.0) + (bp.Get("macs") > 0 ? 1.0 : 0.0);
      const double writes = (1 - resident) * cells * passes * batches;
      if (writes <= 0) continue;
      ActionCounts c;
      c.Add("weight_writes", static_cast<int64_t>(std::llround(writes)));
      PricedCounts p = model.Price(c, Stage::kUpdate, l.hw, op);
      StageCost item;
      item.layer = l.layer;
      item.summary = l.summary;
      item.stage = Stage::kUpdate;  // serial with the compute, like a write-back
      item.stage_name = "reprogram";
      item.energy_pj = std::move(p.energy_pj);
      item.cycles = p.cycles;
      r.reprogram_cell_writes += writes;
      r.items.push_back(std::move(item));
    }
  }
  double seq_cycles = 0;
  for (const auto& it : r.items) {
    r.dynamic_energy_pj += it.EnergyPj();
    seq_cycles += it.cycles;
    r.macs += it.macs;
  }
  for (const auto& it : r.items) seq_cycles += it.epu_cycles;  // the EPU unit, run alone
  double interval = 0, chain = 0;
  r.cycles = seq_cycles;
  // The super-pipeline needs local errors: an algorithm that propagates errors through the
  // arrays (backprop: BP cycles on the macros) makes each layer's error wait for the layer
  // above, so the chip can only pipeline it layer by layer (the report says so).
  if (shape.schedule == StageSchedule::kSuperPipelined) {
    for (const auto& it : r.items) {
      if (it.stage == Stage::kBackward && it.cycles > 0) {
        r.shape.schedule = StageSchedule::kLayerPipelined;
        r.super_pipeline_refused = true;
        break;
      }
    }
  }
  if (shape.samples > 0 && r.shape.schedule == StageSchedule::kLayerPipelined) {
    r.cycles = LayerPipelinedCycles(r.items, shape);
  } else if (shape.samples > 0 && r.shape.schedule == StageSchedule::kSuperPipelined) {
    if (shape.replicate_stages) r.replicas = Replicas(r.items, layers, r.arrays_available);
    r.cycles = SuperPipelinedCycles(r.items, shape, r.replicas, &interval, &chain);
    // Every copy is written at each update (into its shadow buffer: energy, no time).
    for (auto& it : r.items) {
      auto c = r.replicas.find(it.layer);
      if (it.stage != Stage::kUpdate || c == r.replicas.end() || c->second <= 1) continue;
      const double extra = c->second - 1;
      for (auto& [k, v] : it.energy_pj) {
        r.dynamic_energy_pj += extra * v;
        v *= c->second;
      }
    }
  }
  // Off-chip traffic of a training period, per tensor, the activation buffer deciding what
  // stays (docs/cost.md, "Off-chip traffic"). Read once: the first layer's inputs (already in
  // off-chip memory), the labels, local error prediction's feedback matrices (kept on chip: the
  // EPU reads them every sample, so they take the buffer first). Each layer's FP inputs wait for
  // its GC, for the samples in flight (a batch; the super-pipeline: chain / interval); the
  // buffer keeps the last layers' first (their GC comes first, and a spilled bit of a hidden
  // activation costs a write and a read, of the first layer's inputs a re-read only). Streamed
  // weight tiles are read before each reprogramming.
  if (shape.samples > 0) {
    const double samples = static_cast<double>(shape.samples);
    std::vector<std::pair<int, double>> acts;  // (layer, bits over the period)
    for (const auto& it : r.items) {
      if (it.stage == Stage::kForward && it.activation_bits > 0) {
        acts.emplace_back(it.layer, it.activation_bits);
      }
    }
    double in_flight = static_cast<double>(shape.batch_size);
    if (r.shape.schedule == StageSchedule::kSuperPipelined && interval > 0) {
      in_flight = std::min(in_flight, std::ceil(chain / interval));
    }
    double epu_reads = 0;
    for (const auto& l : layers) {
      epu_reads += static_cast<double>(l.counts[static_cast<int>(Stage::kBackward)].Get(
          "epu_reads"));
    }
    auto& t = r.offchip_bits_by_tensor;
    if (!acts.empty()) t["inputs"] = acts.front().second;
    t["labels"] = samples * static_cast<double>(shape.label_bits);
    // One byte per feedback entry (the EPU's read unit); a sample reads each entry once (DFA).
    const double feedback = epu_reads / samples * 8;
    if (feedback > 0) t["prediction_matrices"] = feedback;
    double room = std::max(0.0, model.activation_buffer_bits() - feedback);
    for (auto a = acts.rbegin(); a != acts.rend(); ++a) {
      const double need = a->second / samples * in_flight;  // bits held at once
      const double kept = std::min(need, room);
      room -= kept;
      if (need <= 0 || kept >= need) continue;
      const double spilled = a->second * (need - kept) / need;
      r.activations_spill = true;
      const bool first = a == std::prev(acts.rend());
      t["activations." + std::to_string(a->first)] = (first ? 1.0 : 2.0) * spilled;
    }
    if (r.reprogram_cell_writes > 0) t["weights"] = r.reprogram_cell_writes;
    for (const auto& [k, v] : t) r.offchip_bits += v;
  }
  const double hz = op.frequency_mhz * 1e6;
  r.seconds = r.cycles / hz;
  r.sequential_seconds = seq_cycles / hz;
  r.leakage_energy_pj = r.leakage_mw * 1e-3 * r.seconds * 1e12;
  r.offchip_energy_pj = r.offchip_bits * model.offchip_pj_per_bit();
  r.dynamic_energy_pj += r.offchip_energy_pj;
  r.energy_pj = r.dynamic_energy_pj + r.leakage_energy_pj;
  r.ops = 2 * r.macs;
  r.tops_per_watt = r.energy_pj > 0 ? r.ops / r.energy_pj : 0;  // ops/pJ = 1e12 ops/J = TOPS/W
  r.gops_per_mm2 =
      r.seconds > 0 && r.chip_area_mm2 > 0 ? r.ops / r.seconds / 1e9 / r.chip_area_mm2 : 0;
  r.power_mw = r.seconds > 0 ? r.energy_pj * 1e-12 / r.seconds * 1e3 : 0;
  if (shape.samples > 0 && r.seconds > 0) {
    r.samples_per_second = static_cast<double>(shape.samples) / r.seconds;
    r.energy_per_sample_uj = r.energy_pj * 1e-6 / static_cast<double>(shape.samples);
  }
  return r;
}

std::map<std::string, double> CostReport::EnergyByStage() const {
  std::map<std::string, double> m;
  for (const auto& it : items) m[it.stage_name] += it.EnergyPj();
  return m;
}

std::map<std::string, double> CostReport::EnergyByComponent() const {
  std::map<std::string, double> m;
  for (const auto& it : items) {
    for (const auto& [k, v] : it.energy_pj) m[k] += v;
  }
  if (leakage_energy_pj > 0) m["leakage"] += leakage_energy_pj;
  if (offchip_energy_pj > 0) m["offchip"] += offchip_energy_pj;
  return m;
}

std::map<int, double> CostReport::EnergyByLayer() const {
  std::map<int, double> m;
  for (const auto& it : items) m[it.layer] += it.EnergyPj();
  return m;
}

std::map<std::string, double> CostReport::CyclesByStage() const {
  std::map<std::string, double> m;
  for (const auto& it : items) m[it.stage_name] += it.cycles;
  return m;
}

std::string CostReport::ToJson() const {
  using J = nlohmann::ordered_json;
  auto fig = [](double v, const char* unit) { return J{{"value", v}, {"unit", unit}}; };
  J j;
  j["operating_point"] = {{"name", op.name},
                          {"voltage", fig(op.voltage, "V")},
                          {"frequency", fig(op.frequency_mhz, "MHz")},
                          {"max_frequency", fig(max_frequency_mhz, "MHz")}};
  j["tech"] = tech;
  j["schedule"] = ScheduleName(shape.schedule);
  if (super_pipeline_refused) j["super_pipeline_refused"] = true;
  j["offchip_traffic"] = fig(offchip_bits, "bit");
  j["activations_spill"] = activations_spill;
  {
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    for (const auto& [k, v] : offchip_bits_by_tensor) t[k] = fig(v, "bit");
    j["offchip_traffic_by_tensor"] = t;
  }
  if (!replicas.empty()) {
    nlohmann::ordered_json rj = nlohmann::ordered_json::object();
    for (const auto& [l, n] : replicas) rj[std::to_string(l)] = n;
    j["stage_replicas"] = rj;
  }
  j["arrays_needed"] = fig(arrays_needed, "arrays");
  j["arrays_available"] = fig(arrays_available, "arrays");
  j["reprogram_cell_writes"] = fig(reprogram_cell_writes, "cell writes");
  j["samples"] = shape.samples;
  j["energy"] = fig(energy_pj, "pJ");
  j["dynamic_energy"] = fig(dynamic_energy_pj, "pJ");
  j["leakage_energy"] = fig(leakage_energy_pj, "pJ");
  j["latency"] = fig(seconds, "s");
  j["sequential_latency"] = fig(sequential_seconds, "s");
  j["cycles"] = fig(cycles, "cycles");
  j["macs"] = fig(macs, "MAC");
  j["ops"] = fig(ops, "op (1 MAC = 2 op)");
  j["tops_per_watt"] = fig(tops_per_watt, "TOPS/W");
  j["gops_per_mm2"] = fig(gops_per_mm2, "GOPS/mm2");
  j["power"] = fig(power_mw, "mW");
  j["leakage_power"] = fig(leakage_mw, "mW");
  j["chip_area"] = fig(chip_area_mm2, "mm2");
  if (access_time_ns > 0) j["access_time"] = fig(access_time_ns, "ns");
  if (shape.samples > 0) {
    j["samples_per_second"] = fig(samples_per_second, "samples/s");
    j["energy_per_sample"] = fig(energy_per_sample_uj, "uJ");
    j["latency_per_sample"] = fig(seconds / static_cast<double>(shape.samples) * 1e6, "us");
  }
  J area = J::object();
  for (const auto& [k, v] : area_mm2) area[k] = fig(v, "mm2");
  j["area_by_component"] = area;
  J stages = J::object();
  auto cyc = CyclesByStage();
  for (const auto& [k, v] : EnergyByStage()) {
    stages[k] = {{"energy", fig(v, "pJ")}, {"cycles", fig(cyc[k], "cycles")}};
  }
  j["by_stage"] = stages;
  J comps = J::object();
  for (const auto& [k, v] : EnergyByComponent()) comps[k] = fig(v, "pJ");
  j["by_component"] = comps;
  J layers = J::array();
  for (const auto& it : items) {
    J l;
    l["layer"] = it.layer;
    l["summary"] = it.summary;
    l["stage"] = it.stage_name;
    l["energy"] = fig(it.EnergyPj(), "pJ");
    l["cycles"] = fig(it.cycles, "cycles");
    l["macs"] = fig(it.macs, "MAC");
    J c = J::object();
    for (const auto& [k, v] : it.energy_pj) c[k] = fig(v, "pJ");
    l["by_component"] = c;
    layers.push_back(l);
  }
  j["by_layer_stage"] = layers;
  return j.dump(2);
}

std::string CostReport::CompactJson() const {
  nlohmann::ordered_json j;
  j["energy_j"] = energy_pj * 1e-12;
  j["latency_s"] = seconds;
  j["power_w"] = power_mw * 1e-3;
  j["tops_per_watt"] = tops_per_watt;
  j["offchip_bytes"] = offchip_bits / 8;
  j["offchip_energy_j"] = offchip_energy_pj * 1e-12;
  auto e = EnergyByStage();
  auto c = CyclesByStage();
  for (const auto& [k, v] : e) j["energy_j_" + k] = v * 1e-12;
  for (const auto& [k, v] : c) j["cycles_" + k] = v;
  return j.dump();
}

std::string CostReport::ToTable() const {
  std::ostringstream o;
  o << fmt::format("operating point {}: {:.3g} V, {:.4g} MHz (limit at this voltage {:.4g} MHz), "
                   "{} technology, {} schedule\n",
                   op.name, op.voltage, op.frequency_mhz, max_frequency_mhz, tech,
                   ScheduleName(shape.schedule));
  if (super_pipeline_refused) {
    o << "  (super_pipelined needs local errors: this algorithm propagates errors through the "
         "arrays, so the layers are pipelined one after another)\n";
  }
  o << fmt::format("  energy      {}  (dynamic {}, leakage {})\n", Si(energy_pj * 1e-12, "J"),
                   Si(dynamic_energy_pj * 1e-12, "J"), Si(leakage_energy_pj * 1e-12, "J"));
  o << fmt::format("  latency     {}  ({} cycles)\n", Si(seconds, "s"), Si(cycles, ""));
  o << fmt::format("  power       {}\n", Si(power_mw * 1e-3, "W"));
  o << fmt::format("  efficiency  {:.4g} TOPS/W, {:.4g} GOPS/mm2 (1 MAC = 2 ops; {:.4g} mm2)\n",
                   tops_per_watt, gops_per_mm2, chip_area_mm2);
  if (shape.samples > 0) {
    o << fmt::format("  training    {:.4g} samples/s, {} per sample\n", samples_per_second,
                     Si(energy_per_sample_uj * 1e-6, "J"));
  }
  if (offchip_bits > 0) {
    o << fmt::format("  off-chip    {}bit", Si(offchip_bits, ""));
    std::string sep = " (";
    for (const auto& [k, v] : offchip_bits_by_tensor) {
      if (v <= 0) continue;
      o << sep << k << " " << Si(v, "") << "bit";
      sep = ", ";
    }
    o << (sep == ", " ? ")" : "") << "\n";
  }
  bool replicated = false;
  for (const auto& [l, n] : replicas) replicated |= n > 1;
  if (replicated) {
    o << "  balancing   copies per layer:";
    for (const auto& [l, n] : replicas) o << fmt::format(" #{} x{}", l, n);
    o << " (the slowest stages replicated on idle arrays)\n";
  }
  if (reprogram_cell_writes > 0) {
    o << fmt::format("  weights     streamed: the layers need {:.0f} arrays, the chip has {:.0f}; "
                     "{} cell writes reprogram the tiles that are not resident (stage "
                     "'reprogram')\n",
                     arrays_needed, arrays_available, Si(reprogram_cell_writes, ""));
  }
  auto stage_e = EnergyByStage();
  auto stage_c = CyclesByStage();
  o << "  per stage   ";
  for (const auto& [k, v] : stage_e) {
    o << fmt::format("{} {} / {} cyc   ", k, Si(v * 1e-12, "J"), Si(stage_c[k], ""));
  }
  o << "\n  per layer   ";
  for (const auto& [k, v] : EnergyByLayer()) o << fmt::format("#{} {}   ", k, Si(v * 1e-12, "J"));
  o << "\n  components  ";
  auto comp = EnergyByComponent();
  std::vector<std::pair<std::string, double>> sorted(comp.begin(), comp.end());
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.second > b.second; });
  for (const auto& [k, v] : sorted) {
    o << fmt::format("{} {:.1f}%   ", k, energy_pj > 0 ? 100 * v / energy_pj : 0.0);
  }
  o << "\n";
  return o.str();
}

std::string CostReport::Headline() const {
  std::ostringstream o;
  o << fmt::format("simulated chip cost of the last epoch ({}, {:.3g} V, {:.4g} MHz): ", op.name,
                   op.voltage, op.frequency_mhz);
  o << fmt::format("{} and {} per epoch", Si(energy_pj * 1e-12, "J"), Si(seconds, "s"));
  if (seconds > 0) o << fmt::format(" ({:.3g} epochs/s)", 1.0 / seconds);
  o << fmt::format(", {} average, {:.4g} TOPS/W", Si(power_mw * 1e-3, "W"), tops_per_watt);
  return o.str();
}

}  // namespace pim
