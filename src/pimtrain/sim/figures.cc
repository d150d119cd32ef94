// Chip figures: macro benchmarks and the check of a preset's published figures.
#include "pimtrain/sim/figures.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include <fmt/format.h>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/cost/tech.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/sim/session.h"

namespace pim {

std::string Workload::Describe() const {
  std::ostringstream o;
  for (const auto& [k, v] : macro_overrides.entries()) o << k << "=" << v.text() << " ";
  o << "input_sparsity=" << input_sparsity << " weight_sparsity=" << weight_sparsity;
  if (signed_inputs) o << " signed_inputs";
  if (transposed) o << " transposed";
  return o.str();
}

Workload ParseWorkload(const ConfigNode* node) {
  Workload w;
  if (node == nullptr || node->IsNull()) return w;
  if (!node->IsMap()) throw ConfigError(node->Where() + ": a workload is a map");
  for (const auto& [k, v] : node->entries()) {
    const auto& value = v;  // (clang 14 cannot capture a structured binding)
    auto fraction = [&value] {
      double x = value.AsDouble();
      if (!(x >= 0 && x < 1)) {
        throw ConfigError(value.Where() + ": " + value.text() + " is outside [0, 1)");
      }
      return x;
    };
    if (k == "input_sparsity") {
      w.input_sparsity = fraction();
    } else if (k == "weight_sparsity") {
      w.weight_sparsity = fraction();
    } else if (k == "signed_inputs") {
      w.signed_inputs = v.AsBool();
    } else if (k == "direction") {
      std::string d = v.AsString();
      if (d != "forward" && d != "transposed") {
        throw ConfigError(v.Where() + ": '" + d + "' is not one of {forward, transposed}");
      }
      w.transposed = d == "transposed";
    } else if (k == "batch") {
      w.batch = v.AsInt();
      if (w.batch < 1 || w.batch > 4096) {
        throw ConfigError(v.Where() + ": " + v.text() + " is outside [1, 4096]");
      }
    } else {
      w.macro_overrides.Set(k, v);  // a macro parameter; validated with the macro's schema
    }
  }
  return w;
}

CostReport BenchmarkMacro(const ConfigNode& config, const CostModel& model, const Workload& w,
                          const OperatingPoint& op) {
  const ConfigNode* block = config.At("pim").Find("macro");
  if (block == nullptr || block->IsNull()) {
    throw ConfigError("pim.macro: a cost benchmark needs a macro");
  }
  ConfigNode merged = *block;
  MergeInto(merged, w.macro_overrides);
  merged.SetPaths("pim.macro");
  std::unique_ptr<Macro> macro = Registry<Macro>::CreateFrom(merged);
  model.CheckCovers(macro->Counters(), "cost.impl");
  const MacroSpec& spec = macro->spec();
  const HardwareParams hw0 = macro->HardwareParams();
  const int64_t arrays = static_cast<int64_t>(HwParam(hw0, "arrays_total",
                                                      static_cast<double>(spec.arrays_per_core *
                                                                          spec.cores)));
  // The chip full: one array-sized block of weights per array, side by side over the outputs.
  // Macros whose cols are bit lines (a weight spans `slices` x `polarities` of them) hold fewer
  // weight columns per array.
  const int64_t per_array = std::max<int64_t>(
      1, static_cast<int64_t>(static_cast<double>(spec.cols) /
                              (HwParam(hw0, "slices", 1) * HwParam(hw0, "polarities", 1))));
  const int64_t rows = spec.rows, cols = per_array * std::max<int64_t>(1, arrays);
  const uint64_t seed = static_cast<uint64_t>(config.GetInt("seed"));
  CounterRng wr(MixKey(seed, 0xC057, 1)), xr(MixKey(seed, 0xC057, 2));
  std::vector<float> wv(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    auto b = wr.Block(i);
    bool zero = CounterRng::ToUnitFloat(b[0]) < w.weight_sparsity;
    wv[i] = zero ? 0.0f : 2.0f * CounterRng::ToUnitFloat(b[1]) - 1.0f;
  }
  const int64_t k = w.transposed ? cols : rows, n = w.transposed ? rows : cols;
  std::vector<float> xv(w.batch * k), yv(w.batch * n);
  for (int64_t i = 0; i < w.batch * k; ++i) {
    auto b = xr.Block(i);
    bool zero = CounterRng::ToUnitFloat(b[0]) < w.input_sparsity;
    float u = CounterRng::ToUnitFloat(b[1]);
    // Nonzero values away from 0, so that quantization does not add zeros of its own.
    float mag = 0.05f + 0.95f * u;
    float sign = w.signed_inputs && (b[2] & 1u) ? -1.0f : 1.0f;
    xv[i] = zero ? 0.0f : sign * mag;
  }
  RunContext ctx;
  ctx.seed = seed;
  ctx.pool = &DefaultPool();
  ctx.stage = Stage::kUpdate;
  ActionCounts program_counts;
  macro->Program(ConstMatrixView(wv.data(), rows, cols, cols), ctx, program_counts);
  ctx.stage = w.transposed ? Stage::kBackward : Stage::kForward;
  LayerHardware lh;
  lh.layer = 0;
  lh.summary = fmt::format("benchmark {}x{} x batch {}", rows, cols, w.batch);
  lh.hw = macro->HardwareParams();
  macro->Multiply(ConstMatrixView(xv.data(), w.batch, k, k), MatrixView{yv.data(), w.batch, n, n},
                  w.transposed ? Direction::kTransposed : Direction::kForward, ctx,
                  lh.counts[static_cast<int>(ctx.stage)]);
  return BuildCostReport(model, {lh}, op, RunShape{});
}

CostReport TrainingCost(const ConfigNode& config, int64_t slice_samples,
                        const std::vector<std::string>& sets) {
  ConfigNode c = config;
  for (const char* key : {"expected", "source"}) c.Erase(key);
  ApplySet(c, "data.train_limit=" + std::to_string(slice_samples));
  ApplySet(c, "data.test_limit=100");
  ApplySet(c, "train.epochs=1");
  for (const auto& s : sets) ApplySet(c, s, &RootSchema());
  Session session(ValidateRoot(c));
  TrainSummary t = session.Train("", false, {});
  if (!t.has_cost) {
    throw ConfigError("training cost needs a cost: block and at least one layer on pim.macro");
  }
  return t.cost;
}

namespace {
double Ratio(double a, double b) { return b > 0 ? a / b : 0; }
}  // namespace

double PipelineComparison::speedup() const {
  return Ratio(backprop_sequential.seconds, local_super_pipelined.seconds);
}
double PipelineComparison::algorithm_speedup() const {
  return Ratio(backprop_sequential.seconds, local_sequential.seconds);
}
double PipelineComparison::schedule_speedup() const {
  return Ratio(local_sequential.seconds, local_super_pipelined.seconds);
}
double PipelineComparison::traffic_reduction() const {
  return Ratio(backprop_sequential.offchip_bits, local_super_pipelined.offchip_bits);
}

PipelineComparison ComparePipelines(const ConfigNode& config, int64_t slice_samples) {
  PipelineComparison p;
  // A double-buffered macro without the super-pipeline: its second buffer holds W^T for BP
  // (backprop) or idles (local errors); either way the write-back stalls the arrays.
  const ConfigNode* macro = config.At("pim").Find("macro");
  const bool doubled = macro != nullptr && macro->IsMap() && macro->Has("impl") &&
                       macro->At("impl").AsString() == "double_buffered";
  std::vector<std::string> bp = {"train.algorithm={impl: backprop}", "cost.schedule=sequential"};
  std::vector<std::string> seq = {"cost.schedule=sequential"};
  if (doubled) {
    bp.push_back("pim.macro.second_buffer=transposed_copy");
    seq.push_back("pim.macro.second_buffer=idle");
  }
  p.local_super_pipelined = TrainingCost(config, slice_samples, {"cost.schedule=super_pipelined"});
  p.local_sequential = TrainingCost(config, slice_samples, seq);
  p.backprop_sequential = TrainingCost(config, slice_samples, bp);
  return p;
}

const std::vector<std::pair<std::string, std::string>>& KnownFigures() {
  static const std::vector<std::pair<std::string, std::string>> f = {
      {"tops_per_watt", "TOPS/W"},   {"tflops_per_watt", "TFLOPS/W"},
      {"power_mw", "mW"},            {"gops_per_mm2", "GOPS/mm2"},
      {"gflops_per_mm2", "GFLOPS/mm2"}, {"energy_per_mac_pj", "pJ"},
      {"throughput_gops", "GOPS"},  {"access_time_ns", "ns"},
      {"tops_per_watt_ratio", "x"}, {"gops_per_mm2_ratio", "x"},
      {"epochs_per_s", "epochs/s"},  {"crossbar_area_fraction", "fraction"},
      {"adc_energy_fraction", "fraction"}};
  return f;
}

double FigureValue(const CostReport& r, const std::string& figure) {
  if (figure == "tops_per_watt" || figure == "tflops_per_watt") return r.tops_per_watt;
  if (figure == "power_mw") return r.power_mw;
  if (figure == "gops_per_mm2" || figure == "gflops_per_mm2") return r.gops_per_mm2;
  if (figure == "energy_per_mac_pj") return r.macs > 0 ? r.energy_pj / r.macs : 0;
  if (figure == "throughput_gops") return r.seconds > 0 ? r.ops / r.seconds * 1e-9 : 0;
  if (figure == "access_time_ns") return r.access_time_ns;
  if (figure == "crossbar_area_fraction") {
    // The crossbars' share of the modelled area (Neural-PIM's Table 3 "array-area density").
    double total = 0;
    for (const auto& [k, v] : r.area_mm2) total += v;
    auto it = r.area_mm2.find("crossbars");
    return total > 0 && it != r.area_mm2.end() ? it->second / total : 0;
  }
  if (figure == "adc_energy_fraction") {
    auto comp = r.EnergyByComponent();
    return r.energy_pj > 0 ? comp["adc"] / r.energy_pj : 0;
  }
  std::string known;
  for (const auto& [k, u] : KnownFigures()) known += (known.empty() ? "" : ", ") + k;
  throw ConfigError("unknown figure '" + figure + "' (known: " + known + ")");
}

bool FigureCheck::ok() const {
  return prediction_only() || std::fabs(relative_error()) <= tolerance;
}
double FigureCheck::relative_error() const {
  return paper != 0 ? (model - paper) / paper : model;
}

std::vector<FigureCheck> CheckExpected(const ConfigNode& config, const CostModel& model) {
  std::vector<FigureCheck> out;
  const ConfigNode* exp = config.Find("expected");
  if (exp == nullptr || exp->IsNull()) return out;
  if (!exp->IsList()) throw ConfigError(exp->Where() + ": expected a list of figures");
  for (const auto& item : exp->items()) {
    if (!item.IsMap()) throw ConfigError(item.Where() + ": a figure is a map");
    for (const auto& [k, v] : item.entries()) {
      static const std::vector<std::string> keys = {"figure", "value", "tolerance",
                                                    "operating_point", "workload", "note",
                                                    "role", "fitted", "versus",
                                                    "versus_operating_point", "versus_workload",
                                                    "slice_samples", "epoch_samples",
                                                    "miss_reason"};
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
        throw ConfigError(v.Where() + ": unknown key" + DidYouMean(k, keys));
      }
    }
    FigureCheck c;
    c.figure = item.At("figure").AsString();
    const ConfigNode* value = item.Find("value");
    c.paper = value != nullptr && !value->IsNull() ? value->AsDouble()
                                                   : std::numeric_limits<double>::quiet_NaN();
    if (const ConfigNode* t = item.Find("tolerance")) c.tolerance = t->AsDouble();
    if (const ConfigNode* n = item.Find("note")) c.note = n->AsString();
    c.preset = config.Has("name") ? config.GetString("name") : "";
    if (const ConfigNode* n = item.Find("role")) {
      c.role = n->AsString();
      static const std::vector<std::string> roles = {"fit", "prediction", "public_check"};
      if (std::find(roles.begin(), roles.end(), c.role) == roles.end()) {
        throw ConfigError(n->Where() + ": role '" + c.role + "' is not one of {fit, prediction, "
                          "public_check}");
      }
    }
    if (const ConfigNode* n = item.Find("fitted")) c.fitted = n->AsString();
    if (const ConfigNode* n = item.Find("miss_reason")) c.miss_reason = n->AsString();
    const bool published = !c.prediction_only();
    if (published && c.role == "model") {
      throw ConfigError(item.Where() + ": a figure with a published value needs a role (fit, "
                        "prediction or public_check)");
    }
    if (!published && c.role != "model") {
      throw ConfigError(item.Where() + ": role " + c.role + " needs the published value");
    }
    if (!c.miss_reason.empty() && c.role != "prediction" && c.role != "public_check") {
      throw ConfigError(item.Where() + ": miss_reason belongs to a prediction or public_check");
    }
    if (c.role == "fit" && c.fitted.empty()) {
      throw ConfigError(item.Where() + ": a fit names the parameter fitted to it (fitted: KEY)");
    }
    const ConfigNode* p = item.Find("operating_point");
    OperatingPoint op = model.FindOperatingPoint(p != nullptr ? p->AsString() : "");
    c.point = op.name;
    Workload w = ParseWorkload(item.Find("workload"));
    c.workload = w.Describe();
    for (const auto& [k, u] : KnownFigures()) {
      if (k == c.figure) c.unit = u;
    }
    if (c.figure == "epochs_per_s") {
      // A training epoch of the preset's own workload, priced from a slice of it.
      const ConfigNode* sl = item.Find("slice_samples");
      const ConfigNode* ep = item.Find("epoch_samples");
      const int64_t slice = sl != nullptr ? sl->AsInt() : 6000;
      const int64_t epoch = ep != nullptr ? ep->AsInt() : 60000;
      CostReport t = TrainingCost(config, slice);
      c.model = t.seconds > 0 ? static_cast<double>(slice) / (t.seconds * static_cast<double>(epoch))
                              : 0;
      c.workload = "train " + std::to_string(slice) + " of " + std::to_string(epoch) +
                   " samples, scaled";
      c.unit = "epochs/s";
      out.push_back(c);
      continue;
    }
    CostReport r = BenchmarkMacro(config, model, w, op);
    const std::string suffix = "_ratio";
    const bool ratio = c.figure.size() > suffix.size() &&
                       c.figure.compare(c.figure.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (ratio && item.Find("versus") == nullptr) {
      // The same chip on another workload (e.g. FP8 against INT8 efficiency).
      const ConfigNode* vw = item.Find("versus_workload");
      if (vw == nullptr) {
        throw ConfigError(item.Where() + ": a _ratio figure needs 'versus: PRESET' or "
                          "'versus_workload: {...}'");
      }
      const ConfigNode* vp = item.Find("versus_operating_point");
      OperatingPoint oop = model.FindOperatingPoint(vp != nullptr ? vp->AsString() : op.name);
      Workload ow = ParseWorkload(vw);
      CostReport o = BenchmarkMacro(config, model, ow, oop);
      const std::string base = c.figure.substr(0, c.figure.size() - suffix.size());
      const double denom = FigureValue(o, base);
      c.model = denom != 0 ? FigureValue(r, base) / denom : 0;
      c.workload += " vs " + ow.Describe();
    } else if (ratio) {
      // This chip against another preset at equal silicon: the same workload on both.
      const ConfigNode* vs = item.Find("versus");
      ConfigNode other = ResolveConfig({ResolvePresetOrFile(vs->AsString(), vs->Where())}, {});
      auto other_model = Registry<CostModel>::Create(other.At("cost"));
      const ConfigNode* vp = item.Find("versus_operating_point");
      OperatingPoint oop = other_model->FindOperatingPoint(vp != nullptr ? vp->AsString() : "");
      // The other chip runs the same workload, or its own (versus_workload: e.g. its own weight
      // encoding, when the comparison's widths are not that chip's).
      const ConfigNode* vw = item.Find("versus_workload");
      const Workload ow = vw != nullptr ? ParseWorkload(vw) : w;
      CostReport o = BenchmarkMacro(other, *other_model, ow, oop);
      const std::string base = c.figure.substr(0, c.figure.size() - suffix.size());
      const double denom = FigureValue(o, base);
      c.model = denom != 0 ? FigureValue(r, base) / denom : 0;
      c.workload += " vs " + vs->AsString() + (vw != nullptr ? " (" + ow.Describe() + ")" : "");
    } else {
      c.model = FigureValue(r, c.figure);
    }
    out.push_back(c);
  }
  return out;
}

std::string FigureChecksTable(const std::vector<FigureCheck>& checks) {
  std::ostringstream o;
  o << fmt::format("{:<18} {:>12} {:>12} {:>8}  {:<4} {:<12} {}\n", "figure", "paper", "model",
                   "error", "ok", "point", "workload");
  for (const auto& c : checks) {
    if (c.prediction_only()) {
      o << fmt::format("{:<18} {:>12} {:>12.4g} {:>8}  {:<4} {:<12} {}\n", c.figure, "-",
                       c.model, "", "pred", c.point, c.workload);
      continue;
    }
    o << fmt::format("{:<18} {:>12.4g} {:>12.4g} {:>+7.1f}%  {:<4} {:<12} {}{}\n", c.figure,
                     c.paper, c.model, 100 * c.relative_error(),
                     c.ok() ? "yes" : c.known_miss() ? "MISS" : "NO", c.point, c.workload,
                     c.calibrated() ? "  [fit: " + c.fitted + "]" : "  [" + c.role + "]");
    if (c.known_miss()) o << "    why missed: " << c.miss_reason << "\n";
  }
  return o.str();
}

std::string FigureChecksJson(const std::vector<FigureCheck>& checks) {
  nlohmann::ordered_json a = nlohmann::ordered_json::array();
  for (const auto& c : checks) {
    a.push_back({{"figure", c.figure},
                 {"unit", c.unit},
                 {"paper", c.prediction_only() ? nlohmann::ordered_json() : nlohmann::ordered_json(c.paper)},
                 {"model", c.model},
                 {"relative_error", c.prediction_only() ? nlohmann::ordered_json() : nlohmann::ordered_json(c.relative_error())},
                 {"tolerance", c.tolerance},
                 {"ok", c.ok()},
                 {"operating_point", c.point},
                 {"workload", c.workload},
                 {"calibrated", c.calibrated()},
                 {"role", c.role},
                 {"fitted", c.fitted},
                 {"miss_reason", c.miss_reason},
                 {"note", c.note}});
  }
  return a.dump(2);
}

}  // namespace pim
