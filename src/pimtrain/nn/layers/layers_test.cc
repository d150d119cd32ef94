// Layer and loss tests: gradient checks for every registered layer, references, thread identity.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/loss.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {

std::unique_ptr<Layer> MakeLayer(const std::string& yaml) {
  return Registry<Layer>::CreateFrom(ParseYaml(yaml, "test"));
}

std::string ImplOf(const std::string& yaml) { return ParseYaml(yaml, "test").At("impl").text(); }

// How test inputs are drawn: kinks of relu and max_pool must stay farther than the finite-
// difference step from every input, or the one-sided slopes disagree.
enum class Inputs { kUniform, kAwayFromZero, kDistinct };

void FillInputs(Tensor& x, Inputs kind, uint64_t key) {
  CounterRng rng(key);
  const int64_t n = x.numel();
  switch (kind) {
    case Inputs::kUniform:
      for (int64_t i = 0; i < n; ++i) x[i] = 2.0f * rng.Uniform(i) - 1.0f;
      break;
    case Inputs::kAwayFromZero:
      for (int64_t i = 0; i < n; ++i) {
        const float u = rng.Uniform(i);
        x[i] = (u < 0.5f ? -1.0f : 1.0f) * (0.1f + u);
      }
      break;
    case Inputs::kDistinct: {
      // A random permutation of values 0.03 apart: window maxima are unique by a margin.
      std::vector<int64_t> perm(n);
      for (int64_t i = 0; i < n; ++i) perm[i] = i;
      for (int64_t i = n - 1; i > 0; --i) {
        std::swap(perm[i], perm[rng.Below(i, static_cast<uint64_t>(i + 1))]);
      }
      for (int64_t i = 0; i < n; ++i) x[i] = 0.03f * static_cast<float>(perm[i] - n / 2);
      break;
    }
  }
}

struct GradCase {
  std::string yaml;
  Shape input;  // per sample
  int64_t batch;
  Inputs inputs = Inputs::kUniform;
};

// One entry per registered layer at least; stride/padding variants for conv and pools.
std::vector<GradCase> GradCases() {
  return {
      {"{impl: linear, out_features: 5}", Shape{7}, 3},
      {"{impl: linear, out_features: 4, bias: false}", Shape{2, 3, 2}, 2},
      {"{impl: conv2d, out_channels: 4, kernel: 3}", Shape{5, 6, 3}, 2},
      {"{impl: conv2d, out_channels: 3, kernel: 3, padding: 1}", Shape{5, 5, 2}, 2},
      {"{impl: conv2d, out_channels: 2, kernel: 3, stride: 2, padding: 1}", Shape{7, 6, 3}, 2},
      {"{impl: conv2d, out_channels: 3, kernel: 5, padding: 2, bias: false}", Shape{6, 6, 1}, 2},
      {"{impl: conv2d, out_channels: 2, kernel: 2, stride: 3}", Shape{7, 8, 2}, 3},
      // Whole vectors of output channels and few taps: the direct kernels (conv_direct.h).
      {"{impl: conv2d, out_channels: 8, kernel: 3, padding: 1}", Shape{5, 5, 2}, 2},
      {"{impl: relu}", Shape{4, 5}, 3, Inputs::kAwayFromZero},
      {"{impl: max_pool2d, kernel: 2}", Shape{6, 6, 3}, 2, Inputs::kDistinct},
      {"{impl: max_pool2d, kernel: 3, stride: 2}", Shape{7, 6, 2}, 2, Inputs::kDistinct},
      {"{impl: max_pool2d, kernel: 3, stride: 2, padding: 1}", Shape{6, 5, 2}, 2,
       Inputs::kDistinct},
      {"{impl: avg_pool2d, kernel: 2}", Shape{6, 6, 3}, 2},
      {"{impl: avg_pool2d, kernel: 3, stride: 1, padding: 1}", Shape{5, 4, 2}, 2},
      {"{impl: avg_pool2d, kernel: 3, stride: 2}", Shape{7, 7, 2}, 2},
      {"{impl: flatten}", Shape{3, 2, 4}, 2},
      {"{impl: dropout, p: 0.3}", Shape{40}, 3},
      {"{impl: dropout, p: 0.0}", Shape{10}, 2},
      {"{impl: batch_norm}", Shape{6}, 5},
      {"{impl: batch_norm, affine: false}", Shape{4}, 6},
      {"{impl: batch_norm, momentum: 0.3}", Shape{3, 4, 5}, 2},
      {"{impl: linear, out_features: 3, over: last}", Shape{4, 5}, 2},
      {"{impl: linear, out_features: 2, over: last, bias: false}", Shape{2, 3, 4}, 2},
      {"{impl: gelu}", Shape{4, 5}, 3},
      {"{impl: layer_norm}", Shape{3, 6}, 2},
      {"{impl: layer_norm, affine: false}", Shape{5}, 3},
      {"{impl: softmax}", Shape{3, 5}, 2},
      {"{impl: softmax, dim: 0}", Shape{4, 3}, 2},
      {"{impl: softmax, dim: 1}", Shape{3, 4, 2}, 2},
      {"{impl: global_avg_pool}", Shape{3, 4, 5}, 2},
      {"{impl: global_avg_pool}", Shape{6, 3}, 3},
      {"{impl: position_embedding}", Shape{2, 3, 4}, 3},
      {"{impl: position_embedding}", Shape{5, 3}, 2},
  };
}

// Layers with several inputs (graph models): their gradient and thread checks run through a
// graph network in nn/models/graph_test.cc.
const std::set<std::string>& MultiInputLayers() {
  static const std::set<std::string> names = {"add", "concat", "attention_core"};
  return names;
}

// dL/dv of L = sum(r .* y) by central differences, in double from the float forward.
class GradChecker {
 public:
  GradChecker(Layer& layer, Tensor& x, const Tensor& r, const StepContext& ctx)
      : layer_(layer), x_(x), r_(r), ctx_(ctx) {}

  double Loss() {
    layer_.Forward(x_, y_, ctx_);
    double s = 0;
    for (int64_t i = 0; i < y_.numel(); ++i) s += static_cast<double>(r_[i]) * y_[i];
    return s;
  }

  // Checks up to `max_checks` entries of `v` (spread evenly) against `analytic`.
  void Check(Tensor& v, const Tensor& analytic, const std::string& what, float eps = 1e-2f) {
    ASSERT_EQ(v.numel(), analytic.numel()) << what;
    const int64_t n = v.numel(), stride = std::max<int64_t>(1, n / 150);
    for (int64_t i = 0; i < n; i += stride) {
      const float saved = v[i];
      v[i] = saved + eps;
      const double plus = Loss();
      v[i] = saved - eps;
      const double minus = Loss();
      v[i] = saved;
      const double numeric = (plus - minus) / (2.0 * eps);
      const double ana = analytic[i];
      const double tol = 2e-3 + 1e-2 * std::max(std::abs(numeric), std::abs(ana));
      ASSERT_NEAR(analytic[i], numeric, tol) << what << " element " << i;
    }
  }

 private:
  Layer& layer_;
  Tensor& x_;
  const Tensor& r_;
  const StepContext& ctx_;
  Tensor y_;
};

TEST(GradCheckTest, EveryLayerMatchesFiniteDifferencesForInputAndParameters) {
  ThreadPool pool(2);
  int idx = 0;
  for (const GradCase& c : GradCases()) {
    SCOPED_TRACE(c.yaml + " on " + c.input.ToString());
    auto layer = MakeLayer(c.yaml);
    const Shape out = layer->Build(c.input, MixKey(17, idx));
    Tensor x(c.input.WithBatch(c.batch));
    FillInputs(x, c.inputs, 1000 + idx);
    StepContext ctx;
    ctx.seed = 3;
    ctx.step = 11;
    ctx.mode = Mode::kTrain;
    ctx.pool = &pool;
    Tensor y;
    layer->Forward(x, y, ctx);
    ASSERT_EQ(y.shape(), out.WithBatch(c.batch));
    Tensor r(y.shape());
    FillInputs(r, Inputs::kUniform, 2000 + idx);
    layer->ComputeGradient(r, ctx);
    Tensor dx;
    layer->PropagateError(r, dx, ctx);
    ASSERT_EQ(dx.shape(), x.shape());
    std::vector<Tensor> grads;
    for (Parameter* p : layer->Parameters()) grads.push_back(p->grad);

    GradChecker check(*layer, x, r, ctx);
    check.Check(x, dx, "dx");
    auto params = layer->Parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      check.Check(params[i]->value, grads[i], params[i]->name);
    }
    ++idx;
  }
}

TEST(GradCheckTest, EveryRegisteredLayerHasAGradientCheckCase) {
  std::set<std::string> covered;
  for (const GradCase& c : GradCases()) covered.insert(ImplOf(c.yaml));
  covered.insert(MultiInputLayers().begin(), MultiInputLayers().end());
  for (const ImplInfo* info : RegistryIndex::Implementations(Layer::kRoleName)) {
    EXPECT_TRUE(covered.count(info->name))
        << "layer '" << info->name << "' is registered but has no case in GradCases() "
        << "(src/pimtrain/nn/layers/layers_test.cc): add one";
  }
  EXPECT_FALSE(covered.empty());
}

TEST(LossTest, SoftmaxCrossEntropyGradientMatchesFiniteDifferences) {
  for (double smoothing : {0.0, 0.1}) {
    auto loss = Registry<Loss>::CreateFrom(ParseYaml(
        "{impl: softmax_cross_entropy, label_smoothing: " + std::to_string(smoothing) + "}",
        "test"));
    const int64_t n = 4, k = 5;
    Tensor z(Shape{n, k});
    FillInputs(z, Inputs::kUniform, 77);
    for (int64_t i = 0; i < z.numel(); ++i) z[i] *= 3.0f;
    const std::vector<int32_t> labels = {0, 3, 4, 1};
    Tensor dz;
    loss->Compute(z, labels.data(), &dz);
    ASSERT_EQ(dz.shape(), z.shape());
    const float eps = 1e-3f;
    for (int64_t i = 0; i < z.numel(); ++i) {
      const float saved = z[i];
      z[i] = saved + eps;
      const double plus = loss->Compute(z, labels.data(), nullptr).loss_sum / n;
      z[i] = saved - eps;
      const double minus = loss->Compute(z, labels.data(), nullptr).loss_sum / n;
      z[i] = saved;
      EXPECT_NEAR(dz[i], (plus - minus) / (2 * eps), 2e-4) << "smoothing " << smoothing;
    }
  }
}

TEST(LossTest, SoftmaxCrossEntropyValueAccuracyAndStability) {
  auto loss = Registry<Loss>::CreateFrom(ParseYaml("{impl: softmax_cross_entropy}", "test"));
  // Huge logits must not overflow: log-softmax subtracts the row maximum first.
  Tensor z(Shape{2, 3});
  const float v[] = {1000.0f, 0.0f, -1000.0f, 1.0f, 2.0f, 3.0f};
  for (int i = 0; i < 6; ++i) z[i] = v[i];
  const std::vector<int32_t> labels = {0, 0};
  Tensor dz;
  LossResult r = loss->Compute(z, labels.data(), &dz);
  const double expected = 0.0 + (std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 1.0);
  EXPECT_NEAR(r.loss_sum, expected, 1e-9);
  EXPECT_EQ(r.correct, 1);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(std::isfinite(dz[i]));
  EXPECT_NEAR(dz[0] + dz[1] + dz[2], 0.0, 1e-7);  // softmax minus one-hot sums to zero
}

TEST(LossTest, RejectsLabelsOutsideTheClasses) {
  auto loss = Registry<Loss>::CreateFrom(ParseYaml("{impl: softmax_cross_entropy}", "test"));
  Tensor z(Shape{1, 3});
  const std::vector<int32_t> labels = {3};
  EXPECT_THROW(loss->Compute(z, labels.data(), nullptr), DataError);
}

// MaxAbs (the macro's per-tensor scale, taken in vector lanes) is the sequential scan's
// std::max(m, |v|): NaNs skipped, infinities kept, any shape and leading dimension.
TEST(LayerTest, MaxAbsIsTheSequentialScan) {
  const CounterRng rng(77, 0);
  for (int64_t cols : {1, 7, 16, 17, 40, 33}) {
    for (int64_t rows : {1, 3, 5}) {
      const int64_t ld = cols + 3;
      std::vector<float> v(rows * ld, 1e9f);  // padding beyond cols must not be read
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) v[r * ld + c] = 4.0f * rng.Uniform(r * ld + c) - 2.0f;
      }
      auto scan = [&] {
        float m = 0.0f;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(v[r * ld + c]));
        }
        return m;
      };
      const ConstMatrixView view(v.data(), rows, cols, ld);
      EXPECT_EQ(MaxAbs(view), scan()) << rows << " x " << cols;
      v[(rows - 1) * ld + cols - 1] = -3.5f;  // the largest, in the scalar tail
      EXPECT_EQ(MaxAbs(view), 3.5f);
      v[0] = std::nanf("");
      EXPECT_EQ(MaxAbs(view), scan());
      v[rows * ld / 2 - (rows * ld / 2) % ld] = -INFINITY;
      EXPECT_EQ(MaxAbs(view), scan());
    }
  }
}

TEST(LayerTest, LinearMatchesNaiveReference) {
  auto layer = MakeLayer("{impl: linear, out_features: 37}");
  layer->Build(Shape{53}, 5);
  Tensor x(Shape{29, 53});
  FillInputs(x, Inputs::kUniform, 9);
  Tensor y;
  layer->Forward(x, y, StepContext{});
  const Tensor& w = layer->Parameters()[0]->value;
  const Tensor& b = layer->Parameters()[1]->value;
  for (int64_t i = 0; i < 29; ++i) {
    for (int64_t j = 0; j < 37; ++j) {
      double s = b[j];
      for (int64_t k = 0; k < 53; ++k) s += static_cast<double>(x[i * 53 + k]) * w[k * 37 + j];
      ASSERT_NEAR(y[i * 37 + j], s, 1e-5) << i << ", " << j;
    }
  }
}

TEST(LayerTest, LinearAndConvInitializeLikePyTorch) {
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
  auto lin = MakeLayer("{impl: linear, out_features: 64}");
  lin->Build(Shape{100}, 1);
  auto conv = MakeLayer("{impl: conv2d, out_channels: 8, kernel: 3}");
  conv->Build(Shape{8, 8, 4}, 1);
  for (auto [layer, fan_in] : {std::pair{lin.get(), 100}, std::pair{conv.get(), 36}}) {
    const double bound = 1.0 / std::sqrt(fan_in);
    for (Parameter* p : layer->Parameters()) {
      double max_abs = 0;
      for (int64_t i = 0; i < p->value.numel(); ++i) {
        max_abs = std::max(max_abs, std::abs(static_cast<double>(p->value[i])));
      }
      EXPECT_LE(max_abs, bound) << p->name;
      if (p->value.numel() >= 64) {
        EXPECT_GE(max_abs, 0.8 * bound) << p->name;
      }
    }
  }
  // Same key, same weights; another key, other weights.
  auto again = MakeLayer("{impl: linear, out_features: 64}");
  again->Build(Shape{100}, 1);
  auto other = MakeLayer("{impl: linear, out_features: 64}");
  other->Build(Shape{100}, 2);
  EXPECT_EQ(again->Parameters()[0]->value[5], lin->Parameters()[0]->value[5]);
  EXPECT_NE(other->Parameters()[0]->value[5], lin->Parameters()[0]->value[5]);
}

TEST(LayerTest, Conv2dMatchesNaiveReference) {
  const int64_t n = 3, h = 9, w = 8, c = 3, oc = 5, k = 3;
  for (auto [stride, pad] : {std::pair{1, 1}, std::pair{2, 0}, std::pair{2, 2}}) {
    auto layer =
        MakeLayer("{impl: conv2d, out_channels: 5, kernel: 3, stride: " + std::to_string(stride) +
                  ", padding: " + std::to_string(pad) + "}");
    const Shape out = layer->Build(Shape{h, w, c}, 8);
    const int64_t oh_n = out[0], ow_n = out[1];
    EXPECT_EQ(oh_n, (h + 2 * pad - k) / stride + 1);
    Tensor x(Shape{n, h, w, c});
    FillInputs(x, Inputs::kUniform, 10);
    Tensor y;
    layer->Forward(x, y, StepContext{});
    const Tensor& wt = layer->Parameters()[0]->value;  // (k*k*c, oc)
    const Tensor& b = layer->Parameters()[1]->value;
    for (int64_t bi = 0; bi < n; ++bi)
      for (int64_t oh = 0; oh < oh_n; ++oh)
        for (int64_t ow = 0; ow < ow_n; ++ow)
          for (int64_t o = 0; o < oc; ++o) {
            double s = b[o];
            for (int64_t i = 0; i < k; ++i)
              for (int64_t j = 0; j < k; ++j)
                for (int64_t ch = 0; ch < c; ++ch) {
                  const int64_t ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                  if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                  s += static_cast<double>(x[((bi * h + ih) * w + iw) * c + ch]) *
                       wt[((i * k + j) * c + ch) * oc + o];
                }
            ASSERT_NEAR(y[((bi * oh_n + oh) * ow_n + ow) * oc + o], s, 1e-5);
          }
  }
}

// conv2d's FP32 products take three paths by shape (direct kernels for narrow reductions, the
// batch's columns kept for GC, or rebuilt in GC image group by image group); each must compute
// the convolution and its weight and bias gradients.
TEST(LayerTest, Conv2dForwardAndGradientsMatchTheDefinitionOnEveryPath) {
  struct PathCase {
    const char* what;
    int64_t n, h, w, c, oc, k, stride, pad;
  };
  const PathCase cases[] = {
      {"direct (5x5x1 taps, 8 channels)", 3, 9, 8, 1, 8, 5, 1, 2},
      {"columns kept (3x3x8 taps)", 3, 7, 7, 8, 12, 3, 2, 1},
      {"columns rebuilt (5x5x16 taps, 41 images)", 41, 16, 16, 16, 8, 5, 1, 2},
  };
  ThreadPool pool(2);
  for (const PathCase& t : cases) {
    SCOPED_TRACE(t.what);
    auto layer = MakeLayer("{impl: conv2d, out_channels: " + std::to_string(t.oc) +
                           ", kernel: " + std::to_string(t.k) + ", stride: " +
                           std::to_string(t.stride) + ", padding: " + std::to_string(t.pad) + "}");
    const Shape out = layer->Build(Shape{t.h, t.w, t.c}, 21);
    const int64_t oh_n = out[0], ow_n = out[1], taps = t.k * t.k * t.c;
    Tensor x(Shape{t.n, t.h, t.w, t.c});
    FillInputs(x, Inputs::kUniform, 30);
    StepContext ctx;
    ctx.mode = Mode::kTrain;
    ctx.pool = &pool;
    Tensor y;
    layer->Forward(x, y, ctx);
    Tensor dy(y.shape());
    FillInputs(dy, Inputs::kUniform, 31);
    layer->ComputeGradient(dy, ctx);
    const Tensor& wt = layer->Parameters()[0]->value;
    const Tensor& b = layer->Parameters()[1]->value;
    const Tensor& dw = layer->Parameters()[0]->grad;
    const Tensor& db = layer->Parameters()[1]->grad;
    // x under tap (i, j, ch) of output pixel (bi, oh, ow), 0 in the padding.
    auto tap = [&](int64_t bi, int64_t oh, int64_t ow, int64_t i, int64_t j, int64_t ch) {
      const int64_t ih = oh * t.stride - t.pad + i, iw = ow * t.stride - t.pad + j;
      if (ih < 0 || ih >= t.h || iw < 0 || iw >= t.w) return 0.0;
      return static_cast<double>(x[((bi * t.h + ih) * t.w + iw) * t.c + ch]);
    };
    std::vector<double> dw_ref(taps * t.oc, 0.0), dw_abs(taps * t.oc, 0.0), db_ref(t.oc, 0.0);
    for (int64_t bi = 0; bi < t.n; ++bi) {
      for (int64_t oh = 0; oh < oh_n; ++oh) {
        for (int64_t ow = 0; ow < ow_n; ++ow) {
          const int64_t pix = (bi * oh_n + oh) * ow_n + ow;
          for (int64_t o = 0; o < t.oc; ++o) {
            double s = b[o], a = std::abs(b[o]);
            const double d = dy[pix * t.oc + o];
            db_ref[o] += d;
            for (int64_t i = 0; i < t.k; ++i) {
              for (int64_t j = 0; j < t.k; ++j) {
                for (int64_t ch = 0; ch < t.c; ++ch) {
                  const int64_t r = (i * t.k + j) * t.c + ch;
                  const double v = tap(bi, oh, ow, i, j, ch);
                  s += v * wt[r * t.oc + o];
                  a += std::abs(v * wt[r * t.oc + o]);
                  dw_ref[r * t.oc + o] += v * d;
                  dw_abs[r * t.oc + o] += std::abs(v * d);
                }
              }
            }
            ASSERT_NEAR(y[pix * t.oc + o], s, 1e-6 * (taps + 1) * a + 1e-7) << "y at " << pix;
          }
        }
      }
    }
    const double rows = static_cast<double>(t.n * oh_n * ow_n);
    for (int64_t r = 0; r < taps * t.oc; ++r) {
      ASSERT_NEAR(dw[r], dw_ref[r], 1e-6 * rows * dw_abs[r] + 1e-7) << "dW at " << r;
    }
    for (int64_t o = 0; o < t.oc; ++o) ASSERT_NEAR(db[o], db_ref[o], 1e-6 * rows) << "db " << o;
  }
}

TEST(LayerTest, PoolsMatchTheirDefinitions) {
  auto mp = MakeLayer("{impl: max_pool2d, kernel: 2}");
  auto ap = MakeLayer("{impl: avg_pool2d, kernel: 2}");
  EXPECT_EQ(mp->Build(Shape{4, 4, 1}, 0), (Shape{2, 2, 1}));
  EXPECT_EQ(ap->Build(Shape{4, 4, 1}, 0), (Shape{2, 2, 1}));
  Tensor x(Shape{1, 4, 4, 1});
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>((i * 7) % 16);
  Tensor y;
  mp->Forward(x, y, StepContext{});
  // Windows {0,7,12,3}, {14,5,10,1}, {8,15,4,11}, {6,13,2,9}.
  EXPECT_EQ(std::vector<float>(y.data(), y.data() + 4), (std::vector<float>{12, 14, 15, 13}));
  ap->Forward(x, y, StepContext{});
  EXPECT_EQ(std::vector<float>(y.data(), y.data() + 4), (std::vector<float>{5.5, 7.5, 9.5, 7.5}));
}

TEST(LayerTest, BatchNormUpdatesRunningStatisticsAndUsesThemInEval) {
  auto bn = MakeLayer("{impl: batch_norm, momentum: 0.25}");
  bn->Build(Shape{2, 3}, 0);  // any rank: the last dimension (3) holds the channels
  Tensor x(Shape{4, 2, 3});
  FillInputs(x, Inputs::kUniform, 31);
  Tensor y;
  StepContext train;
  bn->Forward(x, y, train);
  auto buffers = bn->Buffers();
  ASSERT_EQ(buffers.size(), 2u);
  const Tensor& rm = *buffers[0].second;
  const Tensor& rv = *buffers[1].second;
  for (int64_t c = 0; c < 3; ++c) {
    double mean = 0, var = 0;
    for (int64_t r = 0; r < 8; ++r) mean += x[r * 3 + c];
    mean /= 8;
    for (int64_t r = 0; r < 8; ++r) var += (x[r * 3 + c] - mean) * (x[r * 3 + c] - mean);
    EXPECT_NEAR(rm[c], 0.25 * mean, 1e-6);
    EXPECT_NEAR(rv[c], 0.75 + 0.25 * var / 7, 1e-6);  // unbiased variance, as PyTorch
    for (int64_t r = 0; r < 8; ++r) {                 // batch statistics (biased) in train mode
      EXPECT_NEAR(y[r * 3 + c], (x[r * 3 + c] - mean) / std::sqrt(var / 8 + 1e-5), 1e-4);
    }
  }
  StepContext eval;
  eval.mode = Mode::kEval;
  bn->Forward(x, y, eval);
  for (int64_t r = 0; r < 8; ++r)
    for (int64_t c = 0; c < 3; ++c)
      EXPECT_NEAR(y[r * 3 + c], (x[r * 3 + c] - rm[c]) / std::sqrt(rv[c] + 1e-5), 1e-5);
}

TEST(LayerTest, DropoutMaskDependsOnSeedAndStepOnlyAndEvalIsIdentity) {
  auto drop = MakeLayer("{impl: dropout, p: 0.25}");
  drop->Build(Shape{1000}, 42);
  Tensor x(Shape{8, 1000});
  x.Fill(1.0f);
  StepContext ctx;
  ctx.seed = 1;
  ctx.step = 5;
  Tensor a, b, c;
  drop->Forward(x, a, ctx);
  drop->Forward(x, b, ctx);
  ctx.step = 6;
  drop->Forward(x, c, ctx);
  int64_t zeros = 0, differ = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_TRUE(a[i] == 0.0f || a[i] == 1.0f / 0.75f) << a[i];
    zeros += a[i] == 0.0f;
    differ += a[i] != c[i];
  }
  EXPECT_EQ(std::vector<float>(a.data(), a.data() + a.numel()),
            std::vector<float>(b.data(), b.data() + b.numel()));
  EXPECT_NEAR(static_cast<double>(zeros) / x.numel(), 0.25, 0.02);
  EXPECT_GT(differ, 1000);
  ctx.mode = Mode::kEval;
  drop->Forward(x, c, ctx);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(c[i], 1.0f);
}

TEST(LayerTest, BadShapesAndParametersAreConfigErrors) {
  EXPECT_THROW(MakeLayer("{impl: conv2d, out_channels: 4, kernel: 3}")->Build(Shape{10}, 0),
               ConfigError);
  EXPECT_THROW(MakeLayer("{impl: conv2d, out_channels: 4, kernel: 7}")->Build(Shape{5, 5, 1}, 0),
               ConfigError);
  EXPECT_THROW(MakeLayer("{impl: max_pool2d, kernel: 2}")->Build(Shape{8}, 0), ConfigError);
  EXPECT_THROW(MakeLayer("{impl: max_pool2d, kernel: 2, padding: 2}"), ConfigError);
  EXPECT_THROW(MakeLayer("{impl: dropout, p: 1.0}"), ConfigError);
  EXPECT_THROW(MakeLayer("{impl: linear}"), ConfigError);  // out_features is required
  EXPECT_THROW(MakeLayer("{impl: linear, out_feature: 3}"), ConfigError);
}

// A forward + backward pass on benchmark-sized shapes, so that work really is split.
struct StepResultTensors {
  std::vector<std::vector<float>> tensors;
};

StepResultTensors RunStep(const std::string& yaml, const Shape& input, int64_t batch, int threads,
                          Inputs inputs) {
  ThreadPool pool(threads);
  auto layer = MakeLayer(yaml);
  layer->Build(input, 99);
  Tensor x(input.WithBatch(batch));
  FillInputs(x, inputs, 5);
  StepContext ctx;
  ctx.seed = 8;
  ctx.step = 2;
  ctx.pool = &pool;
  Tensor y, dx;
  layer->Forward(x, y, ctx);
  Tensor dy(y.shape());
  FillInputs(dy, Inputs::kUniform, 6);
  layer->ComputeGradient(dy, ctx);
  layer->PropagateError(dy, dx, ctx);
  StepResultTensors out;
  auto add = [&](const Tensor& t) { out.tensors.emplace_back(t.data(), t.data() + t.numel()); };
  add(y);
  add(dx);
  for (Parameter* p : layer->Parameters()) add(p->grad);
  for (auto& [name, t] : layer->Buffers()) add(*t);
  return out;
}

TEST(LayerTest, ForwardAndBackwardAreBitIdenticalAtOneAndTwoThreads) {
  const GradCase cases[] = {
      {"{impl: conv2d, out_channels: 16, kernel: 5, padding: 2}", Shape{28, 28, 1}, 64},
      {"{impl: conv2d, out_channels: 32, kernel: 5, padding: 2}", Shape{14, 14, 16}, 64},
      {"{impl: conv2d, out_channels: 8, kernel: 3, stride: 2, padding: 1}", Shape{15, 15, 3}, 37},
      {"{impl: conv2d, out_channels: 32, kernel: 5, padding: 2}", Shape{14, 14, 16}, 20},
      {"{impl: linear, out_features: 256}", Shape{784}, 64},
      {"{impl: linear, out_features: 128}", Shape{256}, 64},
      {"{impl: linear, out_features: 10}", Shape{1568}, 61},
      {"{impl: relu}", Shape{28, 28, 16}, 64},
      {"{impl: max_pool2d, kernel: 2}", Shape{28, 28, 16}, 64},
      {"{impl: max_pool2d, kernel: 3, stride: 2, padding: 1}", Shape{14, 14, 8}, 33},
      {"{impl: avg_pool2d, kernel: 3, stride: 2, padding: 1}", Shape{14, 14, 8}, 33},
      {"{impl: flatten}", Shape{7, 7, 32}, 64},
      {"{impl: dropout, p: 0.5}", Shape{4097}, 33},
      {"{impl: batch_norm}", Shape{14, 14, 16}, 64},
      {"{impl: batch_norm}", Shape{300}, 64},
      {"{impl: linear, out_features: 64, over: last}", Shape{49, 32}, 33},
      {"{impl: gelu}", Shape{49, 64}, 33},
      {"{impl: layer_norm}", Shape{49, 64}, 33},
      {"{impl: softmax, dim: 0}", Shape{49, 16}, 33},
      {"{impl: global_avg_pool}", Shape{8, 8, 64}, 33},
      {"{impl: position_embedding}", Shape{7, 7, 32}, 33},
  };
  std::set<std::string> covered = MultiInputLayers();
  for (const GradCase& c : cases) {
    SCOPED_TRACE(c.yaml);
    covered.insert(ImplOf(c.yaml));
    StepResultTensors one = RunStep(c.yaml, c.input, c.batch, 1, c.inputs);
    StepResultTensors two = RunStep(c.yaml, c.input, c.batch, 2, c.inputs);
    ASSERT_EQ(one.tensors.size(), two.tensors.size());
    for (size_t i = 0; i < one.tensors.size(); ++i) EXPECT_EQ(one.tensors[i], two.tensors[i]) << i;
  }
  for (const ImplInfo* info : RegistryIndex::Implementations(Layer::kRoleName)) {
    EXPECT_TRUE(covered.count(info->name)) << "no thread bit-identity case for " << info->name;
  }
}

}  // namespace
}  // namespace pim
