// `graph` model: named nodes with their inputs; residual and self-attention blocks expand into
// nodes; model presets (presets/models/NAME.yaml).
#include "pimtrain/nn/models/graph.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/cost/tech.h"

namespace pim {
namespace {

const Schema& ResidualSchema() {
  static const Schema s = [] {
    Schema r;
    r.Add(Param::String("name").Optional().Doc("the block's name (its output node)"));
    r.Add(Param::Any("inputs").Optional().Doc("the node the block reads (default: the previous)"));
    r.Add(Param::Int("repeat").Default(1).Range(1, 1000).Doc("copies of the block, chained"));
    r.Add(Param::Any("body").Doc("the residual branch: a list of nodes, chained"));
    r.Add(Param::Any("shortcut").Default("[]")
              .Doc("the shortcut branch (e.g. a strided 1x1 conv2d); [] = identity"));
    r.Add(Param::Enum("activation", {"relu", "gelu", "none"}).Default("relu")
              .Doc("applied after the addition"));
    return r;
  }();
  return s;
}

const Schema& AttentionSchema() {
  static const Schema s = [] {
    Schema a;
    a.Add(Param::String("name").Optional().Doc("the block's name (its output projection)"));
    a.Add(Param::Any("inputs").Optional().Doc("the node the block reads (default: the previous)"));
    a.Add(Param::Int("repeat").Default(1).Range(1, 1000).Doc("copies of the block, chained"));
    a.Add(Param::Int("dim").Range(1, 1 << 20).Doc("model width D (the tokens' last dimension)"));
    a.Add(Param::Int("heads").Default(1).Range(1, 4096).Doc("attention heads (D % heads == 0)"));
    a.Add(Param::Bool("bias").Default(true).Doc("biases on the Q, K, V and output projections"));
    a.Add(Param::Enum("products", {"digital", "macro"}).Default("digital")
              .Doc("where Q K^T and A V run (attention_core)"));
    return a;
  }();
  return s;
}

class Builder {
 public:
  ModelGraph graph;

  // Chains the items of `list`; returns the last node (or `prev` for an empty list).
  int List(const ConfigNode& list, const std::string& prefix, int prev) {
    if (!list.IsList()) {
      throw ConfigError(list.Where() + ": expected a list of nodes, got a " +
                        std::string(list.KindName()));
    }
    for (size_t i = 0; i < list.items().size(); ++i) {
      prev = Item(list.items()[i], prefix, prev, static_cast<int>(i));
    }
    return prev;
  }

 private:
  int Item(const ConfigNode& item, const std::string& prefix, int prev, int index) {
    if (!item.IsMap() || !item.Has("impl")) {
      throw ConfigError(item.Where() + ": a graph node is a map with 'impl' (a layer, residual "
                        "or self_attention), e.g. {impl: relu}");
    }
    const std::string impl = item.GetString("impl");
    const std::string base =
        item.Has("name") ? item.GetString("name") : impl + "_" + std::to_string(index);
    int64_t repeat = 1;
    if (const ConfigNode* r = item.Find("repeat")) repeat = r->AsInt();
    if (repeat < 1) throw ConfigError(item.At("repeat").Where() + ": must be at least 1");
    for (int64_t k = 0; k < repeat; ++k) {
      const std::string name =
          prefix + base + (repeat > 1 ? "." + std::to_string(k + 1) : std::string());
      const bool block = impl == "residual" || impl == "self_attention";
      const int in = k == 0 && block ? Inputs(item, prefix, prev) : prev;
      prev = One(item, impl, name, in, k == 0 ? prefix : std::string("\x01"));
    }
    return prev;
  }

  // The node an item reads: its `inputs` (one name), else the previous node.
  int Inputs(const ConfigNode& item, const std::string& prefix, int prev) {
    const ConfigNode* in = item.Find("inputs");
    if (in == nullptr) return prev;
    std::vector<int> ids = Resolve(*in, prefix);
    if (ids.size() != 1) {
      throw ConfigError(in->Where() + ": a block reads one node, got " +
                        std::to_string(ids.size()));
    }
    return ids[0];
  }

  std::vector<int> Resolve(const ConfigNode& in, const std::string& prefix) {
    std::vector<std::string> names;
    if (in.IsScalar()) {
      names.push_back(in.AsString());
    } else if (in.IsList()) {
      for (const auto& n : in.items()) names.push_back(n.AsString());
    } else {
      throw ConfigError(in.Where() + ": inputs is a node name or a list of names");
    }
    std::vector<int> out;
    for (const auto& n : names) {
      if (n == "input") {
        out.push_back(-1);
        continue;
      }
      auto it = ids_.find(prefix + n);
      if (it == ids_.end()) it = ids_.find(n);
      if (it == ids_.end()) {
        std::vector<std::string> known;
        for (const auto& [k, v] : ids_) known.push_back(k);
        throw ConfigError(in.Where() + ": no earlier node named '" + n + "'" +
                          DidYouMean(n, known) + " (nodes may read only nodes above them, or "
                          "'input')");
      }
      out.push_back(it->second);
    }
    return out;
  }

  int Add(const std::string& name, std::unique_ptr<Layer> layer, std::vector<int> inputs,
          const std::string& where) {
    if (ids_.count(name)) throw ConfigError(where + ": node name '" + name + "' is used twice");
    GraphNode n;
    n.name = name;
    n.layer = std::move(layer);
    n.inputs = std::move(inputs);
    n.where = where;
    const int id = static_cast<int>(graph.size());
    graph.push_back(std::move(n));
    ids_[name] = id;
    return id;
  }

  std::unique_ptr<Layer> Make(const std::string& yaml, const ConfigNode& at) {
    return Registry<Layer>::CreateFrom(ParseYaml(yaml, at.Where()));
  }

  // `inputs_prefix` resolves a layer's `inputs` ("\x01": a repeat's later copy, which reads the
  // copy before it).
  int One(const ConfigNode& item, const std::string& impl, const std::string& name, int in,
          const std::string& inputs_prefix) {
    if (impl == "residual") {
      const ConfigNode v = ResidualSchema().Validate(item, true);
      const int body = List(v.At("body"), name + ".", in);
      if (body == in) throw ConfigError(v.At("body").Where() + ": the body has no nodes");
      const int shortcut = List(v.At("shortcut"), name + ".shortcut.", in);
      const std::string act = v.GetString("activation");
      const int sum = Add(act == "none" ? name : name + ".add", Make("{impl: add}", item),
                          {body, shortcut}, item.Where());
      if (act == "none") return sum;
      return Add(name, Make("{impl: " + act + "}", item), {sum}, item.Where());
    }
    if (impl == "self_attention") {
      const ConfigNode v = AttentionSchema().Validate(item, true);
      const std::string d = std::to_string(v.GetInt("dim"));
      const std::string bias = v.GetBool("bias") ? "true" : "false";
      const std::string proj = "{impl: linear, over: last, out_features: " + d + ", bias: " +
                               bias + "}";
      const int q = Add(name + ".q", Make(proj, item), {in}, item.Where());
      const int k = Add(name + ".k", Make(proj, item), {in}, item.Where());
      const int val = Add(name + ".v", Make(proj, item), {in}, item.Where());
      const int core = Add(name + ".attend",
                           Make("{impl: attention_core, heads: " +
                                    std::to_string(v.GetInt("heads")) +
                                    ", products: " + v.GetString("products") + "}",
                                item),
                           {q, k, val}, item.Where());
      return Add(name, Make(proj, item), {core}, item.Where());
    }
    // A layer: the item without the node keys is its component block.
    ConfigNode block = item;
    std::vector<int> inputs = {in};
    if (const ConfigNode* ins = item.Find("inputs"); ins != nullptr && inputs_prefix != "\x01") {
      inputs = Resolve(*ins, inputs_prefix);
    }
    block.Erase("name");
    block.Erase("inputs");
    block.Erase("repeat");
    return Add(name, Registry<Layer>::CreateFrom(block), std::move(inputs), item.Where());
  }

  std::map<std::string, int> ids_;
};

class Graph final : public Model {
 public:
  explicit Graph(const ConfigNode& p) : nodes_(p.At("nodes")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Any("nodes").Doc(
        "the nodes, in order: each {impl: LAYER, ..., name: N, inputs: [A, B]} (inputs default "
        "to the node above; 'input' is the data), or a block {impl: residual, body: [...], "
        "shortcut: [...]} / {impl: self_attention, dim: D, heads: H}; the last node is the "
        "output (docs/networks.md)"));
    return s;
  }

  std::vector<std::unique_ptr<Layer>> MakeLayers(const Shape&, int) const override {
    throw UnsupportedError(nodes_.Where() + ": a graph model is not a stack of layers");
  }
  ModelGraph MakeGraph(const Shape&, int) const override { return ExpandGraph(nodes_); }
  bool is_graph() const override { return true; }

 private:
  ConfigNode nodes_;
};

PIM_REGISTER(Model, Graph, "graph",
             "named nodes with inputs: residual additions, concatenation, attention");

}  // namespace

ModelGraph ExpandGraph(const ConfigNode& nodes) {
  Builder b;
  b.List(nodes, "", -1);
  if (b.graph.empty()) throw ConfigError(nodes.Where() + ": the graph has no nodes");
  return std::move(b.graph);
}

std::vector<std::string> ModelPresetNames() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(PresetsDir() + "/models", ec)) {
    if (e.path().extension() == ".yaml") out.push_back(e.path().stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

ModelPreset LoadModelPreset(const std::string& name, const std::string& where) {
  ModelPreset p;
  p.name = name;
  p.path = PresetsDir() + "/models/" + name + ".yaml";
  if (name.find('/') != std::string::npos || !FileExists(p.path)) {
    std::string known;
    for (const auto& n : ModelPresetNames()) known += (known.empty() ? "" : ", ") + n;
    throw IoError(where + ": no model preset '" + name + "'" +
                  DidYouMean(name, ModelPresetNames()) + " (presets/models has: " + known + ")");
  }
  ConfigNode root = LoadYamlFile(p.path);
  root.SetPaths("");
  if (!root.IsMap() || !root.Has("model")) throw ConfigError(p.path + ": no model: block");
  p.model = root.At("model");
  if (const ConfigNode* in = root.Find("input")) {
    std::vector<int64_t> d = in->AsIntList();
    if (d.size() != 3) throw ConfigError(in->Where() + ": input is [height, width, channels]");
    p.input = Shape(d);
  }
  if (const ConfigNode* c = root.Find("classes")) p.classes = static_cast<int>(c->AsInt());
  return p;
}

void ExpandModelPreset(ConfigNode& root) {
  if (!root.IsMap()) return;
  ConfigNode* model = root.Find("model");
  if (model == nullptr || !model->IsMap() || !model->Has("preset")) return;
  const ConfigNode& name = model->At("preset");
  if (model->Has("impl") || model->entries().size() != 1) {
    throw ConfigError(name.Where() + ": a model preset block is just {preset: NAME}");
  }
  ModelPreset p = LoadModelPreset(name.AsString(), name.Where());
  *model = p.model;
}

Network BuildPresetNetwork(const std::string& name, uint64_t seed) {
  ModelPreset p = LoadModelPreset(name, "model preset");
  if (p.input.rank() == 0 || p.classes <= 0) {
    throw ConfigError(p.path + ": a preset built without data needs input: and classes:");
  }
  p.model.SetPaths("model");
  auto model = Registry<Model>::CreateFrom(p.model);
  return Network(model->MakeGraph(p.input, p.classes), p.input, seed);
}

std::vector<LayerShape> LayerShapes(Network& net) {
  std::vector<LayerShape> out;
  for (int i = 0; i < net.size(); ++i) {
    LayerShape s;
    s.node = i;
    s.name = net.node_name(i);
    s.summary = net.layer(i).Summary();
    s.output = net.node_shape(i);
    s.macs_per_sample = net.layer(i).ForwardMacsPerSample();
    if (net.layer(i).matmul() != nullptr && !net.layer(i).Parameters().empty()) {
      const Shape& w = net.layer(i).Parameters()[0]->value.shape();
      s.weight_rows = w[0];
      s.weight_cols = w[1];
      s.vectors_per_sample = s.macs_per_sample / std::max<int64_t>(1, w[0] * w[1]);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace pim
