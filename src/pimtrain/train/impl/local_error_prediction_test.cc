// Local error prediction (SP-PIM): the +-2^-k matrices, each layer's error against the
// equations of docs/local_error_prediction.md computed here independently, the EPU counts,
// determinism over thread counts, and learning on a small synthetic task.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/loss.h"
#include "pimtrain/nn/optimizer.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/impl/local_error_prediction.h"
#include "test_util.h"

namespace pim {
namespace {

std::unique_ptr<Layer> MakeLayer(const std::string& yaml) {
  return Registry<Layer>::CreateFrom(ParseYaml(yaml, "test"));
}

// A tiny network, its algorithm, loss and optimizer, and one batch.
struct Rig {
  std::unique_ptr<Network> net;
  std::unique_ptr<TrainingAlgorithm> alg;
  std::unique_ptr<Loss> loss;
  std::unique_ptr<Optimizer> opt;
  Tensor x;
  std::vector<int32_t> labels;
  uint64_t seed = 11;

  Rig(std::vector<std::unique_ptr<Layer>> layers, const Shape& input, int64_t batch,
      int classes, const std::string& alg_yaml) {
    net = std::make_unique<Network>(std::move(layers), input, seed);
    alg = Registry<TrainingAlgorithm>::CreateFrom(ParseYaml(alg_yaml, "test"));
    alg->Setup(*net, seed);
    loss = Registry<Loss>::CreateFrom(ParseYaml("{impl: softmax_cross_entropy}", "test"));
    opt = Registry<Optimizer>::CreateFrom(ParseYaml("{impl: sgd, learning_rate: 0.1}", "test"));
    opt->Attach(net->Parameters());
    std::vector<int64_t> dims{batch};
    for (int64_t d : input.dims()) dims.push_back(d);
    x = Tensor(Shape(dims));
    const CounterRng rng(77);
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = rng.Normal(i);
    for (int64_t s = 0; s < batch; ++s) labels.push_back(static_cast<int32_t>(s % classes));
  }

  void Step(ThreadPool* pool = nullptr) {
    StepContext ctx;
    ctx.seed = seed;
    ctx.pool = pool;
    alg->TrainStep(*net, x, labels.data(), *loss, *opt, 0.1, ctx);
  }
};

const char* kDfa = "{impl: local_error_prediction, variant: dfa, k_min: 1, k_max: 3, density: 0.7}";
const char* kLocal =
    "{impl: local_error_prediction, variant: local_classifier, k_min: 1, k_max: 3, density: 0.7}";
const PotMatrixParams kParams{0.7, 1, 3};

// linear 5->6, relu, linear 6->4, relu, linear 4->3.
std::vector<std::unique_ptr<Layer>> TinyMlp() {
  std::vector<std::unique_ptr<Layer>> l;
  l.push_back(MakeLayer("{impl: linear, out_features: 6}"));
  l.push_back(MakeLayer("{impl: relu}"));
  l.push_back(MakeLayer("{impl: linear, out_features: 4}"));
  l.push_back(MakeLayer("{impl: relu}"));
  l.push_back(MakeLayer("{impl: linear, out_features: 3}"));
  return l;
}

// dL/dlogits of the mean softmax cross-entropy, in double.
std::vector<double> SoftmaxError(const Tensor& z, const std::vector<int32_t>& labels) {
  const int64_t n = z.shape()[0], k = z.shape()[1];
  std::vector<double> e(n * k);
  for (int64_t s = 0; s < n; ++s) {
    double m = -1e300, sum = 0;
    for (int64_t c = 0; c < k; ++c) m = std::max(m, static_cast<double>(z[s * k + c]));
    for (int64_t c = 0; c < k; ++c) sum += std::exp(z[s * k + c] - m);
    for (int64_t c = 0; c < k; ++c) {
      e[s * k + c] = (std::exp(z[s * k + c] - m) / sum - (c == labels[s] ? 1.0 : 0.0)) / n;
    }
  }
  return e;
}

// out[s][r] = sum over c ascending with M[r][c] != 0 of M[r][c] e[s][c], from +0 (float).
std::vector<float> ProjectRef(const PotMatrix& m, const float* e, int64_t n) {
  std::vector<float> out(n * m.rows());
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t r = 0; r < m.rows(); ++r) {
      float acc = 0.0f;
      for (int64_t c = 0; c < m.cols(); ++c) {
        if (m.At(r, c) != 0.0f) acc += m.At(r, c) * e[s * m.cols() + c];
      }
      out[s * m.rows() + r] = acc;
    }
  }
  return out;
}

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data(), t.data() + t.numel());
}

TEST(LocalErrorPredictionTest, MatrixEntriesArePowersOfTwoInRangeWithTheDensity) {
  const PotMatrixParams p{0.3, 2, 5};
  const PotMatrix m(PotMatrixKey(3, 1), 400, 10, p);
  int64_t nonzero = 0, negative = 0;
  std::set<int> ks;
  for (int64_t r = 0; r < m.rows(); ++r) {
    for (int64_t c = 0; c < m.cols(); ++c) {
      const float v = m.At(r, c);
      EXPECT_EQ(v, PotEntry(PotMatrixKey(3, 1), r, c, 10, p));
      if (v == 0.0f) continue;
      ++nonzero;
      negative += v < 0.0f;
      int e = 0;
      const float mant = std::frexp(std::fabs(v), &e);  // |v| = mant * 2^e, mant in [0.5, 1)
      ASSERT_EQ(mant, 0.5f) << "not a power of two: " << v;
      const int k = 1 - e;  // |v| = 2^-k
      ASSERT_GE(k, 2);
      ASSERT_LE(k, 5);
      ks.insert(k);
    }
  }
  EXPECT_EQ(nonzero, m.nonzeros());
  EXPECT_EQ(negative, m.negatives());
  // 4000 Bernoulli(0.3) draws: standard deviation 0.0072 of the fraction.
  EXPECT_NEAR(static_cast<double>(nonzero) / 4000.0, 0.3, 0.03);
  EXPECT_NEAR(static_cast<double>(negative) / static_cast<double>(nonzero), 0.5, 0.06);
  EXPECT_EQ(ks, (std::set<int>{2, 3, 4, 5}));
  // Density 1 fills every entry; another layer or seed draws another matrix.
  EXPECT_EQ(PotMatrix(PotMatrixKey(3, 1), 50, 10, {1.0, 0, 0}).nonzeros(), 500);
  const PotMatrix other(PotMatrixKey(3, 2), 400, 10, p), reseeded(PotMatrixKey(4, 1), 400, 10, p);
  int64_t same = 0, same_seed = 0;
  for (int64_t r = 0; r < 400; ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      same += m.At(r, c) == other.At(r, c);
      same_seed += m.At(r, c) == reseeded.At(r, c);
    }
  }
  EXPECT_LT(same, 3000);
  EXPECT_LT(same_seed, 3000);
}

TEST(LocalErrorPredictionTest, DfaHiddenErrorsFollowTheFormulaAndTheLastLayerGetsTheTrueError) {
  Rig rig(TinyMlp(), Shape{5}, 7, 3, kDfa);
  rig.Step();
  Network& net = *rig.net;
  const int64_t n = 7;
  // The last layer's error is dL/dlogits, and its weight gradient uses it.
  const std::vector<double> e_out = SoftmaxError(net.activation(5), rig.labels);
  for (int64_t i = 0; i < n * 3; ++i) EXPECT_NEAR(net.error(5)[i], e_out[i], 1e-8);
  const Tensor& w_grad = net.layer(4).Parameters()[0]->grad;  // 4 x 3
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 3; ++c) {
      double g = 0;
      for (int64_t s = 0; s < n; ++s) g += net.activation(4)[s * 4 + r] * e_out[s * 3 + c];
      EXPECT_NEAR(w_grad[r * 3 + c], g, 1e-6);
    }
  }
  // Hidden weighted layers 0 and 2: e = (e_out B^T) masked where the ReLU output is zero; the
  // prediction sits at the ReLU's output (error(2), error(4)), the masked error at the linear's.
  for (int layer : {0, 2}) {
    const int64_t f = layer == 0 ? 6 : 4;
    const PotMatrix b(PotMatrixKey(rig.seed, layer), f, 3, kParams);
    const std::vector<float> projected = ProjectRef(b, net.error(5).data(), n);
    EXPECT_EQ(Vec(net.error(layer + 2)), projected) << "layer " << layer;
    const Tensor& h = net.activation(layer + 2);  // post-ReLU
    std::vector<float> masked(projected.size());
    for (size_t i = 0; i < masked.size(); ++i) masked[i] = h[i] > 0.0f ? projected[i] : 0.0f;
    EXPECT_EQ(Vec(net.error(layer + 1)), masked) << "layer " << layer;
    // GC ran with the local error: dW = x^T e.
    const Tensor& x = net.activation(layer);
    const int64_t in = x.numel() / n;
    const Tensor& g = net.layer(layer).Parameters()[0]->grad;
    for (int64_t r = 0; r < in; ++r) {
      for (int64_t c = 0; c < f; ++c) {
        double sum = 0;
        for (int64_t s = 0; s < n; ++s) sum += x[s * in + r] * masked[s * f + c];
        EXPECT_NEAR(g[r * f + c], sum, 1e-6);
      }
    }
  }
  // No error went back through any weights: nothing wrote the network input's error.
  EXPECT_EQ(net.error(0).numel(), 0);
}

TEST(LocalErrorPredictionTest, LocalClassifierErrorFollowsTheFormula) {
  Rig rig(TinyMlp(), Shape{5}, 7, 3, kLocal);
  rig.Step();
  Network& net = *rig.net;
  const int64_t n = 7;
  for (int layer : {0, 2}) {
    const int64_t f = layer == 0 ? 6 : 4;
    const PotMatrix c_mat(PotMatrixKey(rig.seed, layer), f, 3, kParams);
    const Tensor& h = net.activation(layer + 2);
    // z = h C, d = dCE(z, y)/dz (mean over the batch), e = d C^T masked by [h > 0].
    Tensor z(Shape{n, 3});
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t c = 0; c < 3; ++c) {
        float acc = 0.0f;
        for (int64_t r = 0; r < f; ++r) {
          if (h[s * f + r] != 0.0f) acc += h[s * f + r] * c_mat.At(r, c);
        }
        z[s * 3 + c] = acc;
      }
    }
    const std::vector<double> d = SoftmaxError(z, rig.labels);
    for (int64_t s = 0; s < n; ++s) {
      for (int64_t r = 0; r < f; ++r) {
        double e = 0;
        for (int64_t c = 0; c < 3; ++c) e += c_mat.At(r, c) * d[s * 3 + c];
        if (h[s * f + r] <= 0.0f) e = 0;
        EXPECT_NEAR(net.error(layer + 1)[s * f + r], e, 1e-7) << "layer " << layer;
      }
    }
  }
  // The last layer still gets the true output error.
  const std::vector<double> e_out = SoftmaxError(net.activation(5), rig.labels);
  for (int64_t i = 0; i < n * 3; ++i) EXPECT_NEAR(net.error(5)[i], e_out[i], 1e-8);
}

TEST(LocalErrorPredictionTest, ConvLayerErrorIsPredictedAtItsOutputTensor) {
  std::vector<std::unique_ptr<Layer>> l;
  l.push_back(MakeLayer("{impl: conv2d, out_channels: 3, kernel: 3, padding: 1}"));
  l.push_back(MakeLayer("{impl: relu}"));
  l.push_back(MakeLayer("{impl: max_pool2d, kernel: 2}"));
  l.push_back(MakeLayer("{impl: flatten}"));
  l.push_back(MakeLayer("{impl: linear, out_features: 4}"));
  Rig rig(std::move(l), Shape{4, 4, 2}, 5, 4, kDfa);
  rig.Step();
  Network& net = *rig.net;
  const PotMatrix b(PotMatrixKey(rig.seed, 0), 4 * 4 * 3, 4, kParams);
  const std::vector<float> projected = ProjectRef(b, net.error(5).data(), 5);
  EXPECT_EQ(net.error(1).shape(), (Shape{5, 4, 4, 3}));
  const Tensor& h = net.activation(2);
  std::vector<float> masked(projected.size());
  for (size_t i = 0; i < masked.size(); ++i) masked[i] = h[i] > 0.0f ? projected[i] : 0.0f;
  EXPECT_EQ(Vec(net.error(1)), masked);
  EXPECT_EQ(net.error(3).numel(), 0);  // max_pool and flatten get no error
}

TEST(LocalErrorPredictionTest, EpuCountsReachTheMacroLayersUnderBackward) {
  for (const char* yaml : {kDfa, kLocal}) {
    const bool dfa = std::string(yaml) == kDfa;
    Rig rig(TinyMlp(), Shape{5}, 7, 3, yaml);
    Network& net = *rig.net;
    StepContext ctx;
    ctx.seed = rig.seed;
    for (int i : {0, 2, 4}) {
      const char* macro = "{impl: digital_bitserial, rows: 8, cols: 4}";
      net.layer(i).matmul()->AttachMacro(Registry<Macro>::CreateFrom(ParseYaml(macro, "t")), i);
      net.layer(i).CommitUpdate(ctx);
      net.layer(i).matmul()->TakeCounts();
      net.layer(i).matmul()->TakeSparsity();
    }
    rig.Step();
    const int64_t n = 7;
    for (int i : {0, 2, 4}) {
      StagedMatmul* m = net.layer(i).matmul();
      const ActionCounts bp = m->TakeCounts()[static_cast<int>(Stage::kBackward)];
      // The macro never ran BP (no transposed product): only EPU work is under backward.
      for (const auto& [name, v] : bp.counts()) EXPECT_EQ(name.rfind("epu_", 0), 0u) << name;
      const SparsityStats sp = m->TakeSparsity();
      const int64_t f = i == 0 ? 6 : i == 2 ? 4 : 3;
      EXPECT_EQ(sp.error_elements, n * f);
      if (i == 4) {
        EXPECT_TRUE(bp.empty());  // the true error: no prediction
        continue;
      }
      const PotMatrix b(PotMatrixKey(rig.seed, i), f, 3, kParams);
      const int64_t passes = dfa ? 1 : 2;  // the local classifier also computes z = h C
      EXPECT_EQ(bp.Get("epu_shift_adds"), passes * n * b.nonzeros());
      EXPECT_EQ(bp.Get("epu_reads"), passes * n * b.nonzeros());
      EXPECT_EQ(bp.Get("epu_sign_flips"), passes * n * b.negatives());
      EXPECT_EQ(bp.Get("epu_mask_ops"), n * f);
      EXPECT_EQ(bp.Get("epu_softmax_exps"), dfa ? 0 : n * 3);
      EXPECT_GT(b.negatives(), 0);
    }
  }
}

TEST(LocalErrorPredictionTest, ProductsAreIdenticalOnOneAndTwoThreads) {
  const PotMatrix m(PotMatrixKey(1, 0), 64, 10, {0.5, 0, 6});
  const int64_t n = 3000;
  Tensor e(Shape{n, 10}), h(Shape{n, 64});
  const CounterRng rng(5);
  for (int64_t i = 0; i < e.numel(); ++i) e[i] = rng.Normal(i);
  for (int64_t i = 0; i < h.numel(); ++i) h[i] = std::max(0.0f, rng.Normal(i + 100000));
  ThreadPool one(1), two(2);
  Tensor p1(Shape{n, 64}), p2(Shape{n, 64}), z1(Shape{n, 10}), z2(Shape{n, 10});
  m.Project(e.AsMatrix(), p1.AsMatrix(), one);
  m.Project(e.AsMatrix(), p2.AsMatrix(), two);
  m.Reduce(h.AsMatrix(), z1.AsMatrix(), one);
  m.Reduce(h.AsMatrix(), z2.AsMatrix(), two);
  EXPECT_EQ(Vec(p1), Vec(p2));
  EXPECT_EQ(Vec(z1), Vec(z2));
  // The dense loops equal the sums over nonzero entries only (what the EPU adds).
  EXPECT_EQ(Vec(p1), ProjectRef(m, e.data(), n));
  std::vector<float> z_ref(n * 10);
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t c = 0; c < 10; ++c) {
      float acc = 0.0f;
      for (int64_t r = 0; r < 64; ++r) {
        if (m.At(r, c) != 0.0f && h[s * 64 + r] != 0.0f) acc += h[s * 64 + r] * m.At(r, c);
      }
      z_ref[s * 10 + c] = acc;
    }
  }
  EXPECT_EQ(Vec(z1), z_ref);
}

const char* kSyntheticMlp = R"(
seed: 3
data: {impl: synthetic, train_size: 600, test_size: 300, height: 6, width: 6, classes: 10,
       noise: 1.0}
model: {impl: mlp, layers: [36, 8, 8, 10]}
train:
  epochs: 6
  batch_size: 20
  optimizer: {impl: sgd, learning_rate: 0.05, momentum: 0.9}
)";

ConfigNode Resolve(const std::vector<std::string>& sets) {
  return testing::ResolveYaml(kSyntheticMlp, "test.yaml", sets);
}

TEST(LocalErrorPredictionTest, BothVariantsLearnAndAreDeterministicOverThreads) {
  for (const char* variant : {"dfa", "local_classifier"}) {
    const std::string alg =
        std::string("train.algorithm={impl: local_error_prediction, variant: ") + variant + "}";
    Session one(Resolve({alg, "threads=1"}));
    const TrainSummary a = one.Train("", false, {});
    Session two(Resolve({alg, "threads=2"}));
    const TrainSummary b = two.Train("", false, {});
    EXPECT_EQ(testing::StateValues(one), testing::StateValues(two)) << variant;
    EXPECT_EQ(a.test_accuracy, b.test_accuracy) << variant;
    // 10 classes: chance is 0.1; with the hidden layers frozen (only the last layer learning)
    // this task reaches 0.18, backprop 0.94, dfa 0.84, local_classifier 0.80.
    EXPECT_GT(a.test_accuracy, 0.6) << variant;
    EXPECT_LT(a.epochs.back().train_loss, a.epochs.front().train_loss) << variant;
  }
}

TEST(LocalErrorPredictionTest, BadSettingsAreTypedErrors) {
  EXPECT_THROW(Registry<TrainingAlgorithm>::CreateFrom(
                   ParseYaml("{impl: local_error_prediction, k_min: 6, k_max: 2}", "t")),
               ConfigError);
  // A batch_norm after a pooling layer sits past the prediction point: it would get no error.
  std::vector<std::unique_ptr<Layer>> l;
  l.push_back(MakeLayer("{impl: conv2d, out_channels: 2, kernel: 3, padding: 1}"));
  l.push_back(MakeLayer("{impl: relu}"));
  l.push_back(MakeLayer("{impl: max_pool2d, kernel: 2}"));
  l.push_back(MakeLayer("{impl: batch_norm}"));
  l.push_back(MakeLayer("{impl: flatten}"));
  l.push_back(MakeLayer("{impl: linear, out_features: 3}"));
  Rig rig(std::move(l), Shape{4, 4, 1}, 4, 3, kDfa);
  EXPECT_THROW(rig.Step(), UnsupportedError);
}

}  // namespace
}  // namespace pim
