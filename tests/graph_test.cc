// Graph models: gradients through fan-out, add, concat and attention by finite differences,
// thread bit-identity, validation messages, model presets, attention products on the macro.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/model.h"
#include "pimtrain/nn/models/graph.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

// A graph using every multi-input layer: c1 fans out to three consumers (a residual body, its
// addition and c2), concat joins two branches, a pre-norm self-attention block, a softmax.
constexpr const char* kMixedGraph = R"(
impl: graph
nodes:
- {name: c1, impl: conv2d, out_channels: 4, kernel: 3, padding: 1}
- impl: residual
  name: r1
  activation: gelu
  body: [{impl: conv2d, out_channels: 4, kernel: 3, padding: 1}, {impl: batch_norm},
         {impl: gelu}, {impl: conv2d, out_channels: 4, kernel: 3, padding: 1, bias: false},
         {impl: layer_norm}]
  shortcut: [{impl: conv2d, out_channels: 4, kernel: 1, stride: 1, bias: false},
             {impl: batch_norm}]
- {name: c2, impl: conv2d, out_channels: 3, kernel: 1, inputs: c1}
- {name: cat, impl: concat, inputs: [r1, c2]}
- {name: tok, impl: position_embedding}
- {name: proj, impl: linear, over: last, out_features: 8}
- impl: residual
  name: att
  activation: none
  body: [{impl: layer_norm}, {impl: self_attention, dim: 8, heads: 2}]
- {name: sm, impl: softmax, dim: 0}
- {name: both, impl: add, inputs: [sm, att]}
- {name: pool, impl: global_avg_pool}
- {name: fc, impl: linear, out_features: 3}
)";

Network BuildGraph(const std::string& yaml, const Shape& input, uint64_t seed = 5) {
  ConfigNode node = ParseYaml(yaml, "test");
  node.SetPaths("model");
  auto model = Registry<Model>::CreateFrom(node);
  return Network(model->MakeGraph(input, 3), input, seed);
}

void Fill(Tensor& t, uint64_t key, float scale = 1.0f) {
  CounterRng rng(key);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = scale * (2.0f * rng.Uniform(i) - 1.0f);
}

// One backward pass through the network's BP/GC interface from dL/dlogits = r.
void Backward(Network& net, const Tensor& r, const StepContext& ctx) {
  net.error(net.size()) = r;
  for (int i = net.size() - 1; i >= 0; --i) {
    net.GatherError(i, ctx);
    net.layer(i).ComputeGradient(net.error(i + 1), ctx);
    if (net.PropagatesError(i)) net.PropagateError(i, ctx);
  }
}

double Loss(Network& net, const Tensor& x, const Tensor& r, const StepContext& ctx) {
  const Tensor& y = net.Forward(x, ctx);
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(r[i]) * y[i];
  return s;
}

TEST(GraphTest, GradientsThroughFanOutAddConcatAndAttentionMatchFiniteDifferences) {
  ThreadPool pool(2);
  Network net = BuildGraph(kMixedGraph, Shape{4, 4, 2});
  ASSERT_TRUE(net.is_graph());
  ASSERT_EQ(net.output_shape(), Shape{3});
  StepContext ctx;
  ctx.mode = Mode::kTrain;
  ctx.pool = &pool;
  Tensor x(Shape{2, 4, 4, 2});
  Fill(x, 1);
  Tensor r(Shape{2, 3});
  Fill(r, 2);
  Loss(net, x, r, ctx);
  Backward(net, r, ctx);
  std::vector<Tensor> grads;
  for (Parameter* p : net.Parameters()) grads.push_back(p->grad);
  auto params = net.Parameters();
  ASSERT_GT(params.size(), 10u);
  const float eps = 1e-2f;
  int checked = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    Tensor& v = params[k]->value;
    const int64_t stride = std::max<int64_t>(1, v.numel() / 12);
    for (int64_t i = 0; i < v.numel(); i += stride) {
      const float saved = v[i];
      v[i] = saved + eps;
      const double plus = Loss(net, x, r, ctx);
      v[i] = saved - eps;
      const double minus = Loss(net, x, r, ctx);
      v[i] = saved;
      const double numeric = (plus - minus) / (2.0 * eps);
      const double tol = 2e-3 + 2e-2 * std::max(std::abs(numeric), std::abs(double{grads[k][i]}));
      ASSERT_NEAR(grads[k][i], numeric, tol) << "parameter " << k << " (" << params[k]->name
                                            << ") element " << i;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

std::vector<std::vector<float>> StepAt(int threads) {
  ThreadPool pool(threads);
  Network net = BuildGraph(kMixedGraph, Shape{6, 6, 2});
  StepContext ctx;
  ctx.mode = Mode::kTrain;
  ctx.pool = &pool;
  Tensor x(Shape{37, 6, 6, 2});
  Fill(x, 3);
  Tensor r(Shape{37, 3});
  Fill(r, 4);
  std::vector<std::vector<float>> out;
  const Tensor& y = net.Forward(x, ctx);
  out.emplace_back(y.data(), y.data() + y.numel());
  Backward(net, r, ctx);
  for (Parameter* p : net.Parameters()) {
    out.emplace_back(p->grad.data(), p->grad.data() + p->grad.numel());
  }
  return out;
}

TEST(GraphTest, ForwardAndGradientsAreBitIdenticalAtOneAndTwoThreads) {
  auto one = StepAt(1);
  auto two = StepAt(2);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], two[i]) << "tensor " << i;
}

std::string BuildError(const std::string& yaml, const Shape& input) {
  try {
    BuildGraph(yaml, input);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(GraphTest, ValidationNamesTheNodeAndTheShapes) {
  // A residual block whose body changes the channels without a shortcut conv.
  std::string e = BuildError(R"(
impl: graph
nodes:
- {name: stem, impl: conv2d, out_channels: 4, kernel: 3, padding: 1}
- {impl: residual, name: blk, body: [{impl: conv2d, out_channels: 8, kernel: 3, padding: 1}]}
- {impl: global_avg_pool}
- {impl: linear, out_features: 3}
)",
                             Shape{5, 5, 1});
  EXPECT_NE(e.find("blk.add"), std::string::npos) << e;
  EXPECT_NE(e.find("[5, 5, 8]"), std::string::npos) << e;
  EXPECT_NE(e.find("[5, 5, 4]"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  e = BuildError("{impl: graph, nodes: [{impl: relu}, {impl: add, inputs: [relu_0, nope]}]}",
                 Shape{3});
  EXPECT_NE(e.find("no earlier node named 'nope'"), std::string::npos) << e;
  EXPECT_NE(e.find("model.nodes[1]"), std::string::npos) << e;
  e = BuildError("{impl: graph, nodes: [{name: a, impl: relu}, {name: a, impl: relu}]}", Shape{3});
  EXPECT_NE(e.find("'a' is used twice"), std::string::npos) << e;
  e = BuildError(
      "{impl: graph, nodes: [{name: a, impl: relu}, {name: b, impl: relu, inputs: input}]}",
      Shape{3});
  EXPECT_NE(e.find("node 'a' feeds no other node"), std::string::npos) << e;
  e = BuildError("{impl: graph, nodes: [{impl: residual, body: [{impl: relu}], shortkut: []}]}",
                 Shape{3});
  EXPECT_NE(e.find("shortkut"), std::string::npos) << e;
  e = BuildError("{impl: graph, nodes: [{impl: self_attention, dim: 6, heads: 4}]}", Shape{5, 6});
  EXPECT_NE(e.find("not divisible by 4 heads"), std::string::npos) << e;
  // A multi-input layer in a stack.
  e = BuildError("{impl: sequential, layers: [{impl: add}]}", Shape{3});
  EXPECT_NE(e.find("add takes 2 or more inputs"), std::string::npos) << e;
}

TEST(GraphTest, BadGraphConfigExitsWithTwoAndOneLine) {
  testing::TempDir dir;
  const std::string cfg = dir.File("bad.yaml");
  WriteFileAtomic(cfg, R"(
data: {impl: synthetic, height: 6, width: 6, channels: 2, train_size: 8, test_size: 4}
model:
  impl: graph
  nodes:
  - {name: a, impl: conv2d, out_channels: 4, kernel: 3}
  - {name: b, impl: conv2d, out_channels: 4, kernel: 1, inputs: input}
  - {name: sum, impl: add, inputs: [a, b]}
  - {impl: flatten}
  - {impl: linear, out_features: 10}
)");
  auto r = testing::RunCommand(std::string(PIMTRAIN_CLI) + " train " + cfg + " --out " +
                               dir.File("run"));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("'sum'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[4, 4, 4]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[6, 6, 4]"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(FileExists(dir.File("run") + "/summary.json"));
}

// Every model preset builds at its own input shape and runs a forward and backward step.
TEST(ModelPresetTest, EveryPresetBuildsAndRunsAStep) {
  const std::vector<std::string> names = ModelPresetNames();
  for (const char* want : {"resnet18", "resnet20", "resnet50", "vgg8", "vit_tiny"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
  ThreadPool pool(2);
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    ModelPreset p = LoadModelPreset(name, "test");
    Network net = BuildPresetNetwork(name);
    ASSERT_EQ(net.output_shape(), Shape{p.classes});
    StepContext ctx;
    ctx.mode = Mode::kTrain;
    ctx.pool = &pool;
    Tensor x(p.input.WithBatch(name.rfind("resnet5", 0) == 0 ? 1 : 2));
    Fill(x, 7);
    const Tensor& y = net.Forward(x, ctx);
    Tensor r(y.shape());
    Fill(r, 8);
    Backward(net, r, ctx);
    double g = 0;
    for (Parameter* p : net.Parameters()) {
      for (int64_t i = 0; i < p->grad.numel(); ++i) {
        ASSERT_TRUE(std::isfinite(p->grad[i]));
        g += std::abs(p->grad[i]);
      }
    }
    EXPECT_GT(g, 0.0);
  }
}

TEST(ModelPresetTest, LayerShapesGiveTheKnownParameterCountsAndProducts) {
  struct Known {
    const char* name;
    int64_t weighted, params;
  };
  // torchvision: resnet18 11,689,512 and resnet50 25,557,032 parameters (weights, biases and
  // batch-norm scales/shifts).
  for (const Known& k : {Known{"resnet18", 21, 11689512}, Known{"resnet50", 54, 25557032},
                         Known{"vgg8", 8, 0}, Known{"resnet20", 22, 0}}) {
    SCOPED_TRACE(k.name);
    Network net = BuildPresetNetwork(k.name);
    int64_t weighted = 0, params = 0;
    for (const LayerShape& s : LayerShapes(net)) {
      if (s.weight_rows == 0) continue;
      ++weighted;
      EXPECT_EQ(s.macs_per_sample, s.weight_rows * s.weight_cols * s.vectors_per_sample);
    }
    for (Parameter* p : net.Parameters()) params += p->value.numel();
    EXPECT_EQ(weighted, k.weighted);
    if (k.params > 0) {
      EXPECT_EQ(params, k.params);
    }
  }
  // ResNet-18's stem: 7x7x3 rows, 64 columns, 112 x 112 output pixels.
  Network r18 = BuildPresetNetwork("resnet18");
  const LayerShape stem = LayerShapes(r18)[0];
  EXPECT_EQ(stem.weight_rows, 147);
  EXPECT_EQ(stem.weight_cols, 64);
  EXPECT_EQ(stem.vectors_per_sample, 112 * 112);
}

TEST(ModelPresetTest, PresetModelBlockInAConfigTrainsDeterministicallyAtAnyThreadCount) {
  const std::string yaml = R"(
data: {impl: synthetic, height: 32, width: 32, channels: 3, train_size: 48, test_size: 16}
model: {preset: resnet20}
train: {epochs: 1, batch_size: 16, checkpoint: false}
)";
  std::vector<std::vector<float>> state[2];
  double acc[2];
  for (int t = 0; t < 2; ++t) {
    Session s(testing::ResolveYaml(yaml, "test", {"threads=" + std::to_string(t + 1)}));
    ASSERT_TRUE(s.network().is_graph());
    acc[t] = s.Train("", false, {}).test_accuracy;
    state[t] = testing::StateValues(s);
  }
  EXPECT_EQ(acc[0], acc[1]);
  ASSERT_EQ(state[0].size(), state[1].size());
  for (size_t i = 0; i < state[0].size(); ++i) EXPECT_EQ(state[0][i], state[1][i]) << i;
  try {
    testing::ResolveYaml("model: {preset: resnet21}", "test");
    FAIL() << "unknown preset accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resnet20"), std::string::npos) << e.what();
  }
}

// Attention's activation-activation products on a macro: the result approximates the digital
// one, and the operand writes are counted in FP and BP.
TEST(AttentionTest, ProductsOnTheMacroWriteTheirOperandsAndCountTheWrites) {
  const std::string graph = R"(
impl: graph
nodes:
- {name: tok, impl: position_embedding}
- {impl: self_attention, name: att, dim: 8, heads: 2, products: PRODUCTS}
- {impl: global_avg_pool}
- {impl: linear, out_features: 3}
)";
  auto build = [&](const std::string& products) {
    std::string y = graph;
    y.replace(y.find("PRODUCTS"), 8, products);
    return BuildGraph(y, Shape{5, 8});
  };
  Network digital = build("digital");
  Network macro = build("macro");
  int core = -1;
  for (int i = 0; i < macro.size(); ++i) {
    if (macro.node_name(i) == "att.attend") core = i;
  }
  ASSERT_GE(core, 0);
  EXPECT_EQ(digital.layer(core).matmul(), nullptr);
  EXPECT_NE(digital.layer(core).Summary().find("digital"), std::string::npos);
  ASSERT_NE(macro.layer(core).matmul(), nullptr);
  ConfigNode m = ParseYaml(R"({impl: digital_bitserial, rows: 64, cols: 8, input_bits: 16,
      error_bits: 16, weight_bits: 16, weight_bits_backward: 16, gradient_bits: 16,
      signed: true, rounding: nearest, master_weights: true})",
                           "test");
  macro.layer(core).matmul()->AttachMacro(Registry<Macro>::CreateFrom(m), core);
  ThreadPool pool(2);
  StepContext ctx;
  ctx.mode = Mode::kTrain;
  ctx.pool = &pool;
  Tensor x(Shape{3, 5, 8});
  Fill(x, 9);
  const Tensor yd = digital.Forward(x, ctx);
  const Tensor ym = macro.Forward(x, ctx);
  for (int64_t i = 0; i < yd.numel(); ++i) EXPECT_NEAR(ym[i], yd[i], 2e-2) << i;
  Tensor r(yd.shape());
  Fill(r, 10);
  Backward(digital, r, ctx);
  Backward(macro, r, ctx);
  auto pd = digital.Parameters(), pm = macro.Parameters();
  for (size_t k = 0; k < pd.size(); ++k) {
    for (int64_t i = 0; i < pd[k]->grad.numel(); ++i) {
      EXPECT_NEAR(pm[k]->grad[i], pd[k]->grad[i], 3e-2 + 0.05 * std::abs(pd[k]->grad[i]))
          << k << " " << i;
    }
  }
  auto counts = macro.layer(core).matmul()->TakeCounts();
  const auto& fp = counts[static_cast<int>(Stage::kForward)];
  const auto& bp = counts[static_cast<int>(Stage::kBackward)];
  bool fp_writes = false, bp_writes = false;
  for (const auto& [name, n] : fp.counts()) {
    fp_writes |= name.find("write") != std::string::npos && n > 0;
  }
  for (const auto& [name, n] : bp.counts()) {
    bp_writes |= name.find("write") != std::string::npos && n > 0;
  }
  EXPECT_TRUE(fp_writes) << "no operand writes counted in FP";
  EXPECT_TRUE(bp_writes) << "no operand writes counted in BP";
  EXPECT_TRUE(counts[static_cast<int>(Stage::kUpdate)].counts().empty());
}

}  // namespace
}  // namespace pim
