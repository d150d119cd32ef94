// `attention_core`: the two activation-activation products of multi-head self-attention,
// softmax(Q K^T / sqrt(d)) V, digital (FP32) or on the macro with K and V written into it first.
#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {

ThreadPool& SerialPool() {
  static ThreadPool pool(1);
  return pool;
}

// Vaswani et al., "Attention Is All You Need" (NeurIPS 2017), eq. 1, per sample and head h
// (columns h*dh .. (h+1)*dh of the (T, D) inputs Q, K, V, dh = D / heads, s = 1/sqrt(dh)):
// FP:  S = s Q_h K_h^T (T x T),  A = softmax over each row of S,  O_h = A V_h
// BP:  dA = dO_h V_h^T,  dV_h = A^T dO_h,  dS = A (dA - rowsum(dA A)),
//      dQ_h = s dS K_h,  dK_h = s dS^T Q_h
// No parameters: the Q, K, V and output projections are the `linear` nodes around it (the
// self_attention block of a graph model).
// products: digital -> FP32 GEMMs, each (sample, head) on one thread (any thread count gives
// the same bits). products: macro -> one macro (matmul(), attached like a weighted layer's) runs
// both products of every (sample, head) in turn: K_h^T (dh x T) is programmed and Q_h read
// through it (FP), then V_h (T x dh) and A read through it; BP writes V_h and K_h^T again and
// reads them transposed (dA, dQ) and runs the GC path for dV_h and dK_h^T. Every write is
// counted in the stage that needs it (FP or BP), which is what makes attention expensive on
// PIM: the operands change with every sample. The softmax and the scaling stay digital.
class AttentionCore final : public Layer {
 public:
  explicit AttentionCore(const ConfigNode& p)
      : where_(p.Where()),
        heads_(p.GetInt("heads")),
        on_macro_(p.GetString("products") == "macro") {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("heads").Default(1).Range(1, 4096).Doc("attention heads"));
    s.Add(Param::Enum("products", {"digital", "macro"}).Default("digital")
              .Doc("Q K^T and A V: FP32 beside the macro, or on it (operands written first)"));
    return s;
  }

  int num_inputs() const override { return 3; }
  Shape Build(const Shape&, uint64_t) override {
    throw ConfigError(where_ + ": attention_core reads Q, K and V: use it in a graph model (the "
                      "self_attention block)");
  }
  Shape BuildInputs(const std::vector<Shape>& in, uint64_t) override {
    for (size_t k = 0; k < 3; ++k) {
      if (in[k].rank() != 2 || in[k] != in[0]) {
        throw ConfigError(where_ + ": attention_core needs Q, K, V of one (tokens, dim) shape, " +
                          "got " + in[0].ToString() + ", " + in[1].ToString() + ", " +
                          in[2].ToString());
      }
    }
    t_ = in[0][0];
    d_ = in[0][1];
    if (d_ % heads_ != 0) {
      throw ConfigError(where_ + ": dim " + std::to_string(d_) + " is not divisible by " +
                        std::to_string(heads_) + " heads");
    }
    dh_ = d_ / heads_;
    scale_ = 1.0f / std::sqrt(static_cast<float>(dh_));
    return in[0];
  }
  void Forward(const Tensor&, Tensor&, const StepContext&) override {
    PIM_CHECK_MSG(false, "attention_core has three inputs (ForwardInputs)");
  }
  void PropagateError(const Tensor&, Tensor&, const StepContext&) override {
    PIM_CHECK_MSG(false, "attention_core has three inputs (PropagateErrorInputs)");
  }

  StagedMatmul* matmul() override { return on_macro_ ? &mm_ : nullptr; }

  void ForwardInputs(const std::vector<const Tensor*>& xs, Tensor& y,
                     const StepContext& ctx) override {
    q_ = xs[0];
    k_ = xs[1];
    v_ = xs[2];
    n_ = q_->shape()[0];
    y.Resize(q_->shape());
    attn_.Resize(Shape{n_ * heads_, t_, t_});
    if (mm_.on_macro()) {
      MacroForward(y, ctx);
      return;
    }
    PoolOf(ctx).ParallelFor(n_ * heads_, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t s = p / heads_, h = p % heads_;
        float* a = attn_.data() + p * t_ * t_;
        Gemm(false, true, t_, t_, dh_, scale_, Col(*q_, s, h), d_, Col(*k_, s, h), d_, a, t_);
        RowSoftmax(a);
        Gemm(false, false, t_, dh_, t_, 1.0f, a, t_, Col(*v_, s, h), d_, Col(y, s, h), d_);
      }
    });
  }

  void PropagateErrorInputs(const Tensor& dy, const std::vector<Tensor*>& dxs,
                            const StepContext& ctx) override {
    for (Tensor* dx : dxs) dx->Resize(q_->shape());
    Tensor& dq = *dxs[0];
    Tensor& dk = *dxs[1];
    Tensor& dv = *dxs[2];
    if (mm_.on_macro()) {
      MacroBackward(dy, dq, dk, dv, ctx);
      return;
    }
    PoolOf(ctx).ParallelFor(n_ * heads_, 1, [&](int64_t p0, int64_t p1) {
      thread_local Tensor ds;
      if (ds.numel() < t_ * t_) ds.Resize(Shape{t_ * t_});
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t s = p / heads_, h = p % heads_;
        const float* a = attn_.data() + p * t_ * t_;
        Gemm(false, true, t_, t_, dh_, 1.0f, Col(dy, s, h), d_, Col(*v_, s, h), d_, ds.data(),
             t_);
        Gemm(true, false, t_, dh_, t_, 1.0f, a, t_, Col(dy, s, h), d_, Col(dv, s, h), d_);
        SoftmaxBackward(a, ds.data(), scale_);
        Gemm(false, false, t_, dh_, t_, 1.0f, ds.data(), t_, Col(*k_, s, h), d_, Col(dq, s, h),
             d_);
        Gemm(true, false, t_, dh_, t_, 1.0f, ds.data(), t_, Col(*q_, s, h), d_, Col(dk, s, h),
             d_);
      }
    });
  }

  std::string Summary() const override {
    return "attention_core " + std::to_string(heads_) + " heads x " + std::to_string(dh_) +
           " over " + std::to_string(t_) + " tokens: Q K^T and A V " +
           (on_macro_ ? "on the macro (K, V written into the array per sample and head)"
                      : "digital (FP32, not on the macro)");
  }
  int64_t ForwardMacsPerSample() const override { return 2 * t_ * t_ * d_; }

 private:
  const float* Col(const Tensor& t, int64_t s, int64_t h) const {
    return t.data() + s * t_ * d_ + h * dh_;
  }
  float* Col(Tensor& t, int64_t s, int64_t h) const { return t.data() + s * t_ * d_ + h * dh_; }

  static void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
    kernels::GemmArgs g;
    g.trans_a = ta ? kernels::Trans::kYes : kernels::Trans::kNo;
    g.trans_b = tb ? kernels::Trans::kYes : kernels::Trans::kNo;
    g.m = m;
    g.n = n;
    g.k = k;
    g.alpha = alpha;
    g.a = a;
    g.lda = lda;
    g.b = b;
    g.ldb = ldb;
    g.c = c;
    g.ldc = ldc;
    kernels::fast::Gemm(g, &SerialPool());
  }

  // Each row of the T x T matrix a: max-shifted softmax in double.
  void RowSoftmax(float* a) const {
    for (int64_t i = 0; i < t_; ++i) {
      float* r = a + i * t_;
      float m = r[0];
      for (int64_t j = 1; j < t_; ++j) m = std::max(m, r[j]);
      double sum = 0;
      for (int64_t j = 0; j < t_; ++j) sum += std::exp(double{r[j]} - m);
      for (int64_t j = 0; j < t_; ++j) r[j] = static_cast<float>(std::exp(double{r[j]} - m) / sum);
    }
  }
  // da (dL/dA) -> scale * dL/dS in place.
  void SoftmaxBackward(const float* a, float* da, float scale) const {
    for (int64_t i = 0; i < t_; ++i) {
      const float* ar = a + i * t_;
      float* dr = da + i * t_;
      double dot = 0;
      for (int64_t j = 0; j < t_; ++j) dot += double{dr[j]} * ar[j];
      for (int64_t j = 0; j < t_; ++j) dr[j] = static_cast<float>(scale * ar[j] * (dr[j] - dot));
    }
  }

  // Head h of sample s into a contiguous matrix: K_h^T (dh x T) or V_h (T x dh).
  void LoadKt(int64_t s, int64_t h) {
    kt_.Resize(Shape{dh_, t_});
    const float* k = Col(*k_, s, h);
    for (int64_t i = 0; i < t_; ++i) {
      for (int64_t j = 0; j < dh_; ++j) kt_[j * t_ + i] = k[i * d_ + j];
    }
  }
  void LoadV(int64_t s, int64_t h) {
    vh_.Resize(Shape{t_, dh_});
    const float* v = Col(*v_, s, h);
    for (int64_t i = 0; i < t_; ++i) {
      for (int64_t j = 0; j < dh_; ++j) vh_[i * dh_ + j] = v[i * d_ + j];
    }
  }

  void MacroForward(Tensor& y, const StepContext& ctx) {
    // Inputs are scaled per tensor (the whole Q, the whole A), as a weighted layer's are.
    const float q_max = MaxAbs(q_->AsMatrix());
    ThreadPool* pool = &PoolOf(ctx);
    for (int64_t p = 0; p < n_ * heads_; ++p) {
      const int64_t s = p / heads_, h = p % heads_;
      float* a = attn_.data() + p * t_ * t_;
      LoadKt(s, h);
      mm_.Commit(kt_, ctx, Stage::kForward);
      mm_.Forward(ConstMatrixView(Col(*q_, s, h), t_, dh_, d_), kt_, nullptr,
                  MatrixView{a, t_, t_, t_}, q_max, ctx, pool);
      for (int64_t i = 0; i < t_ * t_; ++i) a[i] *= scale_;
      RowSoftmax(a);
    }
    const float a_max = MaxAbs(attn_.AsMatrix());
    for (int64_t p = 0; p < n_ * heads_; ++p) {
      const int64_t s = p / heads_, h = p % heads_;
      LoadV(s, h);
      mm_.Commit(vh_, ctx, Stage::kForward);
      mm_.Forward(ConstMatrixView(attn_.data() + p * t_ * t_, t_, t_, t_), vh_, nullptr,
                  MatrixView{Col(y, s, h), t_, dh_, d_}, a_max, ctx, pool);
    }
  }

  void MacroBackward(const Tensor& dy, Tensor& dq, Tensor& dk, Tensor& dv,
                     const StepContext& ctx) {
    ThreadPool* pool = &PoolOf(ctx);
    ds_.Resize(Shape{n_ * heads_, t_, t_});
    const float dy_max = MaxAbs(dy.AsMatrix());
    Tensor dvh(Shape{t_, dh_}), dkt(Shape{dh_, t_});
    for (int64_t p = 0; p < n_ * heads_; ++p) {
      const int64_t s = p / heads_, h = p % heads_;
      const float* a = attn_.data() + p * t_ * t_;
      float* ds = ds_.data() + p * t_ * t_;
      LoadV(s, h);
      mm_.Commit(vh_, ctx, Stage::kBackward);
      mm_.Backward(ConstMatrixView(Col(dy, s, h), t_, dh_, d_), vh_, MatrixView{ds, t_, t_, t_},
                   dy_max, ctx, pool);
      mm_.Gradient(ConstMatrixView(a, t_, t_, t_), ConstMatrixView(Col(dy, s, h), t_, dh_, d_),
                   dvh.AsMatrix(), ctx, pool);
      float* dvp = Col(dv, s, h);
      for (int64_t i = 0; i < t_; ++i) {
        for (int64_t j = 0; j < dh_; ++j) dvp[i * d_ + j] = dvh[i * dh_ + j];
      }
      SoftmaxBackward(a, ds, scale_);
    }
    const float ds_max = MaxAbs(ds_.AsMatrix());
    for (int64_t p = 0; p < n_ * heads_; ++p) {
      const int64_t s = p / heads_, h = p % heads_;
      const float* ds = ds_.data() + p * t_ * t_;
      LoadKt(s, h);
      mm_.Commit(kt_, ctx, Stage::kBackward);
      mm_.Backward(ConstMatrixView(ds, t_, t_, t_), kt_, MatrixView{Col(dq, s, h), t_, dh_, d_},
                   ds_max, ctx, pool);
      // GC path: Q_h^T dS = (dK_h)^T.
      mm_.Gradient(ConstMatrixView(Col(*q_, s, h), t_, dh_, d_), ConstMatrixView(ds, t_, t_, t_),
                   dkt.AsMatrix(), ctx, pool);
      float* dkp = Col(dk, s, h);
      for (int64_t i = 0; i < t_; ++i) {
        for (int64_t j = 0; j < dh_; ++j) dkp[i * d_ + j] = dkt[j * t_ + i];
      }
    }
  }

  std::string where_;
  int64_t heads_;
  bool on_macro_;
  int64_t t_ = 0, d_ = 0, dh_ = 0, n_ = 0;
  float scale_ = 1.0f;
  const Tensor *q_ = nullptr, *k_ = nullptr, *v_ = nullptr;
  Tensor attn_;    // A of every (sample, head), (N * heads, T, T)
  Tensor ds_;      // dS of every (sample, head) on the macro path
  Tensor kt_, vh_;  // the operand last written into the macro
  StagedMatmul mm_;
};

PIM_REGISTER(Layer, AttentionCore, "attention_core",
             "softmax(Q K^T / sqrt(d)) V over heads: digital or on the macro (operands written)");

}  // namespace
}  // namespace pim
