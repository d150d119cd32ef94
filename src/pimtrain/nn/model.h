// Model role (a recipe that makes the layer list) and Network (the built layers + buffers).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/nn/layer.h"

namespace pim {

// One node of a graph model: a layer, its name and the nodes it reads (-1: the network input).
// Nodes are in topological order (a node reads only earlier ones); the last is the output.
struct GraphNode {
  std::string name;
  std::unique_ptr<Layer> layer;
  std::vector<int> inputs;
  std::string where;  // config location, for messages
};
using ModelGraph = std::vector<GraphNode>;

// out = ((parts[0] + parts[1]) + parts[2]) + ... per element, in that order whatever the thread
// count: the error of a tensor read by several nodes (Network::GatherError, and the
// data-parallel step's shards). out is sized already; at least two parts.
void SumErrorsInOrder(const std::vector<const float*>& parts, Tensor& out, const StepContext& ctx);

class Model {
 public:
  static constexpr const char* kRoleName = "model";
  virtual ~Model() = default;
  // The layers for samples of `input` shape and `num_classes` outputs. ConfigError if the
  // recipe cannot fit (e.g. an MLP whose first width is not the input size).
  virtual std::vector<std::unique_ptr<Layer>> MakeLayers(const Shape& input,
                                                         int num_classes) const = 0;
  // The model as a graph; stacks (the default) are a chain of MakeLayers' layers.
  virtual ModelGraph MakeGraph(const Shape& input, int num_classes) const;
  // Whether MakeGraph is more than a chain (graph models).
  virtual bool is_graph() const { return false; }
};

// A chain: node i reads node i - 1 (node 0 the input), named by index.
ModelGraph ChainGraph(std::vector<std::unique_ptr<Layer>> layers);

// A built network (a stack, or a graph of named nodes) and its activation/error buffers.
// Buffers are indexed by node: activation(i + 1) is node i's output and error(i + 1) the loss
// gradient at it; index 0 is the network input. In a stack node i reads node i - 1, so
// activation(i) is also layer i's input, as the training algorithms written for stacks assume.
class Network {
 public:
  // Builds every layer; layer i is initialized from MixKey(seed, i).
  Network(std::vector<std::unique_ptr<Layer>> layers, const Shape& input, uint64_t seed);
  // Builds a graph (ChainGraph of a stack gives the same network as the constructor above).
  // ConfigError naming the node when a layer does not fit its input shapes or a node feeds
  // nothing.
  Network(ModelGraph graph, const Shape& input, uint64_t seed);

  int size() const { return static_cast<int>(layers_.size()); }
  Layer& layer(int i) { return *layers_[i]; }
  const Layer& layer(int i) const { return *layers_[i]; }
  const Shape& output_shape() const { return output_shape_; }
  // Whether some node reads anything but the node before it (or fans out).
  bool is_graph() const { return is_graph_; }
  const std::string& node_name(int i) const { return names_[i]; }
  const std::vector<int>& node_inputs(int i) const { return inputs_[i]; }
  // Per-sample shapes: of node i's output, and of the network input.
  const Shape& node_shape(int i) const { return shapes_[i + 1]; }
  const Shape& input_shape() const { return shapes_[0]; }

  // FP through every node in order; returns the logits (the last node's output). after_node(i),
  // when given, runs right after node i's FP, while its output is still in cache (the numeric
  // guard's scan).
  const Tensor& Forward(const Tensor& x, const StepContext& ctx,
                        const std::function<void(int)>& after_node = {});
  const Tensor& activation(int i) const { return acts_[i]; }
  Tensor& error(int i) { return errs_[i]; }  // error(i + 1): dL/d(output of node i)

  // Backward through node i, for the training algorithms (top node first):
  // GatherError(i) makes error(i + 1) the sum of the errors node i's consumers propagated to it
  // (in consumer order, then input slot: the same sums at any thread count); a no-op in a stack.
  void GatherError(int i, const StepContext& ctx);
  // Whether node i's BP feeds anything (it reads at least one node; in a stack: i > 0).
  bool PropagatesError(int i) const;
  // BP of node i from error(i + 1) into the error buffers of the nodes it reads.
  void PropagateError(int i, const StepContext& ctx);
  // The tensors PropagateError(i) wrote (for finiteness checks).
  std::vector<const Tensor*> PropagatedErrors(int i) const;

  std::vector<Parameter*> Parameters();
  std::string Summary() const;
  int64_t ForwardMacsPerSample() const;

 private:
  void Build(const Shape& input, uint64_t seed);
  Tensor* ErrorSlot(int node, int slot);

  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<std::string> names_;
  std::vector<std::string> wheres_;
  std::vector<std::vector<int>> inputs_;  // per node: the nodes it reads (-1: network input)
  // Per node: the (consumer, slot) pairs reading it, in consumer order.
  std::vector<std::vector<std::pair<int, int>>> consumers_;
  std::vector<std::vector<Tensor>> edge_errs_;  // [node][slot], used where the producer fans out
  bool is_graph_ = false;
  Shape output_shape_;
  std::vector<Shape> shapes_;  // shapes_[0] = input, shapes_[i + 1] = node i's output
  std::vector<Tensor> acts_;  // acts_[0] = input; acts_[i + 1] = output of node i
  std::vector<Tensor> errs_;
  Tensor input_error_;  // sink for errors at the network input (never read)
};

}  // namespace pim
