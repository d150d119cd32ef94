// Network: builds a stack or a graph of layers and runs the forward pass and the graph's BP.
#include <algorithm>
#include <map>

#include "pimtrain/base/rng.h"
#include "pimtrain/nn/model.h"

namespace pim {

void SumErrorsInOrder(const std::vector<const float*>& parts, Tensor& out,
                      const StepContext& ctx) {
  PIM_CHECK_MSG(parts.size() >= 2, "a fan-out sum needs two parts or more");
  float* o = out.data();
  // ((p0 + p1) + p2) + ... per element, one part at a time (vectorized over the elements).
  PoolOf(ctx).ParallelFor(out.numel(), 16384, [&](int64_t b, int64_t e) {
    const float* p0 = parts[0];
    const float* p1 = parts[1];
    for (int64_t t = b; t < e; ++t) o[t] = p0[t] + p1[t];
    for (size_t p = 2; p < parts.size(); ++p) {
      const float* q = parts[p];
      for (int64_t t = b; t < e; ++t) o[t] += q[t];
    }
  });
}

ModelGraph ChainGraph(std::vector<std::unique_ptr<Layer>> layers) {
  ModelGraph g;
  for (size_t i = 0; i < layers.size(); ++i) {
    GraphNode n;
    n.name = std::to_string(i);
    n.layer = std::move(layers[i]);
    n.inputs = {static_cast<int>(i) - 1};
    g.push_back(std::move(n));
  }
  return g;
}

ModelGraph Model::MakeGraph(const Shape& input, int num_classes) const {
  return ChainGraph(MakeLayers(input, num_classes));
}

Network::Network(std::vector<std::unique_ptr<Layer>> layers, const Shape& input, uint64_t seed)
    : Network(ChainGraph(std::move(layers)), input, seed) {}

Network::Network(ModelGraph graph, const Shape& input, uint64_t seed) {
  const int n = static_cast<int>(graph.size());
  for (int i = 0; i < n; ++i) {
    PIM_CHECK_MSG(graph[i].layer != nullptr, "graph node without a layer");
    for (int j : graph[i].inputs) PIM_CHECK_MSG(j >= -1 && j < i, "graph not in topological order");
    is_graph_ = is_graph_ || graph[i].inputs != std::vector<int>{i - 1};
    layers_.push_back(std::move(graph[i].layer));
    names_.push_back(graph[i].name);
    wheres_.push_back(graph[i].where);
    inputs_.push_back(graph[i].inputs);
  }
  Build(input, seed);
}

void Network::Build(const Shape& input, uint64_t seed) {
  const int n = size();
  shapes_.assign(n + 1, Shape());
  shapes_[0] = input;
  consumers_.assign(n, {});
  for (int i = 0; i < n; ++i) {
    Layer& l = *layers_[i];
    std::vector<Shape> in;
    for (int j : inputs_[i]) in.push_back(shapes_[j + 1]);
    const int want = l.num_inputs();
    const std::string who = wheres_[i].empty() ? "node '" + names_[i] + "'"
                                               : wheres_[i] + " (node '" + names_[i] + "')";
    if ((want > 0 && static_cast<int>(in.size()) != want) ||
        (want < 0 && in.size() < 2)) {
      throw ConfigError(who + ": " + l.Summary().substr(0, l.Summary().find(' ')) + " takes " +
                        (want < 0 ? std::string("2 or more") : std::to_string(want)) +
                        " inputs, got " + std::to_string(in.size()));
    }
    try {
      shapes_[i + 1] = want == 1 ? l.Build(in[0], MixKey(seed, 0x1A7E, i))
                                 : l.BuildInputs(in, MixKey(seed, 0x1A7E, i));
    } catch (const ConfigError& e) {
      if (!is_graph_) throw;
      std::string shapes;
      for (size_t k = 0; k < in.size(); ++k) {
        const int j = inputs_[i][k];
        shapes += (k ? ", " : "") + (j < 0 ? std::string("input") : names_[j]) + " " +
                  in[k].ToString();
      }
      throw ConfigError(std::string(e.what()) + " (node '" + names_[i] + "' reads " + shapes +
                        ")");
    }
    for (size_t k = 0; k < inputs_[i].size(); ++k) {
      if (inputs_[i][k] >= 0) consumers_[inputs_[i][k]].emplace_back(i, static_cast<int>(k));
    }
  }
  for (int i = 0; i + 1 < n; ++i) {
    if (consumers_[i].empty()) {
      throw ConfigError((wheres_[i].empty() ? "" : wheres_[i] + ": ") + "node '" + names_[i] +
                        "' feeds no other node and is not the output (the last node)");
    }
  }
  output_shape_ = shapes_[n];
  // A node's input error is used only by the parameterized layers upstream of it (through the
  // chain of errors); where nothing upstream has parameters nothing reads it.
  std::vector<bool> params_upstream(n, false);
  for (int i = 0; i < n; ++i) {
    bool below = false;
    for (int j : inputs_[i]) below = below || (j >= 0 && params_upstream[j]);
    layers_[i]->set_input_error_needed(below);
    params_upstream[i] = below || !layers_[i]->Parameters().empty();
  }
  acts_.resize(n + 1);
  errs_.resize(n + 1);
  edge_errs_.resize(n);
  for (int i = 0; i < n; ++i) edge_errs_[i].resize(inputs_[i].size());
}

const Tensor& Network::Forward(const Tensor& x, const StepContext& ctx,
                               const std::function<void(int)>& after_node) {
  acts_[0] = x;
  std::vector<const Tensor*> xs;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& in = inputs_[i];
    if (in.size() == 1 && layers_[i]->num_inputs() == 1) {
      layers_[i]->Forward(acts_[in[0] + 1], acts_[i + 1], ctx);
    } else {
      xs.clear();
      for (int j : in) xs.push_back(&acts_[j + 1]);
      layers_[i]->ForwardInputs(xs, acts_[i + 1], ctx);
    }
    if (after_node) after_node(static_cast<int>(i));
  }
  return acts_.back();
}

Tensor* Network::ErrorSlot(int node, int slot) {
  const int j = inputs_[node][slot];
  if (j < 0) return &input_error_;
  if (!is_graph_ || consumers_[j].size() == 1) return &errs_[j + 1];
  return &edge_errs_[node][slot];
}

void Network::GatherError(int i, const StepContext& ctx) {
  if (!is_graph_ || i + 1 == size() || consumers_[i].size() == 1) return;
  // Fan-out: the sum of the consumers' contributions, in consumer order for every element.
  const auto& cons = consumers_[i];
  Tensor& out = errs_[i + 1];
  out.Resize(acts_[i + 1].shape());
  std::vector<const float*> parts;
  for (const auto& [c, k] : cons) {
    PIM_CHECK_MSG(edge_errs_[c][k].numel() == out.numel(), "graph edge error shape");
    parts.push_back(edge_errs_[c][k].data());
  }
  SumErrorsInOrder(parts, out, ctx);
}

bool Network::PropagatesError(int i) const {
  if (!is_graph_) return i > 0;
  for (int j : inputs_[i]) {
    if (j >= 0) return true;
  }
  return false;
}

void Network::PropagateError(int i, const StepContext& ctx) {
  Layer& l = *layers_[i];
  if (!is_graph_) {
    l.PropagateError(errs_[i + 1], errs_[i], ctx);
    return;
  }
  if (inputs_[i].size() == 1 && l.num_inputs() == 1) {
    l.PropagateError(errs_[i + 1], *ErrorSlot(i, 0), ctx);
    return;
  }
  std::vector<Tensor*> dxs;
  for (size_t k = 0; k < inputs_[i].size(); ++k) dxs.push_back(ErrorSlot(i, static_cast<int>(k)));
  l.PropagateErrorInputs(errs_[i + 1], dxs, ctx);
}

std::vector<const Tensor*> Network::PropagatedErrors(int i) const {
  std::vector<const Tensor*> out;
  if (!is_graph_) {
    out.push_back(&errs_[i]);
    return out;
  }
  for (size_t k = 0; k < inputs_[i].size(); ++k) {
    const int j = inputs_[i][k];
    if (j < 0) continue;
    out.push_back(consumers_[j].size() == 1 ? &errs_[j + 1] : &edge_errs_[i][k]);
  }
  return out;
}

std::vector<Parameter*> Network::Parameters() {
  std::vector<Parameter*> out;
  for (auto& l : layers_)
    for (auto* p : l->Parameters()) out.push_back(p);
  return out;
}

std::string Network::Summary() const {
  std::string s;
  for (size_t i = 0; i < layers_.size(); ++i) {
    s += "  [" + std::to_string(i) + "] ";
    if (is_graph_) {
      std::string in;
      for (int j : inputs_[i]) in += (in.empty() ? "" : ", ") + (j < 0 ? "input" : names_[j]);
      s += names_[i] + " <- " + in + ": ";
    }
    s += layers_[i]->Summary();
    if (is_graph_) s += "  => " + shapes_[i + 1].ToString();
    s += "\n";
  }
  return s;
}

int64_t Network::ForwardMacsPerSample() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l->ForwardMacsPerSample();
  return n;
}

}  // namespace pim
