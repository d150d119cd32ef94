// `conv2d`: NHWC convolution as im2col + GEMM, or direct (kernels/conv_direct.h) for the FP32
// layers DirectConvFits serves; weights (kh*kw*c, oc) = rows x cols.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/conv_direct.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/kernels/im2col.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/nn/weighted_layer.h"

namespace pim {
namespace {



// A pool that runs everything inline, for GEMMs inside an already-parallel loop.
ThreadPool& InlinePool() {
  static ThreadPool pool(1);
  return pool;
}

// Floats of column matrix per image group: small enough that a group's columns are still in
// L2 when the GEMM reads them right after im2col writes them (or col2im reads them right after
// the GEMM writes them).
constexpr int64_t kGroupFloats = 64 * 1024;
// Columns of a whole batch up to this many floats (16 MiB, within the last-level cache) are kept
// from FP for the FP32 GC; larger ones are rebuilt by GC group by group, which costs less than
// writing them out to memory and reading them back (measured on the CNN: keeping the 5 MiB of
// the first conv's columns saves ~0.8 s an epoch over rebuilding them; rebuilding the 20 MiB of
// the second conv's saves ~1.4 s over keeping them).
constexpr int64_t kKeepColumnsFloats = int64_t{4} << 20;
// The FP32 weight gradient sums the image groups in this many fixed parts, each part's groups in
// order into its own buffer, then the parts in order: threads take whole parts, so the sums do
// not depend on the thread count (a power of two: 1, 2 or 4 threads share them evenly).
constexpr int64_t kGradientParts = 4;

// A per-thread, 64-byte-aligned scratch of at least n floats (a GEMM's operand: the same
// alignment on every thread).
float* ThreadScratch(int slot, int64_t n) {
  thread_local Tensor scratch[2];
  if (scratch[slot].numel() < n) scratch[slot].Resize(Shape{n});
  return scratch[slot].data();
}

// With cols = im2col(X) (N*OH*OW x KH*KW*C):
// FP:  Y = cols W + 1 b^T        (Y: N*OH*OW x OC, which is NHWC)
// BP:  dX = col2im(dY W^T)
// GC:  dW = cols^T dY,  db = 1^T dY
// Work is split over groups of whole images (independent outputs); the group size depends only
// on the geometry, so every GEMM call and every sum is the same for any thread count.
class Conv2d final : public WeightedLayer {
 public:
  explicit Conv2d(const ConfigNode& p)
      : WeightedLayer(p.GetBool("bias")),
        where_(p.Where()),
        oc_(p.GetInt("out_channels")),
        k_(p.GetInt("kernel")),
        stride_(p.GetInt("stride")),
        pad_(p.GetInt("padding")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("out_channels").Range(1, 1 << 20).Doc("output channels (macro columns)"));
    s.Add(Param::Int("kernel").Range(1, 1024).Doc("kernel height and width"));
    s.Add(Param::Int("stride").Default(1).Range(1, 1024).Doc("step between windows"));
    s.Add(Param::Int("padding").Default(0).Range(0, 1024).Doc("zeros added on each side"));
    s.Add(Param::Bool("bias").Default(true).Doc("add a learned bias per output channel"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t init_key) override {
    if (input.rank() != 3 || input.numel() <= 0) {
      throw ConfigError(where_ + ": conv2d needs (height, width, channels) input, got " +
                        input.ToString());
    }
    geom_.h = input[0];
    geom_.w = input[1];
    geom_.c = input[2];
    geom_.kh = geom_.kw = k_;
    geom_.stride = stride_;
    geom_.pad = pad_;
    if (geom_.h + 2 * pad_ < k_ || geom_.w + 2 * pad_ < k_) {
      throw ConfigError(where_ + ": kernel " + std::to_string(k_) +
                        " is larger than the padded input " + input.ToString() + " (padding " +
                        std::to_string(pad_) + ")");
    }
    const int64_t rows = geom_.col_width();
    matmul_.SetPositionRows(geom_.c);  // a kernel position's rows, for channel-wise mapping
    InitParameters(rows, oc_, init_key);
    group_ = std::max<int64_t>(1, kGroupFloats / (geom_.rows_per_image() * rows));
    direct_ = kernels::DirectConvFits(geom_, oc_);
    direct_bp_ = kernels::DirectBackwardFits(geom_, oc_);
    return Shape{geom_.out_h(), geom_.out_w(), oc_};
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    PIM_CHECK_MSG(
        x.shape().rank() == 4 && x.shape().DropFirst() == Shape({geom_.h, geom_.w, geom_.c}),
        "conv2d input " + x.shape().ToString());
    x_ = &x;
    geom_.n = x.shape()[0];
    const int64_t rpi = geom_.rows_per_image(), width = geom_.col_width();
    // Training keeps every image's columns for GC when on a macro (one call over the batch, as
    // the chip's GC array sees it) or when they fit in cache (KeepsColumns). Otherwise one
    // group's columns at a time, in a per-thread scratch that stays in cache for the GEMM: the
    // FP32 GC builds them again, group by group.
    const bool keep = ctx.mode == Mode::kTrain && KeepsColumns();
    if (keep) cols_.Resize(Shape{geom_.n * rpi, width});
    y.Resize(Shape{geom_.n, geom_.out_h(), geom_.out_w(), oc_});
    if (Direct()) {
      // FP32, few taps x channels: no columns (conv_direct.h). Images are independent outputs.
      const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / (rpi * width * oc_));
      PoolOf(ctx).ParallelFor(geom_.n, grain, [&](int64_t n0, int64_t n1) {
        kernels::fast::ConvDirectForward(geom_, x.data(), weight_.value.data(), bias_data(), oc_,
                                         y.data(), n0, n1);
      });
      return;
    }
    // A macro scales its inputs per tensor: im2col only copies and pads, so max|cols| = max|x|.
    // (or the bound the macro chooses for the whole batch: ForwardInputBound)
    const float x_max = matmul_.on_macro() ? matmul_.ForwardInputBound(x.AsMatrix(), ctx) : -1.0f;
    ForGroups(ctx, rpi * width * oc_, [&](int64_t n0, int64_t n1, ThreadPool* inner) {
      const int64_t rows = (n1 - n0) * rpi;
      float* cols = keep ? cols_.data() + n0 * rpi * width : ThreadScratch(0, rows * width);
      kernels::Im2colImages(geom_, x.data(), cols, n0, n1);
      matmul_.Forward(ConstMatrixView(cols, rows, width, width), weight_.value,
                      bias_data(),
                      MatrixView{y.data() + n0 * rpi * oc_, rows, oc_, oc_}, x_max, ctx, inner);
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    dx.Resize(x_->shape());
    if (!input_error_needed()) {
      dx.Zero();
      return;
    }
    const int64_t rpi = geom_.rows_per_image(), width = geom_.col_width();
    if (DirectBackward()) {
      // FP32, 3x3 stride 1: the transposed convolution directly (conv_direct.h), no dcols.
      wt_.Resize(Shape{width * oc_});
      kernels::fast::ConvDirectBackwardWeights(geom_, weight_.value.data(), oc_, wt_.data());
      const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / (rpi * width * oc_));
      PoolOf(ctx).ParallelFor(geom_.n, grain, [&](int64_t n0, int64_t n1) {
        kernels::fast::ConvDirectBackward(geom_, dy.data(), wt_.data(), oc_, dx.data(), n0, n1);
      });
      return;
    }
    const float dy_max = matmul_.on_macro() ? matmul_.BatchMaxAbs(dy.AsMatrix(), ctx) : -1.0f;
    ForGroups(ctx, rpi * width * oc_, [&](int64_t n0, int64_t n1, ThreadPool* inner) {
      // dcols for this group only, in a per-thread scratch that stays in cache for col2im.
      const int64_t rows = (n1 - n0) * rpi;
      float* dcols = ThreadScratch(1, rows * width);
      matmul_.Backward(ConstMatrixView(dy.data() + n0 * rpi * oc_, rows, oc_, oc_), weight_.value,
                       MatrixView{dcols, rows, width, width}, dy_max, ctx, inner);
      kernels::Col2imImages(geom_, dcols, dx.data(), n0, n1);
    });
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    const int64_t rows = geom_.n * geom_.rows_per_image(), width = geom_.col_width();
    if (Direct()) {
      kernels::fast::ConvDirectWeightGradient(geom_, x_->data(), dy.data(), oc_,
                                              weight_.grad.data(), &PoolOf(ctx));
    } else if (KeepsColumns()) {
      // dW = cols^T dY over the whole batch (on a macro: its GC path).
      matmul_.Gradient(ConstMatrixView(cols_.data(), rows, width, width),
                       ConstMatrixView(dy.data(), rows, oc_, oc_), weight_.grad.AsMatrix(), ctx,
                       &PoolOf(ctx));
    } else {
      FloatGradient(dy, ctx);
    }
    BiasGradient(dy.data(), rows, PoolOf(ctx));
  }

  // Windows lie inside one image; the macro's per-tensor input scale is the batch's
  // (BatchMaxAbs).
  // On FP32 the GEMMs of image groups depend on which images share a call (kernels/fast/gemm.cc):
  // whole batches there.
  BatchCoupling batch_coupling() const override {
    return matmul_.on_macro() ? BatchCoupling::kPerSample : BatchCoupling::kCoupled;
  }
  // GC as one process runs it on the whole batch: the batch size decides KeepsColumns and the
  // image groups, so both are those of the whole batch, and kept columns are rebuilt for it.
  void ComputeGradientForBatch(const Tensor& x, const Tensor& dy,
                               const StepContext& ctx) override {
    const Tensor* shard = x_;
    const int64_t shard_n = geom_.n;
    x_ = &x;
    geom_.n = x.shape()[0];
    const int64_t width = geom_.col_width();
    const auto [c0, c1] = matmul_.GradientRows(width, ctx);
    if (c0 != 0 || c1 != width) {
      // GC split over the ranks by dW's rows (a macro's): this rank's columns [c0, c1) of the
      // whole batch's im2col alone, built over the pool's threads (copies: any split).
      const int64_t rows = geom_.n * geom_.rows_per_image(), block = c1 - c0;
      cols_.Resize(Shape{std::max<int64_t>(1, rows * block)});
      const int64_t grain = std::max<int64_t>(
          1, (int64_t{1} << 16) / std::max<int64_t>(1, geom_.rows_per_image() * block));
      PoolOf(ctx).ParallelFor(geom_.n, grain, [&](int64_t n0, int64_t n1) {
        kernels::Im2colImagesColumns(geom_, x.data(),
                                     cols_.data() + n0 * geom_.rows_per_image() * block, n0, n1,
                                     c0, c1);
      });
      matmul_.GradientOfBlock(ConstMatrixView(cols_.data(), rows, block, block),
                              ConstMatrixView(dy.data(), rows, oc_, oc_), weight_.grad.AsMatrix(),
                              ctx, &PoolOf(ctx));
      BiasGradient(dy.data(), rows, PoolOf(ctx));
      x_ = shard;
      geom_.n = shard_n;
      return;
    }
    if (KeepsColumns()) {
      cols_.Resize(Shape{geom_.n * geom_.rows_per_image(), geom_.col_width()});
      kernels::Im2colImages(geom_, x.data(), cols_.data(), 0, geom_.n);
    }
    ComputeGradient(dy, ctx);
    x_ = shard;
    geom_.n = shard_n;
  }

  std::string Summary() const override {
    return "conv2d " + std::to_string(geom_.h) + "x" + std::to_string(geom_.w) + "x" +
           std::to_string(geom_.c) + " -> " + std::to_string(geom_.out_h()) + "x" +
           std::to_string(geom_.out_w()) + "x" + std::to_string(oc_) + ", kernel " +
           std::to_string(k_) + ", stride " + std::to_string(stride_) + ", padding " +
           std::to_string(pad_) + (has_bias_ ? "" : ", no bias");
  }
  int64_t ForwardMacsPerSample() const override {
    return geom_.rows_per_image() * geom_.col_width() * oc_;
  }

 private:
  // Runs fn(n0, n1, pool) on groups of group_ images, whole groups per thread, at least ~256K
  // multiply-accumulates per thread; fn's own products run inline. On a macro the groups run
  // one after another (the macro parallelizes inside a call), in groups of >= 4096 rows so that
  // each call amortizes the macro's per-call work.
  template <class Fn>
  void ForGroups(const StepContext& ctx, int64_t macs_per_image, Fn&& fn) {
    if (matmul_.on_macro()) {
      const int64_t group =
          std::max(group_, (4096 + geom_.rows_per_image() - 1) / geom_.rows_per_image());
      for (int64_t n0 = 0; n0 < geom_.n; n0 += group) {
        fn(n0, std::min(geom_.n, n0 + group), &PoolOf(ctx));
      }
      return;
    }
    const int64_t groups = (geom_.n + group_ - 1) / group_;
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / (macs_per_image * group_));
    PoolOf(ctx).ParallelFor(groups, grain, [&](int64_t g0, int64_t g1) {
      for (int64_t gi = g0; gi < g1; ++gi) {
        fn(gi * group_, std::min(geom_.n, (gi + 1) * group_), &InlinePool());
      }
    });
  }

  // Whether FP keeps the batch's columns for GC (geom_.n set by FP). Depends on the geometry
  // and the batch alone, never on the threads: the two ways sum dW in different orders.
  bool KeepsColumns() const {
    return matmul_.on_macro() ||
           (!direct_ && geom_.n * geom_.rows_per_image() * geom_.col_width() <= kKeepColumnsFloats);
  }
  // FP and GC by the direct kernels: FP32 layers whose reduction is narrow (DirectConvFits).
  bool Direct() const { return direct_ && !matmul_.on_macro(); }
  bool DirectBackward() const { return direct_bp_ && !matmul_.on_macro(); }

  // FP32 GC: dW = sum over image groups g of cols_g^T dY_g, cols_g rebuilt in a per-thread
  // scratch. The groups are cut into kGradientParts fixed runs; part 0 accumulates into dW and
  // part q > 0 into partial q (each GEMM adds its product to the running sum, beta = 1), then
  // dW += partial 1, partial 2, ... in order. Parts, groups and every GEMM's shape depend on the
  // geometry alone, so dW is the same for any thread count.
  void FloatGradient(const Tensor& dy, const StepContext& ctx) {
    const int64_t rpi = geom_.rows_per_image(), width = geom_.col_width();
    const int64_t groups = (geom_.n + group_ - 1) / group_;
    const int64_t parts = std::min(kGradientParts, groups);
    const int64_t size = width * oc_;
    if (partials_.numel() < (parts - 1) * size) partials_.Resize(Shape{(parts - 1) * size});
    float* dw = weight_.grad.data();
    PoolOf(ctx).ParallelFor(parts, 1, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        float* sum = q == 0 ? dw : partials_.data() + (q - 1) * size;
        const int64_t g0 = groups * q / parts, g1 = groups * (q + 1) / parts;
        for (int64_t g = g0; g < g1; ++g) {
          const int64_t n0 = g * group_, n1 = std::min(geom_.n, n0 + group_);
          const int64_t rows = (n1 - n0) * rpi;
          float* cols = ThreadScratch(0, rows * width);
          kernels::Im2colImages(geom_, x_->data(), cols, n0, n1);
          kernels::GemmArgs a;
          a.trans_a = kernels::Trans::kYes;
          a.m = width;
          a.n = oc_;
          a.k = rows;
          a.a = cols;
          a.lda = width;
          a.b = dy.data() + n0 * rpi * oc_;
          a.ldb = oc_;
          a.beta = g == g0 ? 0.0f : 1.0f;
          a.c = sum;
          a.ldc = oc_;
          kernels::fast::Gemm(a, &InlinePool());
        }
      }
    });
    for (int64_t q = 1; q < parts; ++q) {
      const float* part = partials_.data() + (q - 1) * size;
      for (int64_t i = 0; i < size; ++i) dw[i] += part[i];
    }
  }

  std::string where_;
  int64_t oc_, k_, stride_, pad_;
  kernels::ConvGeometry geom_;
  int64_t group_ = 1;
  bool direct_ = false;
  bool direct_bp_ = false;
  Tensor wt_;  // the direct BP's flipped, transposed kernel (conv_direct.h)
  Tensor cols_;      // im2col(x) from FP, reused by GC (on a macro only)
  Tensor partials_;  // the FP32 GC's partial sums, parts 1 .. kGradientParts - 1
  const Tensor* x_ = nullptr;
};

PIM_REGISTER(Layer, Conv2d, "conv2d",
             "2-D convolution on NHWC input (im2col + GEMM), weights (kh*kw*c, out_channels)");

}  // namespace
}  // namespace pim
