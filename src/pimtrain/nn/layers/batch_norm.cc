// `batch_norm`: per-channel normalization of the last dimension, then scale and shift.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

// Ioffe & Szegedy (ICML 2015), PyTorch's conventions. With M = rows (every position of every
// sample) and per channel c:
// FP (train): mu = (1/M) sum x,  var = (1/M) sum (x - mu)^2 (one pass: shifted sums, in double),
//             xhat = (x - mu) / sqrt(var + eps),
//             y = gamma xhat + beta;  running_mean += momentum (mu - running_mean),
//             running_var += momentum (var * M/(M-1) - running_var)   (unbiased, as PyTorch)
// FP (eval):  xhat = (x - running_mean) / sqrt(running_var + eps)
// BP:         dx = gamma / sqrt(var + eps) * (dy - (1/M) sum dy - xhat (1/M) sum dy xhat)
// GC:         dgamma = sum dy xhat,  dbeta = sum dy
// Channel sums are split over channels (each thread owns whole channels and walks every row in
// order, in double), elementwise passes over rows: no result depends on the thread count.
class BatchNorm final : public Layer {
 public:
  explicit BatchNorm(const ConfigNode& p)
      : where_(p.Where()),
        momentum_(p.GetDouble("momentum")),
        eps_(p.GetDouble("eps")),
        affine_(p.GetBool("affine")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("momentum")
              .Default(0.1)
              .Range(0, 1)
              .Doc("weight of the batch in the running statistics"));
    s.Add(Param::Float("eps").Default(1e-5).Range(0, 1).Doc("added to the variance"));
    s.Add(Param::Bool("affine").Default(true).Doc("learn a per-channel scale and shift"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t) override {
    if (input.rank() == 0 || input.numel() <= 0) {
      throw ConfigError(where_ + ": batch_norm needs a non-empty input, got " + input.ToString());
    }
    shape_ = input;
    c_ = input[input.rank() - 1];
    if (affine_) {
      gamma_ = {"gamma", Tensor(Shape{c_}), Tensor(Shape{c_})};
      gamma_.value.Fill(1.0f);
      beta_ = {"beta", Tensor(Shape{c_}), Tensor(Shape{c_})};
    }
    running_mean_ = Tensor(Shape{c_});
    running_var_ = Tensor(Shape{c_});
    running_var_.Fill(1.0f);
    mean_ = Tensor(Shape{c_});
    inv_std_ = Tensor(Shape{c_});
    scale_ = Tensor(Shape{c_});
    shift_ = Tensor(Shape{c_});
    sum_dy_ = Tensor(Shape{c_});
    sum_dy_xhat_ = Tensor(Shape{c_});
    return input;
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    PIM_CHECK_MSG(x.shape().DropFirst() == shape_, "batch_norm input " + x.shape().ToString());
    x_ = &x;
    sums_of_ = nullptr;
    const int64_t rows = x.numel() / c_;
    y.Resize(x.shape());
    ThreadPool& pool = PoolOf(ctx);
    if (ctx.mode == Mode::kTrain) {
      const float* in = x.data();
      const double unbias = rows > 1 ? static_cast<double>(rows) / (rows - 1) : 1.0;
      // One pass over x: sums of d = x - k and d^2 with k = the first row's value (shifted
      // sums, in double: no cancellation to speak of, as |mean - k| is about sigma), then
      // mu = k + S1 / M and var = S2 / M - (S1 / M)^2.
      ForChannels(pool, rows, [&](int64_t c0, int64_t c1) {
        const int64_t nc = c1 - c0;
        std::vector<double>& acc = Scratch(3 * nc);
        double* __restrict s1 = acc.data();
        double* __restrict s2 = acc.data() + nc;
        double* __restrict k = acc.data() + 2 * nc;
        for (int64_t c = 0; c < nc; ++c) k[c] = in[c0 + c];
        for (int64_t r = 0; r < rows; ++r) {
          const float* row = in + r * c_ + c0;
          for (int64_t c = 0; c < nc; ++c) {
            const double d = static_cast<double>(row[c]) - k[c];
            s1[c] += d;
            s2[c] += d * d;
          }
        }
        for (int64_t c = c0; c < c1; ++c) {
          const double m1 = s1[c - c0] / rows;
          mean_[c] = static_cast<float>(k[c - c0] + m1);
          const double var = std::max(0.0, s2[c - c0] / rows - m1 * m1);
          inv_std_[c] = static_cast<float>(1.0 / std::sqrt(var + eps_));
          running_mean_[c] =
              static_cast<float>(running_mean_[c] + momentum_ * (mean_[c] - running_mean_[c]));
          running_var_[c] =
              static_cast<float>(running_var_[c] + momentum_ * (var * unbias - running_var_[c]));
        }
      });
    } else {
      for (int64_t c = 0; c < c_; ++c) {
        mean_[c] = running_mean_[c];
        inv_std_[c] =
            static_cast<float>(1.0 / std::sqrt(static_cast<double>(running_var_[c]) + eps_));
      }
    }
    // y = (x - mu) * (gamma / sigma) + beta.
    for (int64_t c = 0; c < c_; ++c) {
      scale_[c] = affine_ ? gamma_.value[c] * inv_std_[c] : inv_std_[c];
      shift_[c] = affine_ ? beta_.value[c] : 0.0f;
    }
    const float* in = x.data();
    float* out = y.data();
    ForRows(pool, rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = in + r * c_;
        float* yr = out + r * c_;
        for (int64_t c = 0; c < c_; ++c) yr[c] = (xr[c] - mean_[c]) * scale_[c] + shift_[c];
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    ThreadPool& pool = PoolOf(ctx);
    const int64_t rows = dy.numel() / c_;
    // GC of this step summed the same dy already (every algorithm runs GC, then BP, on one
    // error tensor): the same sums, one pass over x and dy fewer.
    if (sums_of_ != dy.data() || sums_rows_ != rows) ChannelSums(pool, dy, rows);
    sums_of_ = nullptr;
    dx.Resize(dy.shape());
    // dx = (gamma / sigma) * (dy - mean(dy) - xhat * mean(dy xhat)); scale_ = gamma / sigma.
    const float inv_rows = 1.0f / static_cast<float>(rows);
    const float* in = x_->data();
    const float* d = dy.data();
    float* out = dx.data();
    ForRows(pool, rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = in + r * c_;
        const float* dr = d + r * c_;
        float* o = out + r * c_;
        for (int64_t c = 0; c < c_; ++c) {
          const float xhat = (xr[c] - mean_[c]) * inv_std_[c];
          o[c] = scale_[c] * (dr[c] - sum_dy_[c] * inv_rows - xhat * sum_dy_xhat_[c] * inv_rows);
        }
      }
    });
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    if (!affine_) return;
    ChannelSums(PoolOf(ctx), dy, dy.numel() / c_);
    sums_of_ = dy.data();
    sums_rows_ = dy.numel() / c_;
    for (int64_t c = 0; c < c_; ++c) {
      gamma_.grad[c] = sum_dy_xhat_[c];
      beta_.grad[c] = sum_dy_[c];
    }
  }

  std::vector<Parameter*> Parameters() override {
    if (affine_) return {&gamma_, &beta_};
    return {};
  }
  std::vector<std::pair<std::string, Tensor*>> Buffers() override {
    return {{"running_mean", &running_mean_}, {"running_var", &running_var_}};
  }

  std::string Summary() const override {
    return "batch_norm " + shape_.ToString() + " over " + std::to_string(c_) + " channels" +
           (affine_ ? "" : " (no affine)");
  }

 private:
  static constexpr int64_t kMaxLocalChannels = 256;
  // Per-thread double accumulators for channels [c0, c1), zeroed.
  static std::vector<double>& Scratch(int64_t n) {
    thread_local std::vector<double> acc;
    acc.assign(n, 0.0);
    return acc;
  }

  // sum_dy_ = sum dy, sum_dy_xhat_ = sum dy * xhat over every row, per channel.
  void ChannelSums(ThreadPool& pool, const Tensor& dy, int64_t rows) {
    const float* in = x_->data();
    const float* d = dy.data();
    ForChannels(pool, rows, [&](int64_t c0, int64_t c1) {
      const int64_t nc = c1 - c0;
      std::vector<double>& acc = Scratch(2 * nc);
      double* __restrict s_dy = acc.data();
      double* __restrict s_dyx = acc.data() + nc;
      // The channel range's mean and 1/sigma in locals the compiler knows are not written.
      float mu[kMaxLocalChannels], is[kMaxLocalChannels];
      const bool local = nc <= kMaxLocalChannels;
      const float* __restrict m = local ? mu : mean_.data() + c0;
      const float* __restrict v = local ? is : inv_std_.data() + c0;
      if (local) {
        std::copy(mean_.data() + c0, mean_.data() + c1, mu);
        std::copy(inv_std_.data() + c0, inv_std_.data() + c1, is);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = in + r * c_ + c0;
        const float* dr = d + r * c_ + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const float xhat = (xr[c] - m[c]) * v[c];
          s_dy[c] += dr[c];
          s_dyx[c] += static_cast<double>(dr[c]) * xhat;
        }
      }
      for (int64_t c = c0; c < c1; ++c) {
        sum_dy_[c] = static_cast<float>(s_dy[c - c0]);
        sum_dy_xhat_[c] = static_cast<float>(s_dyx[c - c0]);
      }
    });
  }

  template <class Fn>
  void ForChannels(ThreadPool& pool, int64_t rows, Fn&& fn) {
    pool.ParallelFor(c_, std::max<int64_t>(8, 65536 / std::max<int64_t>(1, rows)), fn);
  }
  template <class Fn>
  void ForRows(ThreadPool& pool, int64_t rows, Fn&& fn) {
    pool.ParallelFor(rows, std::max<int64_t>(1, 16384 / c_), fn);
  }

  std::string where_;
  double momentum_, eps_;
  bool affine_;
  Shape shape_;
  int64_t c_ = 0;
  Parameter gamma_, beta_;
  Tensor running_mean_, running_var_;
  // Per channel, from the last Forward: the mean and 1/sigma used, gamma/sigma and the shift;
  // then the backward sums.
  Tensor mean_, inv_std_, scale_, shift_, sum_dy_, sum_dy_xhat_;
  const Tensor* x_ = nullptr;
  // The error tensor (and its rows) whose sums sum_dy_ / sum_dy_xhat_ hold, from GC; nullptr
  // once BP used them or a new FP ran.
  const float* sums_of_ = nullptr;
  int64_t sums_rows_ = 0;
};

PIM_REGISTER(Layer, BatchNorm, "batch_norm",
             "batch normalization over the last (channel) dimension, any input rank");

}  // namespace
}  // namespace pim
