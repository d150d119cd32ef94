// `local_error_prediction`: every hidden weighted layer's error predicted locally from fixed
// random power-of-two matrices instead of propagated back through the next layer's weights.
// SP-PIM (J.-H. Kim, J. Heo, W. Han, J. Kim, J.-Y. Kim, KAIST; VLSI 2023 and IEEE JSSC 59(8),
// 2024): the chip's error prediction unit (EPU) replaces BP, so a layer's GC and WU need not
// wait for the layers above it. The paper does not publish the rule; both variants here are
// [assume]. Equations, and what is paper and what assumed: docs/local_error_prediction.md.
#include "pimtrain/train/impl/local_error_prediction.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {

PIM_DECLARE_COUNTERS(
    ErrorPredictionUnitCounters, "error prediction unit",
    {"epu_shift_adds", "add", "BP", "shift-adds of the power-of-two feedback (16-bit)"},
    {"epu_reads", "entry", "BP", "feedback entries read (one byte: sign and exponent)"},
    {"epu_sign_flips", "element", "BP", "sign flips of negative feedback entries"},
    {"epu_softmax_exps", "exp", "BP", "softmax exponentials of the output error"},
    {"epu_mask_ops", "element", "BP", "ReLU-derivative masks applied to predicted errors"});

uint64_t PotMatrixKey(uint64_t seed, int layer) {
  return MixKey(seed, 0x5EED1E9, static_cast<uint64_t>(layer));
}

float PotEntry(uint64_t key, int64_t r, int64_t c, int64_t cols, const PotMatrixParams& p) {
  const auto b = CounterRng(key, 0).Block(static_cast<uint64_t>(r * cols + c));
  if (!(CounterRng::ToUnitFloat(b[0]) < p.density)) return 0.0f;
  const uint64_t span = static_cast<uint64_t>(p.k_max - p.k_min + 1);
  const int k = p.k_min + static_cast<int>((static_cast<uint64_t>(b[2]) * span) >> 32);
  const float magnitude = std::ldexp(1.0f, -k);
  return (b[1] & 1u) != 0 ? -magnitude : magnitude;
}

PotMatrix::PotMatrix(uint64_t key, int64_t rows, int64_t cols, const PotMatrixParams& p)
    : rows_(rows), cols_(cols), m_(rows * cols), mt_(rows * cols) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = PotEntry(key, r, c, cols, p);
      m_[r * cols + c] = v;
      mt_[c * rows + r] = v;
      nonzeros_ += v != 0.0f;
      negatives_ += v < 0.0f;
    }
  }
}

namespace {
// Samples per parallel chunk: at least ~256K multiply-adds, so that an MLP's batch (64 x 256 x
// 10) runs inline: waking the pool costs more than the product, and much more on a loaded machine.
int64_t SampleGrain(int64_t work_per_sample) {
  return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, work_per_sample));
}
}  // namespace

// Threads own whole samples (independent outputs); each sum has one fixed order.
void PotMatrix::Project(ConstMatrixView e, MatrixView out, ThreadPool& pool) const {
  PIM_CHECK(e.cols == cols_ && out.cols == rows_ && e.rows == out.rows);
  pool.ParallelFor(e.rows, SampleGrain(rows_ * cols_), [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const float* es = e.Row(s);
      float* o = out.Row(s);
      std::fill(o, o + rows_, 0.0f);
      // Class by class over all rows: each o[r] still adds its terms in ascending c.
      for (int64_t c = 0; c < cols_; ++c) {
        const float ec = es[c];
        const float* col = mt_.data() + c * rows_;
        for (int64_t r = 0; r < rows_; ++r) o[r] += col[r] * ec;
      }
    }
  });
}

// Tiles of 8 samples: h's tile transposed to rows x 8, then one 8-wide accumulator per class
// (a lane per sample) adds h[., r] * M[r][c] over r. Each z[s][c] still adds its terms in
// ascending r, from +0, zero terms included (which change no bit).
void PotMatrix::Reduce(ConstMatrixView h, MatrixView z, ThreadPool& pool) const {
  PIM_CHECK(h.cols == rows_ && z.cols == cols_ && h.rows == z.rows);
  constexpr int64_t kTile = 8;
  using F8 = float __attribute__((vector_size(32)));  // one lane per sample of the tile
  pool.ParallelFor(h.rows, SampleGrain(rows_ * cols_), [&](int64_t s0, int64_t s1) {
    std::vector<float> ht(rows_ * kTile);
    std::vector<F8> acc(cols_);
    for (int64_t t0 = s0; t0 < s1; t0 += kTile) {
      const int64_t nt = std::min(kTile, s1 - t0);
      std::fill(ht.begin(), ht.end(), 0.0f);
      for (int64_t t = 0; t < nt; ++t) {
        const float* hs = h.Row(t0 + t);
        for (int64_t r = 0; r < rows_; ++r) ht[r * kTile + t] = hs[r];
      }
      // One accumulator per class: independent add chains, r ascending in each.
      std::fill(acc.begin(), acc.end(), F8{});
      for (int64_t r = 0; r < rows_; ++r) {
        F8 hr;
        std::memcpy(&hr, ht.data() + r * kTile, sizeof(hr));
        const float* row = m_.data() + r * cols_;
        // A separate multiply and add (-ffp-contract=off): no fused rounding.
        for (int64_t c = 0; c < cols_; ++c) acc[c] += hr * row[c];
      }
      for (int64_t t = 0; t < nt; ++t) {
        float* zs = z.Row(t0 + t);
        for (int64_t c = 0; c < cols_; ++c) zs[c] = acc[c][t];
      }
    }
  });
}

namespace {

enum class Variant { kDfa, kLocalClassifier };

// Per-sample element count of a batch tensor (N, ...).
int64_t PerSample(const Tensor& t) {
  const int64_t n = t.shape()[0];
  return n > 0 ? t.numel() / n : 0;
}

// With weighted layers w_0 < w_1 < ... (linear, conv2d) in a network of L layers, layer w_k's
// "block" is w_k and the layers after it up to the next weighted one. Its error is predicted at
// the output of p_k, the last layer of the leading run of block layers that keep w_k's output
// shape (relu, dropout, batch_norm): the activation's output. The layers w_k+1..p_k then run
// their own exact BP and GC on the predicted error, which for a ReLU is the mask
// [h > 0]. The last weighted layer gets the true error, propagated exactly through any layers
// after it.
//
//   dfa:               e_hat = e_out B_k^T                         (N x F_k)
//   local_classifier:  z = h C_k,  d = dLoss(z, y)/dz,  e_hat = d C_k^T
//
// with e_out = dL/dlogits (N x K), h the output of p_k (N x F_k), B_k and C_k fixed F_k x K
// matrices of +-2^-k entries keyed by (seed, w_k).
class LocalErrorPrediction final : public TrainingAlgorithm {
 public:
  explicit LocalErrorPrediction(const ConfigNode& p)
      : where_(p.Where()),
        variant_(p.GetString("variant") == "dfa" ? Variant::kDfa : Variant::kLocalClassifier) {
    params_.density = p.GetDouble("density");
    params_.k_min = static_cast<int>(p.GetInt("k_min"));
    params_.k_max = static_cast<int>(p.GetInt("k_max"));
    if (params_.k_max < params_.k_min) {
      throw ConfigError(p.At("k_max").Where() + ": k_max " + std::to_string(params_.k_max) +
                        " is below k_min " + std::to_string(params_.k_min));
    }
    if (params_.density <= 0.0) {
      throw ConfigError(p.At("density").Where() + ": density " + p.At("density").text() +
                        " must be above 0 (a zero matrix predicts no error)");
    }
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Enum("variant", {"dfa", "local_classifier"})
              .Default("dfa")
              .Doc("dfa: e_l = (e_out B_l^T) masked by the activation derivative; "
                   "local_classifier: e_l = dCE(h_l C_l, y)/dh_l masked likewise"));
    s.Add(Param::Int("k_min").Default(4).Range(0, 30)
              .Doc("smallest exponent k of the +-2^-k matrix entries (largest magnitude)"));
    s.Add(Param::Int("k_max").Default(5).Range(0, 30)
              .Doc("largest exponent k of the +-2^-k matrix entries (smallest magnitude)"));
    s.Add(Param::Float("density").Default(1.0).Range(0, 1)
              .Doc("probability that a matrix entry is nonzero, in (0, 1]"));
    return s;
  }

  void Setup(Network& net, uint64_t seed) override {
    seed_ = seed;
    if (net.is_graph()) {
      throw UnsupportedError(where_ + ": local_error_prediction needs a stack of layers "
                             "(sequential or mlp); the model is a graph");
    }
    blocks_.clear();
    planned_ = false;
    for (int i = 0; i < net.size(); ++i) {
      if (net.layer(i).matmul() != nullptr) {
        Block b;
        b.layer = i;
        blocks_.push_back(std::move(b));
      }
    }
    if (blocks_.empty()) {
      throw UnsupportedError(where_ + ": local_error_prediction needs a weighted layer (linear "
                             "or conv2d); the model has none");
    }
    for (int i = 0; i < blocks_.front().layer; ++i) {
      if (!net.layer(i).Parameters().empty()) {
        throw UnsupportedError(where_ + ": layer " + std::to_string(i) + " (" +
                               net.layer(i).Summary() +
                               ") has parameters but comes before the first weighted layer; "
                               "local_error_prediction gives it no error");
      }
    }
  }

  StepResult TrainStep(Network& net, const Tensor& x, const int32_t* labels, Loss& loss,
                       Optimizer& opt, double lr, const StepContext& ctx) override {
    PIM_CHECK_MSG(!blocks_.empty(), "local_error_prediction used before Setup");
    // FP
    const Tensor& logits = net.Forward(x, ctx);
    const int n = net.size();
    LossResult result = loss.Compute(logits, labels, &net.error(n));
    CheckActivationsFinite(net, ctx);
    CheckLossFinite(result.loss_sum, ctx);
    if (!planned_) Plan(net);
    const int64_t batch = logits.shape()[0];
    const int64_t classes = PerSample(logits);
    ThreadPool& pool = PoolOf(ctx);
    // Error prediction (EPU) in place of BP, then GC, top block first (any order gives the same
    // numbers: every block reads only FP results and e_out).
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
      Block& b = *it;
      ActionCounts epu;
      if (b.last) {
        ExactTail(net, b.layer + 1, n - 1, ctx);
      } else {
        const Tensor& h = net.activation(b.pred + 1);
        PIM_CHECK_MSG(PerSample(h) == b.matrix.rows(), "block shape changed between steps");
        Tensor& predicted = net.error(b.pred + 1);
        predicted.Resize(h.shape());
        MatrixView out{predicted.data(), batch, b.matrix.rows(), b.matrix.rows()};
        const int64_t nnz = b.matrix.nonzeros(), neg = b.matrix.negatives();
        if (variant_ == Variant::kDfa) {
          b.matrix.Project(net.error(n).AsMatrix(), out, pool);
          epu.Add("epu_shift_adds", batch * nnz);
          epu.Add("epu_reads", batch * nnz);
          epu.Add("epu_sign_flips", batch * neg);
        } else {
          // The local loss is the run's loss (softmax cross-entropy) on the local logits.
          local_logits_.Resize(Shape{batch, classes});
          b.matrix.Reduce(ConstMatrixView(h.data(), batch, b.matrix.rows(), b.matrix.rows()),
                          local_logits_.AsMatrix(), pool);
          loss.Compute(local_logits_, labels, &local_error_);
          b.matrix.Project(local_error_.AsMatrix(), out, pool);
          epu.Add("epu_shift_adds", 2 * batch * nnz);
          epu.Add("epu_reads", 2 * batch * nnz);
          epu.Add("epu_sign_flips", 2 * batch * neg);
          epu.Add("epu_softmax_exps", batch * classes);
        }
        CheckFinite(predicted, net, b.layer, Stage::kBackward, "predicted error", ctx);
        if (b.pred > b.layer) epu.Add("epu_mask_ops", batch * b.matrix.rows());
        ExactTail(net, b.layer + 1, b.pred, ctx);
      }
      // GC of the weighted layer with its local error.
      Layer& layer = net.layer(b.layer);
      const Tensor& dy = net.error(b.layer + 1);
      layer.ComputeGradient(dy, ctx);
      for (Parameter* p : layer.Parameters()) {
        CheckFinite(p->grad, net, b.layer, Stage::kGradient, p->name + " gradient", ctx);
      }
      // The EPU's work and the error the GC used reach the layer's hardware report under BP,
      // the stage the EPU replaces (only for layers on a macro, like every other count).
      StagedMatmul* m = layer.matmul();
      if (m->on_macro()) {
        m->AddCounts(Stage::kBackward, epu);
        SparsityStats s;
        s.error_elements = dy.numel();
        s.error_zeros = CountZeros(ConstMatrixView(dy.data(), 1, dy.numel(), dy.numel()));
        m->AddSparsity(s);
      }
    }
    // WU
    opt.Step(lr);
    for (int i = 0; i < n; ++i) net.layer(i).CommitUpdate(ctx);
    return {result.loss_sum, result.correct};
  }

 private:
  struct Block {
    int layer = 0;      // the weighted layer
    int pred = 0;       // its error is predicted at this layer's output (pred >= layer)
    bool last = false;  // the last weighted layer: true error
    PotMatrix matrix;   // B (dfa) or C (local_classifier), F x K; empty for the last block
  };

  // GC and exact BP of layers hi..lo (top first), from the error at layer hi's output.
  void ExactTail(Network& net, int lo, int hi, const StepContext& ctx) {
    for (int q = hi; q >= lo; --q) {
      Layer& l = net.layer(q);
      l.ComputeGradient(net.error(q + 1), ctx);
      for (Parameter* p : l.Parameters()) {
        CheckFinite(p->grad, net, q, Stage::kGradient, p->name + " gradient", ctx);
      }
      l.PropagateError(net.error(q + 1), net.error(q), ctx);
      CheckFinite(net.error(q), net, q, Stage::kBackward, "input error", ctx);
    }
  }

  // Fixes each block's prediction point and draws its matrix, from the shapes of the first
  // forward pass (per-sample shapes never change).
  void Plan(Network& net) {
    const int n = net.size();
    const int64_t classes = PerSample(net.activation(n));
    for (size_t k = 0; k < blocks_.size(); ++k) {
      Block& b = blocks_[k];
      b.last = k + 1 == blocks_.size();
      if (b.last) continue;
      const int next = blocks_[k + 1].layer;
      const Shape& out = net.activation(b.layer + 1).shape();
      b.pred = b.layer;
      while (b.pred + 1 < next && net.activation(b.pred + 2).shape() == out) ++b.pred;
      for (int q = b.pred + 1; q < next; ++q) {
        if (!net.layer(q).Parameters().empty()) {
          throw UnsupportedError(
              where_ + ": layer " + std::to_string(q) + " (" + net.layer(q).Summary() +
              ") has parameters but follows a shape change after weighted layer " +
              std::to_string(b.layer) + "; local_error_prediction predicts errors only up to "
              "the first layer that changes the weighted layer's output shape");
        }
      }
      b.matrix = PotMatrix(PotMatrixKey(seed_, b.layer), PerSample(net.activation(b.pred + 1)),
                           classes, params_);
    }
    planned_ = true;
  }

  std::string where_;
  Variant variant_;
  PotMatrixParams params_;
  uint64_t seed_ = 0;
  bool planned_ = false;
  std::vector<Block> blocks_;
  Tensor local_logits_, local_error_;
};

PIM_REGISTER(TrainingAlgorithm, LocalErrorPrediction, "local_error_prediction",
             "SP-PIM local error prediction: hidden-layer errors from fixed random +-2^-k "
             "matrices (dfa or local_classifier), no backpropagation through weights");

}  // namespace
}  // namespace pim
