// `linear`: Y = X W + b with W stored (in, out) = rows x cols, the PIM macro's orientation.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

using kernels::GemmArgs;
using kernels::Trans;

ThreadPool& PoolOf(const StepContext& ctx) { return ctx.pool ? *ctx.pool : DefaultPool(); }

// out[j] = sum_r d[r][j], each column summed in row order. Threads own blocks of 16 columns
// (whole cache lines of a 64-byte-aligned row), never a share of the rows, so the sums do not
// depend on the thread count; the block's partial sums stay in registers across the rows.
void ColumnSums(const float* d, int64_t rows, int64_t cols, float* out, ThreadPool& pool) {
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
  pool.ParallelFor(blocks, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, rows * kBlock)),
                   [&](int64_t b0, int64_t b1) {
                     for (int64_t b = b0; b < b1; ++b) {
                       const int64_t c0 = b * kBlock, len = std::min(kBlock, cols - c0);
                       float acc[kBlock] = {};
                       if (len == kBlock) {
                         for (int64_t r = 0; r < rows; ++r) {
                           const float* row = d + r * cols + c0;
                           for (int64_t j = 0; j < kBlock; ++j) acc[j] += row[j];
                         }
                       } else {
                         for (int64_t r = 0; r < rows; ++r) {
                           const float* row = d + r * cols + c0;
                           for (int64_t j = 0; j < len; ++j) acc[j] += row[j];
                         }
                       }
                       std::copy(acc, acc + len, out + c0);
                     }
                   });
}

// FP:  Y = X W + 1 b^T           (X: N x in, W: in x out)
// BP:  dX = dY W^T
// GC:  dW = X^T dY,  db = 1^T dY  (column sums over the batch)
class Linear final : public Layer {
 public:
  explicit Linear(const ConfigNode& p)
      : where_(p.Where()), out_(p.GetInt("out_features")), has_bias_(p.GetBool("bias")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("out_features").Range(1, 1 << 24).Doc("output width (macro columns)"));
    s.Add(Param::Bool("bias").Default(true).Doc("add a learned bias"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t init_key) override {
    in_ = input.numel();
    if (input.rank() == 0 || in_ <= 0) {
      throw ConfigError(where_ + ": linear needs a non-empty input, got " + input.ToString());
    }
    // PyTorch's default: kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), bias alike.
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
    weight_ = {"weight", Tensor(Shape{in_, out_}), Tensor(Shape{in_, out_})};
    CounterRng w_rng(init_key, 0);
    for (int64_t i = 0; i < weight_.value.numel(); ++i) {
      weight_.value[i] = bound * (2.0f * w_rng.Uniform(i) - 1.0f);
    }
    if (has_bias_) {
      bias_ = {"bias", Tensor(Shape{out_}), Tensor(Shape{out_})};
      CounterRng b_rng(init_key, 1);
      for (int64_t i = 0; i < out_; ++i) bias_.value[i] = bound * (2.0f * b_rng.Uniform(i) - 1.0f);
    }
    return Shape{out_};
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0];
    PIM_CHECK_MSG(x.numel() == n * in_, "linear input " + x.shape().ToString());
    x_ = &x;
    y.Resize(Shape{n, out_});
    // Start C at the bias (beta = 1 below): this replaces the zeroing pass sgemm would do.
    if (has_bias_) {
      for (int64_t i = 0; i < n; ++i) {
        std::copy(bias_.value.data(), bias_.value.data() + out_, y.data() + i * out_);
      }
    }
    GemmArgs g;
    g.m = n;
    g.n = out_;
    g.k = in_;
    g.a = x.data();
    g.lda = in_;
    g.b = weight_.value.data();
    g.ldb = out_;
    g.beta = has_bias_ ? 1.0f : 0.0f;
    g.c = y.data();
    g.ldc = out_;
    kernels::fast::Gemm(g, &PoolOf(ctx));
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    dx.Resize(x_->shape());
    GemmArgs g;
    g.trans_b = Trans::kYes;
    g.m = n;
    g.n = in_;
    g.k = out_;
    g.a = dy.data();
    g.lda = out_;
    g.b = weight_.value.data();
    g.ldb = out_;
    g.c = dx.data();
    g.ldc = in_;
    kernels::fast::Gemm(g, &PoolOf(ctx));
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    GemmArgs g;
    g.trans_a = Trans::kYes;
    g.m = in_;
    g.n = out_;
    g.k = n;
    g.a = x_->data();
    g.lda = in_;
    g.b = dy.data();
    g.ldb = out_;
    g.c = weight_.grad.data();
    g.ldc = out_;
    kernels::fast::Gemm(g, &PoolOf(ctx));
    if (has_bias_) {
      ColumnSums(dy.data(), n, out_, bias_.grad.data(), PoolOf(ctx));
    }
  }

  std::vector<Parameter*> Parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }

  std::string Summary() const override {
    return "linear " + std::to_string(in_) + " -> " + std::to_string(out_) +
           (has_bias_ ? "" : " (no bias)");
  }
  int64_t ForwardMacsPerSample() const override { return in_ * out_; }

 private:
  std::string where_;
  int64_t in_ = 0;
  int64_t out_;
  bool has_bias_;
  Parameter weight_, bias_;
  const Tensor* x_ = nullptr;
};

PIM_REGISTER(Layer, Linear, "linear", "fully connected layer Y = X W + b (W stored in x out)");

}  // namespace
}  // namespace pim
