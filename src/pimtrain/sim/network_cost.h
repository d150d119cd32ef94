// Cost without data: a network priced from its weighted layers' shapes alone (no data set), on a
// preset's chip, with stated activation and weight sparsity (docs/cost.md, "Networks from
// shapes").
#pragma once

#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/cost/report.h"
#include "pimtrain/nn/model.h"

namespace pim {

// One weighted layer as the arrays see it: a k x n weight matrix (k = fan-in: in_channels x
// kernel^2 for a convolution), multiplied by m input vectors per sample (output positions).
struct WeightedLayerShape {
  std::string summary;  // "conv 3x3 128->256 @16x16"
  int64_t k = 0, n = 0, m = 1;
  // A layer without weights that the chip's digital units compute (k = n = 0): element adds
  // per sample (a residual join's inputs - 1 per output element; global average pooling's
  // inputs per output).
  int64_t elementwise_adds = 0;
};

// The weighted layers of a built network (a graph model: residual blocks, strided 1x1
// shortcuts, global pooling), in node order, then one entry with the element adds of its joins
// and global pooling (when there are any).
std::vector<WeightedLayerShape> LayerShapesOfNetwork(Network& net);

// The weighted layers of a model config (impl mlp or sequential; any model that lists its
// weighted layers' shapes can be added here) for samples of c x h x w. ConfigError naming the
// key when a layer cannot be placed.
std::vector<WeightedLayerShape> LayerShapesOf(const ConfigNode& model, int64_t c, int64_t h,
                                              int64_t w, int classes = 10);

// Benchmark networks at their published shapes: vgg8 (NeuroSim's, 32x32x3, 10 classes), vgg16
// and alexnet (224x224x3 / 227x227x3, 1000 classes), mlp (784-256-128-10) and cnn (configs/
// cnn.yaml at 28x28x1); and every model preset (presets/models/NAME.yaml: resnet18, resnet50,
// ... at the input and classes it names), built without data. ConfigError listing the names
// for another one.
std::vector<WeightedLayerShape> BuiltinNetwork(const std::string& name);
const std::vector<std::string>& BuiltinNetworkNames();

// The chip-level figures of one inference, the way Neural-PIM compares chips: every layer on
// its own arrays (weight-stationary), as many chips as the weights need.
struct NetworkCost {
  CostReport report;              // one inference, layers one after another
  double energy_per_inference_uj = 0;
  double latency_s = 0;           // one inference through every layer in turn
  double interval_s = 0;          // the slowest layer: the layer-pipelined interval
  double arrays_needed = 0, arrays_per_chip = 0;
  std::vector<double> layer_arrays;  // arrays each weighted layer occupies, in layer order
  double chips = 0;               // ceil(arrays_needed / arrays_per_chip)
  double area_mm2 = 0;            // chips x chip area
  double inferences_per_s = 0;    // 1 / interval
  double inferences_per_s_mm2 = 0;  // throughput at equal area
  double ops_per_inference = 0;
  std::string ToTable() const;
  std::string ToJson() const;
};

struct NetworkSparsity {
  double input = 0.5;   // fraction of zero activations (post-ReLU)
  double weight = 0.0;  // fraction of zero weights
};

// Prices `layers` on the chip of `config` (pim.macro and cost): each distinct layer is simulated
// on one column stripe of its arrays (all k rows, one array's worth of weight columns) for a few
// random input vectors of the stated sparsity; the counts scale to the layer's n columns and m
// positions (docs/cost.md).
NetworkCost PriceNetwork(const ConfigNode& config, const CostModel& model,
                         const std::vector<WeightedLayerShape>& layers, const NetworkSparsity& sp,
                         const OperatingPoint& op);

}  // namespace pim
