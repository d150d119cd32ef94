// Networks priced from their layer shapes: shape inference of a model's layer list, the
// benchmark networks, and the stripe simulation that gives each layer's counts.
#include "pimtrain/sim/network_cost.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include <fmt/format.h>

#include "pimtrain/base/error.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/models/graph.h"
#include "pimtrain/nn/weighted_layer.h"

namespace pim {

PIM_DECLARE_COUNTERS(NetworkShapeCounters, "cost from shapes",
                     {"elementwise_adds", "add", "FP",
                      "digital element adds of layers without weights (residual joins, global "
                      "average pooling), counted from a network's shapes"});

namespace {

int64_t Out(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

int64_t IntOr(const ConfigNode& n, const char* key, int64_t fallback) {
  const ConfigNode* v = n.Find(key);
  return v != nullptr && !v->IsNull() ? v->AsInt() : fallback;
}

struct Builtin {
  const char* name;
  int64_t c, h, w;
  const char* yaml;  // a sequential model's layer list
};

// Shapes [published] (VGG-8 is the model preset presets/models/vgg8.yaml, one definition):
// VGG-16 (Simonyan and Zisserman, ICLR 2015, configuration D); AlexNet (Krizhevsky et al.,
// NIPS 2012) as one tower (the two GPU groups merged, as the chip comparisons price it).
const Builtin kBuiltins[] = {
    {"vgg16", 3, 224, 224,
     "[{impl: conv2d, out_channels: 64, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 64, kernel: 3, padding: 1}, {impl: max_pool2d, kernel: 2},"
     " {impl: conv2d, out_channels: 128, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 128, kernel: 3, padding: 1}, {impl: max_pool2d, kernel: 2},"
     " {impl: conv2d, out_channels: 256, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 256, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 256, kernel: 3, padding: 1}, {impl: max_pool2d, kernel: 2},"
     " {impl: conv2d, out_channels: 512, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 512, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 512, kernel: 3, padding: 1}, {impl: max_pool2d, kernel: 2},"
     " {impl: conv2d, out_channels: 512, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 512, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 512, kernel: 3, padding: 1}, {impl: max_pool2d, kernel: 2},"
     " {impl: flatten}, {impl: linear, out_features: 4096}, {impl: linear, out_features: 4096},"
     " {impl: linear, out_features: 1000}]"},
    {"alexnet", 3, 227, 227,
     "[{impl: conv2d, out_channels: 96, kernel: 11, stride: 4},"
     " {impl: max_pool2d, kernel: 3, stride: 2},"
     " {impl: conv2d, out_channels: 256, kernel: 5, padding: 2},"
     " {impl: max_pool2d, kernel: 3, stride: 2},"
     " {impl: conv2d, out_channels: 384, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 384, kernel: 3, padding: 1},"
     " {impl: conv2d, out_channels: 256, kernel: 3, padding: 1},"
     " {impl: max_pool2d, kernel: 3, stride: 2}, {impl: flatten},"
     " {impl: linear, out_features: 4096}, {impl: linear, out_features: 4096},"
     " {impl: linear, out_features: 1000}]"},
    {"cnn", 1, 28, 28,  // configs/cnn.yaml
     "[{impl: conv2d, out_channels: 16, kernel: 5, padding: 2}, {impl: max_pool2d, kernel: 2},"
     " {impl: conv2d, out_channels: 32, kernel: 5, padding: 2}, {impl: max_pool2d, kernel: 2},"
     " {impl: flatten}, {impl: linear, out_features: 128}, {impl: linear, out_features: 10}]"},
    {"mlp", 1, 28, 28,  // configs/mlp.yaml and the presets' MLP
     "[{impl: flatten}, {impl: linear, out_features: 256}, {impl: linear, out_features: 128},"
     " {impl: linear, out_features: 10}]"},
};

}  // namespace

std::vector<WeightedLayerShape> LayerShapesOfNetwork(Network& net) {
  std::vector<WeightedLayerShape> out;
  int64_t adds = 0, joins = 0, pools = 0;
  for (const LayerShape& s : LayerShapes(net)) {
    if (s.weight_rows > 0) {
      const int64_t m = std::max<int64_t>(1, s.vectors_per_sample);
      // A stack's nodes are named by their index: say what the layer is too ("3 conv2d ...").
      const bool numbered = !s.name.empty() && s.name.find_first_not_of("0123456789") ==
                                                   std::string::npos;
      const std::string label =
          numbered ? s.name + " " + s.summary.substr(0, s.summary.find(' ')) : s.name;
      out.push_back({fmt::format("{} {}x{} @{}", label, s.weight_rows, s.weight_cols, m),
                     s.weight_rows, s.weight_cols, m});
      continue;
    }
    const std::vector<int>& in = net.node_inputs(s.node);
    if (in.size() > 1) {
      adds += static_cast<int64_t>(in.size() - 1) * s.output.numel();
      ++joins;
    } else if (s.summary.rfind("global_avg_pool", 0) == 0 && !in.empty()) {
      const Shape& x = in[0] >= 0 ? net.node_shape(in[0]) : net.input_shape();
      adds += x.numel();
      ++pools;
    }
  }
  if (adds > 0) {
    WeightedLayerShape e;
    e.summary = fmt::format("digital: {} joins, {} global pools", joins, pools);
    e.elementwise_adds = adds;
    out.push_back(e);
  }
  return out;
}

std::vector<WeightedLayerShape> LayerShapesOf(const ConfigNode& model, int64_t c, int64_t h,
                                              int64_t w, int classes) {
  std::vector<WeightedLayerShape> out;
  const std::string impl = model.GetString("impl");
  if (impl == "graph") {
    auto m = Registry<Model>::CreateFrom(model);
    const ShapesOnlyBuild shapes_only;
    const Shape in(std::vector<int64_t>{h, w, c});
    Network net(m->MakeGraph(in, classes), in, 1);
    return LayerShapesOfNetwork(net);
  }
  if (impl == "mlp") {
    const std::vector<int64_t> widths = model.At("layers").AsIntList();
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
      out.push_back({fmt::format("linear {}->{}", widths[i], widths[i + 1]), widths[i],
                     widths[i + 1], 1});
    }
    return out;
  }
  if (impl != "sequential") {
    throw ConfigError(model.Where() + ": cost from shapes knows models mlp, sequential and "
                      "graph, not '" +
                      impl + "' (a model that lists its weighted layers' shapes can be added)");
  }
  bool flat = false;
  for (const auto& l : model.At("layers").items()) {
    const std::string li = l.At("impl").AsString();
    if (li == "conv2d") {
      if (flat) throw ConfigError(l.Where() + ": conv2d after flatten");
      const int64_t oc = l.At("out_channels").AsInt(), kk = l.At("kernel").AsInt();
      const int64_t s = IntOr(l, "stride", 1), p = IntOr(l, "padding", 0);
      const int64_t oh = Out(h, kk, s, p), ow = Out(w, kk, s, p);
      if (oh < 1 || ow < 1) throw ConfigError(l.Where() + ": the kernel does not fit the input");
      out.push_back({fmt::format("conv {}x{} {}->{} @{}x{}", kk, kk, c, oc, oh, ow), c * kk * kk,
                     oc, oh * ow});
      c = oc;
      h = oh;
      w = ow;
    } else if (li == "max_pool2d" || li == "avg_pool2d") {
      const int64_t kk = l.At("kernel").AsInt();
      const int64_t s = IntOr(l, "stride", kk), p = IntOr(l, "padding", 0);
      h = Out(h, kk, s, p);
      w = Out(w, kk, s, p);
      if (h < 1 || w < 1) throw ConfigError(l.Where() + ": the window does not fit the input");
    } else if (li == "flatten") {
      c = c * h * w;
      h = w = 1;
      flat = true;
    } else if (li == "linear") {
      const int64_t of = l.At("out_features").AsInt();
      const int64_t in = c * h * w;
      out.push_back({fmt::format("linear {}->{}", in, of), in, of, 1});
      c = of;
      h = w = 1;
      flat = true;
    } else if (li != "relu" && li != "batch_norm" && li != "dropout") {
      throw ConfigError(l.Where() + ": layer '" + li + "' has no shape rule for cost from shapes");
    }
  }
  return out;
}

const std::vector<std::string>& BuiltinNetworkNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& b : kBuiltins) n.push_back(b.name);
    return n;
  }();
  return names;
}

std::vector<WeightedLayerShape> BuiltinNetwork(const std::string& name) {
  for (const auto& b : kBuiltins) {
    if (name != b.name) continue;
    ConfigNode model = ConfigNode::Map();
    model.Set("impl", ConfigNode::Scalar("sequential"));
    model.Set("layers", ParseYaml(b.yaml, std::string("network ") + b.name));
    model.SetPaths(std::string("network ") + b.name);
    return LayerShapesOf(model, b.c, b.h, b.w);
  }
  const std::vector<std::string> presets = ModelPresetNames();
  if (std::find(presets.begin(), presets.end(), name) != presets.end()) {
    const ShapesOnlyBuild shapes_only;  // the weights are never read: skip drawing them
    Network net = BuildPresetNetwork(name);
    return LayerShapesOfNetwork(net);
  }
  std::vector<std::string> all = BuiltinNetworkNames();
  all.insert(all.end(), presets.begin(), presets.end());
  std::string known;
  for (const auto& n : all) known += (known.empty() ? "" : ", ") + n;
  throw ConfigError("--network: unknown network '" + name + "'" + DidYouMean(name, all) +
                    " (known: " + known +
                    ", or 'model': the config's own model)");
}

NetworkCost PriceNetwork(const ConfigNode& config, const CostModel& model,
                         const std::vector<WeightedLayerShape>& layers, const NetworkSparsity& sp,
                         const OperatingPoint& op) {
  const ConfigNode* block = config.At("pim").Find("macro");
  if (block == nullptr || block->IsNull()) throw ConfigError("pim.macro: cost needs a macro");
  ConfigNode merged = *block;
  merged.SetPaths("pim.macro");
  std::unique_ptr<Macro> probe = Registry<Macro>::CreateFrom(merged);
  model.CheckCovers(probe->Counters(), "cost.impl");
  const MacroSpec& spec = probe->spec();
  const HardwareParams hw0 = probe->HardwareParams();
  const double rows = static_cast<double>(spec.rows);
  // Weight columns one array holds (a weight spans `slices` x `polarities` bit lines).
  const int64_t per_array = std::max<int64_t>(
      1, static_cast<int64_t>(static_cast<double>(spec.cols) /
                              (HwParam(hw0, "slices", 1) * HwParam(hw0, "polarities", 1))));
  const uint64_t seed = static_cast<uint64_t>(config.GetInt("seed"));
  constexpr int64_t kVectors = 4;  // input vectors simulated per stripe
  // Stripe counts per (k, columns), one input vector each, shared by the layers of that shape.
  std::map<std::pair<int64_t, int64_t>, std::map<std::string, double>> stripes;
  std::vector<LayerHardware> hw_layers;
  NetworkCost nc;
  for (size_t li = 0; li < layers.size(); ++li) {
    const WeightedLayerShape& L = layers[li];
    if (L.k == 0) {
      // Digital element adds (joins, pooling): priced by every cost model's common part.
      LayerHardware h;
      h.layer = static_cast<int>(li);
      h.summary = L.summary;
      h.hw = hw0;
      h.counts[static_cast<int>(Stage::kForward)].Add("elementwise_adds",
                                                      L.elementwise_adds * L.m);
      hw_layers.push_back(std::move(h));
      continue;
    }
    const int64_t nw = std::min(L.n, per_array);
    auto key = std::make_pair(L.k, nw);
    if (!stripes.count(key)) {
      std::unique_ptr<Macro> macro = Registry<Macro>::CreateFrom(merged);
      const uint64_t base = MixKey(seed, 0x5A4E, static_cast<uint64_t>(L.k),
                                   static_cast<uint64_t>(nw));
      CounterRng wr(MixKey(base, 1)), xr(MixKey(base, 2));
      std::vector<float> wv(static_cast<size_t>(L.k * nw));
      for (int64_t i = 0; i < L.k * nw; ++i) {
        auto b = wr.Block(static_cast<uint64_t>(i));
        wv[i] = CounterRng::ToUnitFloat(b[0]) < sp.weight
                    ? 0.0f
                    : 2.0f * CounterRng::ToUnitFloat(b[1]) - 1.0f;
      }
      std::vector<float> xv(static_cast<size_t>(kVectors * L.k)), yv(kVectors * nw);
      for (int64_t i = 0; i < kVectors * L.k; ++i) {
        auto b = xr.Block(static_cast<uint64_t>(i));
        xv[i] = CounterRng::ToUnitFloat(b[0]) < sp.input
                    ? 0.0f
                    : 0.05f + 0.95f * CounterRng::ToUnitFloat(b[1]);
      }
      RunContext ctx;
      ctx.seed = seed;
      ctx.pool = &DefaultPool();
      ctx.stage = Stage::kUpdate;
      ActionCounts pc;
      macro->Program(ConstMatrixView(wv.data(), L.k, nw, nw), ctx, pc);
      ctx.stage = Stage::kForward;
      ActionCounts c;
      macro->Multiply(ConstMatrixView(xv.data(), kVectors, L.k, L.k),
                      MatrixView{yv.data(), kVectors, nw, nw}, Direction::kForward, ctx, c);
      auto& per = stripes[key];
      for (const auto& [name, v] : c.counts()) per[name] = static_cast<double>(v) / kVectors;
    }
    // The layer: n / nw stripes side by side, m input vectors per sample.
    const double scale = static_cast<double>(L.n) / static_cast<double>(nw) *
                         static_cast<double>(L.m);
    LayerHardware h;
    h.layer = static_cast<int>(li);
    h.summary = L.summary;
    h.hw = hw0;
    const double arrays = std::ceil(static_cast<double>(L.k) / rows) *
                          std::ceil(static_cast<double>(L.n) / static_cast<double>(per_array));
    h.hw["arrays_used"] = arrays;
    nc.arrays_needed += arrays;
    nc.layer_arrays.push_back(arrays);
    for (const auto& [name, v] : stripes[key]) {
      h.counts[static_cast<int>(Stage::kForward)].Add(
          name, static_cast<int64_t>(std::llround(v * scale)));
    }
    hw_layers.push_back(std::move(h));
  }
  // As many chips as the weights need (weight-stationary, Neural-PIM's chip-level comparison):
  // every layer computes on its own arrays.
  nc.arrays_per_chip = HwParam(hw0, "arrays_total", 1);
  nc.chips = std::max(1.0, std::ceil(nc.arrays_needed / nc.arrays_per_chip));
  for (auto& h : hw_layers) h.hw["arrays_total"] = nc.chips * nc.arrays_per_chip;
  nc.report = BuildCostReport(model, hw_layers, op, RunShape{});
  nc.area_mm2 = nc.chips * model.ChipAreaMm2(hw0);
  nc.energy_per_inference_uj = nc.report.energy_pj * 1e-6;
  nc.latency_s = nc.report.seconds;
  const double hz = op.frequency_mhz * 1e6;
  for (const auto& it : nc.report.items) nc.interval_s = std::max(nc.interval_s, it.cycles / hz);
  nc.inferences_per_s = nc.interval_s > 0 ? 1.0 / nc.interval_s : 0;
  nc.inferences_per_s_mm2 = nc.area_mm2 > 0 ? nc.inferences_per_s / nc.area_mm2 : 0;
  nc.ops_per_inference = nc.report.ops;
  return nc;
}

std::string NetworkCost::ToTable() const {
  std::ostringstream o;
  o << fmt::format("  {:<34} {:>10} {:>8} {:>12} {:>12}\n", "layer", "MACs", "arrays",
                   "energy (uJ)", "time (us)");
  const double hz = report.op.frequency_mhz * 1e6;
  for (size_t i = 0; i < report.items.size(); ++i) {
    const auto& it = report.items[i];
    const std::string arrays =
        i < layer_arrays.size() ? fmt::format("{:.0f}", layer_arrays[i]) : std::string("-");
    o << fmt::format("  {:<34} {:>10.4g} {:>8} {:>12.4g} {:>12.4g}\n", it.summary, it.macs,
                     arrays, it.EnergyPj() * 1e-6, it.cycles / hz * 1e6);
  }
  o << fmt::format("  energy per inference {:.4g} uJ ({:.4g} GOP, {:.4g} TOPS/W)\n",
                   energy_per_inference_uj, ops_per_inference * 1e-9, report.tops_per_watt);
  {
    // Energy by component, largest first.
    std::vector<std::pair<double, std::string>> parts;
    for (const auto& [name, pj] : report.EnergyByComponent()) parts.push_back({pj, name});
    std::sort(parts.rbegin(), parts.rend());
    o << "  components";
    for (const auto& [pj, name] : parts) {
      if (pj <= 0 || report.energy_pj <= 0) continue;
      o << fmt::format("  {} {:.1f}%", name, 100 * pj / report.energy_pj);
    }
    o << "\n";
  }
  o << fmt::format("  latency {:.4g} us (layers in turn); layer-pipelined interval {:.4g} us\n",
                   latency_s * 1e6, interval_s * 1e6);
  o << fmt::format("  arrays {:.0f} needed, {:.0f} per chip: {:.0f} chip(s), {:.4g} mm2\n",
                   arrays_needed, arrays_per_chip, chips, area_mm2);
  o << fmt::format("  throughput {:.4g} inferences/s, {:.4g} inferences/s/mm2 at equal area\n",
                   inferences_per_s, inferences_per_s_mm2);
  return o.str();
}

std::string NetworkCost::ToJson() const {
  nlohmann::ordered_json j;
  auto fig = [](double v, const char* unit) {
    return nlohmann::ordered_json{{"value", v}, {"unit", unit}};
  };
  j["energy_per_inference"] = fig(energy_per_inference_uj, "uJ");
  j["ops_per_inference"] = fig(ops_per_inference, "op");
  j["tops_per_watt"] = fig(report.tops_per_watt, "TOPS/W");
  j["latency"] = fig(latency_s, "s");
  j["interval"] = fig(interval_s, "s");
  j["arrays_needed"] = fig(arrays_needed, "arrays");
  j["arrays_per_chip"] = fig(arrays_per_chip, "arrays");
  j["chips"] = fig(chips, "chips");
  j["area"] = fig(area_mm2, "mm2");
  j["inferences_per_s"] = fig(inferences_per_s, "1/s");
  j["inferences_per_s_mm2"] = fig(inferences_per_s_mm2, "1/(s mm2)");
  return j.dump(2);
}

}  // namespace pim
