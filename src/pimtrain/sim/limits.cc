// Resource estimate: the model config walked layer by layer over the data's sample shape (graph
// models: read from the built network).
#include "pimtrain/sim/limits.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <new>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/model.h"

namespace pim {
namespace {

constexpr double kFloat = 4;  // bytes of an fp32 value

double Numel(const std::vector<double>& shape) {
  double n = 1;
  for (double d : shape) n *= d;
  return n;
}

// Accumulates one layer after another: per-sample output sizes, parameters, forward MACs.
struct Walk {
  std::vector<double> shape;  // per-sample shape entering the next layer
  double parameters = 0;
  double buffers = 0;              // non-trainable state (batch-norm statistics)
  double outputs_per_sample = 0;   // sum of every layer's output size
  double macs_per_sample = 0;
  bool complete = true;
  std::string stopped_at;

  void Stop(const ConfigNode& where, const std::string& why) {
    if (!complete) return;
    complete = false;
    stopped_at = where.Where() + " (" + why + ")";
  }

  void Output(std::vector<double> s) {
    shape = std::move(s);
    outputs_per_sample += Numel(shape);
  }

  // A pooling or convolution window over (H, W, C): the output height and width, or false
  // when the window does not fit (Build reports that as a ConfigError of its own).
  bool Window(double k, double stride, double pad, double& oh, double& ow) const {
    if (shape.size() != 3 || shape[0] + 2 * pad < k || shape[1] + 2 * pad < k) return false;
    oh = std::floor((shape[0] + 2 * pad - k) / stride) + 1;
    ow = std::floor((shape[1] + 2 * pad - k) / stride) + 1;
    return true;
  }

  void Linear(double out, bool bias) {
    const double in = Numel(shape);
    parameters += in * out + (bias ? out : 0);
    macs_per_sample += in * out;
    Output({out});
  }

  // One layer block of a sequential model.
  void Layer(const ConfigNode& block) {
    if (!complete) return;
    const std::string impl = block.GetString("impl");
    if (impl == "flatten") {
      Output({Numel(shape)});
    } else if (impl == "linear") {
      Linear(static_cast<double>(block.GetInt("out_features")), block.GetBool("bias"));
    } else if (impl == "conv2d") {
      const double k = static_cast<double>(block.GetInt("kernel"));
      const double oc = static_cast<double>(block.GetInt("out_channels"));
      double oh = 0, ow = 0;
      if (!Window(k, static_cast<double>(block.GetInt("stride")),
                  static_cast<double>(block.GetInt("padding")), oh, ow)) {
        return Stop(block, "window does not fit");
      }
      const double rows = k * k * shape[2];  // im2col reduction length
      parameters += rows * oc + (block.GetBool("bias") ? oc : 0);
      macs_per_sample += oh * ow * rows * oc;
      Output({oh, ow, oc});
    } else if (impl == "max_pool2d" || impl == "avg_pool2d") {
      const double k = static_cast<double>(block.GetInt("kernel"));
      const ConfigNode* stride = block.Find("stride");
      const double s = stride != nullptr && !stride->IsNull() ? static_cast<double>(stride->AsInt())
                                                             : k;
      double oh = 0, ow = 0;
      if (!Window(k, s, static_cast<double>(block.GetInt("padding")), oh, ow)) {
        return Stop(block, "window does not fit");
      }
      Output({oh, ow, shape[2]});
    } else if (impl == "relu" || impl == "dropout") {
      Output(shape);
    } else if (impl == "batch_norm") {
      const double c = shape.empty() ? 0 : shape.back();
      parameters += 2 * c;
      buffers += 2 * c;
      Output(shape);
    } else {
      Stop(block, "layer '" + impl + "' not known to the estimator");
    }
  }
};

// Optimizer state tensors per parameter: SGD keeps a velocity, Adam two moments.
double OptimizerStatesPerParameter(const ConfigNode& optimizer) {
  const std::string impl = optimizer.GetString("impl");
  if (impl == "sgd") return 1;
  if (impl == "adam") return 2;
  return 0;  // unknown: a lower bound
}

std::string Sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2g", v);
  return buf;
}

// The cgroup (v2) memory limit of the process's container, 0 if none.
double CgroupLimitBytes() {
  std::ifstream in("/sys/fs/cgroup/memory.max");
  std::string text;
  if (!(in >> text) || text == "max") return 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  return end != text.c_str() && v > 0 ? v : 0;
}

}  // namespace

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) {
    bytes /= 1024;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

ResourceEstimate EstimateResources(const ConfigNode& config, const LoadedData& data) {
  ResourceEstimate r;
  const ConfigNode& model = config.At("model");
  const ConfigNode& train = config.At("train");

  Walk walk;
  for (int64_t d : data.sample_shape.dims()) walk.shape.push_back(static_cast<double>(d));
  const double input_per_sample = Numel(walk.shape);
  double edge_errors_per_sample = 0;  // graphs: errors kept per consumer of a fanned-out node
  const std::string impl = model.GetString("impl");
  if (impl == "mlp") {
    // The same stack Mlp::MakeLayers builds: flatten, then linear (+ batch_norm, relu,
    // dropout between them).
    std::vector<int64_t> widths = model.At("layers").AsIntList();
    walk.Output({input_per_sample});
    for (size_t i = 1; i < widths.size(); ++i) {
      walk.Linear(static_cast<double>(widths[i]), true);
      if (i + 1 == widths.size()) break;
      const double w = static_cast<double>(widths[i]);
      int extra = (model.GetString("activation") == "relu" ? 1 : 0) +
                  (model.GetDouble("dropout") > 0 ? 1 : 0);
      if (model.GetBool("batch_norm")) {
        walk.parameters += 2 * w;
        walk.buffers += 2 * w;
        ++extra;
      }
      walk.outputs_per_sample += extra * w;
    }
  } else if (impl == "sequential") {
    for (const auto& block : model.At("layers").items()) walk.Layer(block);
  } else if (impl == "graph") {
    // A graph's nodes (residual and attention blocks expanded, shapes through fan-out, add and
    // concat) are read from the built network: its parameters are allocated here once, a small
    // part of a run's memory beside the activations.
    auto m = Registry<Model>::Create(model);
    std::unique_ptr<Network> built;
    try {
      built = std::make_unique<Network>(m->MakeGraph(data.sample_shape, data.num_classes),
                                        data.sample_shape, 0);
    } catch (const std::bad_alloc&) {
      throw ConfigError(model.Where() + ": the graph model's parameters do not fit in memory "
                        "(allocation failed while sizing it); use a smaller model");
    }
    Network& net = *built;
    std::vector<int> consumers(net.size(), 0);
    for (int i = 0; i < net.size(); ++i) {
      Layer& l = net.layer(i);
      for (Parameter* p : l.Parameters()) walk.parameters += static_cast<double>(p->value.numel());
      for (auto& [name, t] : l.Buffers()) walk.buffers += static_cast<double>(t->numel());
      walk.outputs_per_sample += static_cast<double>(net.node_shape(i).numel());
      walk.macs_per_sample += static_cast<double>(l.ForwardMacsPerSample());
      for (int j : net.node_inputs(i)) {
        if (j >= 0) ++consumers[j];
      }
    }
    // A node read by k > 1 consumers keeps one error per consumer besides their sum.
    for (int i = 0; i < net.size(); ++i) {
      if (consumers[i] > 1) {
        edge_errors_per_sample += consumers[i] * static_cast<double>(net.node_shape(i).numel());
      }
    }
  } else {
    walk.Stop(model, "model '" + impl + "' not known to the estimator");
  }

  const double n_train = static_cast<double>(data.train.size());
  const double n_test = static_cast<double>(data.test.size());
  const double batch = std::min(static_cast<double>(train.GetInt("batch_size")), n_train);
  const double eval_batch =
      std::min(static_cast<double>(train.GetInt("eval_batch_size")), std::max(1.0, n_test));

  r.parameters = walk.parameters;
  r.model_bytes = kFloat * (walk.parameters * (2 + OptimizerStatesPerParameter(
                                                        train.At("optimizer"))) +
                            walk.buffers);
  // The network keeps its input and every layer's output at the largest batch it has run
  // (training or evaluation), and an error of each at the training batch.
  const double per_sample = input_per_sample + walk.outputs_per_sample;
  r.activation_bytes = kFloat * (per_sample * (std::max(batch, eval_batch) + batch) +
                                 edge_errors_per_sample * batch);
  r.data_bytes = kFloat * (static_cast<double>(data.train.images.numel()) +
                           static_cast<double>(data.test.images.numel()) + n_train + n_test);
  r.forward_macs_per_sample = walk.macs_per_sample;
  r.macs_per_epoch = walk.macs_per_sample * (3 * n_train + n_test);
  r.complete = walk.complete;
  r.stopped_at = walk.stopped_at;
  return r;
}

std::shared_ptr<const Schema> LimitsSchema() {
  static const auto schema = [] {
    auto s = std::make_shared<Schema>();
    s->Add(Param::Float("max_memory_bytes").Default(0.0).Range(0, 1e21).Unit("bytes")
               .Doc("refuse runs estimated to need more memory (0: physical memory, capped "
                    "by ulimit and the cgroup limit)"));
    s->Add(Param::Float("max_macs_per_epoch").Default(1e15).Range(0, 1e30).Unit("MACs")
               .Doc("refuse runs whose epoch needs more multiply-accumulates (FP, BP, GC over "
                    "the training set plus evaluation; 0: no limit)"));
    return std::shared_ptr<const Schema>(s);
  }();
  return schema;
}

double AvailableMemoryBytes() {
  double bytes = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) *
                 static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  for (int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    struct rlimit rl;
    if (::getrlimit(resource, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
      bytes = std::min(bytes, static_cast<double>(rl.rlim_cur));
    }
  }
  const double cgroup = CgroupLimitBytes();
  if (cgroup > 0) bytes = std::min(bytes, cgroup);
  return bytes;
}

void CheckResourceLimits(const ConfigNode& config, const LoadedData& data) {
  const ConfigNode& limits = config.At("limits");
  const ResourceEstimate r = EstimateResources(config, data);
  const std::string where = config.At("model").Where();

  const double max_bytes = limits.GetDouble("max_memory_bytes");
  const double available = max_bytes > 0 ? max_bytes : AvailableMemoryBytes();
  if (r.total_bytes() > available) {
    throw ConfigError(
        where + ": the run needs at least " + HumanBytes(r.total_bytes()) + " of memory (model " +
        HumanBytes(r.model_bytes) + " for " + Sci(r.parameters) +
        " parameters with gradients and optimizer state, activations " +
        HumanBytes(r.activation_bytes) + ", data " + HumanBytes(r.data_bytes) + ") but " +
        HumanBytes(available) +
        (max_bytes > 0 ? " is allowed by limits.max_memory_bytes"
                       : " is available (limits.max_memory_bytes sets another limit)") +
        "; use a smaller model or batch");
  }
  const double max_macs = limits.GetDouble("max_macs_per_epoch");
  if (max_macs > 0 && r.macs_per_epoch > max_macs) {
    throw ConfigError(where + ": one epoch needs about " + Sci(r.macs_per_epoch) +
                      " multiply-accumulates (3 x " + Sci(r.forward_macs_per_sample) +
                      " per sample x " + std::to_string(data.train.size()) +
                      " training samples + evaluation of " + std::to_string(data.test.size()) +
                      "), more than limits.max_macs_per_epoch = " + Sci(max_macs) +
                      "; raise that limit to run it anyway");
  }
}

}  // namespace pim
