// StagedMatmul implementation: FP32 GEMMs or macro calls per stage, counts and sparsity.
#include "pimtrain/nn/staged_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/nn/batch_group.h"

namespace pim {

PIM_DECLARE_COUNTERS(StagedMatmulCounters, "layer (nn/staged_matmul)",
                     {"bias_adds", "add", "FP", "bias additions of a layer on a macro"});

namespace {
std::mutex& CountsMutex() {
  static std::mutex mu;
  return mu;
}
}  // namespace

// The largest |v| (NaNs skipped, as std::max(m, |v|) skips them), sixteen lanes at a time: each
// lane keeps its own running maximum (a > m ? a : m, the x86 max instruction's rule), then the
// lanes are combined. A maximum is exact in any order, so the result is the sequential scan's.
float MaxAbs(ConstMatrixView v) {
  typedef float V16 __attribute__((vector_size(64)));
  typedef int32_t I16 __attribute__((vector_size(64)));
  V16 acc = {};
  float m = 0.0f;
  for (int64_t r = 0; r < v.rows; ++r) {
    const float* row = v.Row(r);
    int64_t c = 0;
    for (; c + 16 <= v.cols; c += 16) {
      V16 a;
      std::memcpy(&a, row + c, sizeof(a));
      a = (V16)((I16)a & 0x7FFFFFFF);  // |a|: the sign bit cleared
      acc = a > acc ? a : acc;
    }
    for (; c < v.cols; ++c) {
      const float a = std::fabs(row[c]);
      m = a > m ? a : m;
    }
  }
  for (int j = 0; j < 16; ++j) m = acc[j] > m ? acc[j] : m;
  return m;
}

int64_t CountZeros(ConstMatrixView v) {
  int64_t z = 0;
  for (int64_t r = 0; r < v.rows; ++r) {
    const float* row = v.Row(r);
    for (int64_t c = 0; c < v.cols; ++c) z += row[c] == 0.0f;
  }
  return z;
}

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

float StagedMatmul::BatchMaxAbs(ConstMatrixView v, const StepContext& ctx) const {
  const float local = MaxAbs(v);
  return ctx.group != nullptr ? ctx.group->AllMax(local) : local;
}

float StagedMatmul::ForwardInputBound(ConstMatrixView x, const StepContext& ctx) const {
  if (macro_ != nullptr) {
    const float b = macro_->ForwardInputBound(x);
    if (b >= 0) {
      if (ctx.group != nullptr) {
        throw UnsupportedError("pim.macro.input_scale: mse in a data-parallel run (the search "
                               "over the whole batch is not shared between ranks; use max)");
      }
      return b;
    }
  }
  return BatchMaxAbs(x, ctx);
}

void StagedMatmul::AttachMacro(std::unique_ptr<Macro> macro, int layer, ConvMapping mapping) {
  macro_ = std::move(macro);
  layer_ = layer;
  mapping_ = mapping;
  last_weights_ = nullptr;
  programmed_ = false;
  std::lock_guard<std::mutex> lock(CountsMutex());
  occupancy_ = ArrayOccupancy{};
}

RunContext StagedMatmul::MakeRunContext(const StepContext& ctx, Stage stage, ThreadPool* pool,
                                        float max_abs) const {
  RunContext rc;
  rc.seed = ctx.seed;
  rc.step = ctx.step;
  rc.layer = layer_;
  rc.stage = stage;
  rc.pool = pool;
  rc.input_max_abs = max_abs;
  return rc;
}

void StagedMatmul::Forward(ConstMatrixView x, const Tensor& w, const float* bias, MatrixView y,
                           float x_max_abs, const StepContext& ctx, ThreadPool* pool) {
  const int64_t rows = w.shape()[0], cols = w.shape()[1];
  PIM_CHECK(x.cols == rows && y.cols == cols && x.rows == y.rows);
  if (!macro_) {
    // Start C at the bias (beta = 1): replaces the zeroing pass sgemm would do.
    if (bias != nullptr) {
      for (int64_t r = 0; r < y.rows; ++r) std::copy(bias, bias + cols, y.Row(r));
    }
    kernels::GemmArgs g;
    g.m = x.rows;
    g.n = cols;
    g.k = rows;
    g.a = x.data;
    g.lda = x.ld;
    g.b = w.data();
    g.ldb = cols;
    g.beta = bias != nullptr ? 1.0f : 0.0f;
    g.c = y.data;
    g.ldc = y.ld;
    kernels::fast::Gemm(g, pool);
    return;
  }
  PIM_CHECK_MSG(programmed_, "layer on a macro used before its weights were programmed");
  // A shard of a batch is scaled as the whole batch is (the caller passes a shard's whole
  // tensor when it gives no maximum).
  if (x_max_abs < 0) {
    const float b = macro_->ForwardInputBound(x);
    if (b >= 0) {
      if (ctx.group != nullptr) {
        throw UnsupportedError("pim.macro.input_scale: mse in a data-parallel run (the search "
                               "over the whole batch is not shared between ranks; use max)");
      }
      x_max_abs = b;
    } else if (ctx.group != nullptr) {
      x_max_abs = BatchMaxAbs(x, ctx);
    }
  }
  ActionCounts counts;
  macro_->Multiply(x, y, Direction::kForward, MakeRunContext(ctx, Stage::kForward, pool, x_max_abs),
                   counts);
  if (bias != nullptr) {
    // The bias is added digitally after the array (one add per output).
    for (int64_t r = 0; r < y.rows; ++r) {
      float* row = y.Row(r);
      for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
    }
    counts.Add("bias_adds", y.rows * cols);
  }
  SparsityStats s;
  s.input_elements = x.rows * x.cols;
  s.input_zeros = CountZeros(x);
  // Calibration reads the macro ran inside this call (an ADC range search) are their own stage.
  ActionCounts calibration;
  macro_->TakeCalibrationCounts(calibration);
  if (!ctx.record_counts) return;
  AddSparsity(s);
  AddCounts(ctx.calibration ? Stage::kCalibration : Stage::kForward, counts);
  if (!calibration.empty()) AddCounts(Stage::kCalibration, calibration);
}

void StagedMatmul::Backward(ConstMatrixView dy, const Tensor& w, MatrixView dx, float dy_max_abs,
                            const StepContext& ctx, ThreadPool* pool) {
  const int64_t rows = w.shape()[0], cols = w.shape()[1];
  PIM_CHECK(dy.cols == cols && dx.cols == rows && dy.rows == dx.rows);
  if (!macro_) {
    kernels::GemmArgs g;
    g.trans_b = kernels::Trans::kYes;
    g.m = dy.rows;
    g.n = rows;
    g.k = cols;
    g.a = dy.data;
    g.lda = dy.ld;
    g.b = w.data();
    g.ldb = cols;
    g.c = dx.data;
    g.ldc = dx.ld;
    kernels::fast::Gemm(g, pool);
    return;
  }
  if (dy_max_abs < 0 && ctx.group != nullptr) dy_max_abs = BatchMaxAbs(dy, ctx);
  ActionCounts counts;
  macro_->Multiply(dy, dx, Direction::kTransposed,
                   MakeRunContext(ctx, Stage::kBackward, pool, dy_max_abs), counts);
  SparsityStats s;
  s.error_elements = dy.rows * dy.cols;
  s.error_zeros = CountZeros(dy);
  if (!ctx.record_counts) return;
  AddSparsity(s);
  AddCounts(Stage::kBackward, counts);
}

void StagedMatmul::Gradient(ConstMatrixView x, ConstMatrixView dy, MatrixView dw,
                            const StepContext& ctx, ThreadPool* pool) {
  if (!macro_) {
    kernels::GemmArgs g;
    g.trans_a = kernels::Trans::kYes;
    g.m = x.cols;
    g.n = dy.cols;
    g.k = x.rows;
    g.a = x.data;
    g.lda = x.ld;
    g.b = dy.data;
    g.ldb = dy.ld;
    g.c = dw.data;
    g.ldc = dw.ld;
    kernels::fast::Gemm(g, pool);
    return;
  }
  const auto [r0, r1] = GradientRows(x.cols, ctx);
  if (r0 == 0 && r1 == x.cols) {
    ActionCounts counts;
    macro_->GradientCalc(x, dy, dw, MakeRunContext(ctx, Stage::kGradient, pool, -1.0f), counts);
    if (ctx.record_counts) AddCounts(Stage::kGradient, counts);
    return;
  }
  GradientOfBlock(ConstMatrixView(x.data + r0, x.rows, r1 - r0, x.ld), dy, dw, ctx, pool);
}

std::pair<int64_t, int64_t> StagedMatmul::GradientRows(int64_t rows,
                                                       const StepContext& ctx) const {
  const BatchGroup* group = ctx.gradient_group;
  if (!macro_ || group == nullptr || group->size() == 1) return {0, rows};
  return {ShardBegin(rows, group->rank(), group->size()),
          ShardBegin(rows, group->rank() + 1, group->size())};
}

void StagedMatmul::GradientOfBlock(ConstMatrixView x_block, ConstMatrixView dy, MatrixView dw,
                                   const StepContext& ctx, ThreadPool* pool) {
  const auto [r0, r1] = GradientRows(dw.rows, ctx);
  PIM_CHECK_MSG(x_block.cols == r1 - r0 && x_block.rows == dy.rows && dw.cols == dy.cols,
                "GradientOfBlock: operand shapes do not match");
  if (r0 == 0 && r1 == dw.rows) {
    Gradient(x_block, dy, dw, ctx, pool);
    return;
  }
  // Split over the ranks by dW's rows (x's columns): rank r computes rows [r0, r1) over the
  // whole batch, x scaled by the whole x's maximum and dy by the whole dy's. Each element is the
  // exact integer sum one process computes, and the per-row actions add up to one process's;
  // the per-call ones (dY into the GC array) are counted by rank 0.
  BatchGroup* group = ctx.gradient_group;
  // The maxima of the whole operands: the ranks' blocks of x's columns partition x, and each
  // rank scans its share of dy's rows (a maximum is exact in any order).
  const int64_t b0 = ShardBegin(dy.rows, group->rank(), group->size());
  const int64_t b1 = ShardBegin(dy.rows, group->rank() + 1, group->size());
  float max_abs[2] = {MaxAbs(x_block),
                      MaxAbs(ConstMatrixView(dy.Row(b0), b1 - b0, dy.cols, dy.ld))};
  group->AllMaxInPlace(max_abs, 2);
  RunContext rc = MakeRunContext(ctx, Stage::kGradient, pool, max_abs[0]);
  rc.gradient_max_abs = max_abs[1];
  rc.count_shared_actions = group->rank() == 0;
  ActionCounts counts;
  if (r1 > r0) {
    macro_->GradientCalc(x_block, dy, MatrixView{dw.data + r0 * dw.ld, r1 - r0, dw.cols, dw.ld},
                         rc, counts);
  }
  AddCounts(Stage::kGradient, counts);
  // The blocks in rank order are dW's rows in order: gathered in place.
  PIM_CHECK_MSG(dw.ld == dw.cols, "split gradient: dW must be contiguous");
  GatherBlocksInPlace(dw.data, dw.rows, dw.cols, *group);
}

void StagedMatmul::Commit(Tensor& w, const StepContext& ctx, Stage stage) {
  if (!macro_) return;
  ActionCounts counts;
  MatrixView view = w.AsMatrix();
  macro_->SetRowSegment(mapping_ == ConvMapping::kChannelWise ? position_rows_ : 0);
  macro_->Program(view, MakeRunContext(ctx, stage, ctx.pool, -1.0f), counts);
  if (!macro_->spec().master_weights) macro_->ReadWeights(view);
  programmed_ = true;
  last_weights_ = &w;  // weight sparsity is read from it when the epoch's stats are taken
  {
    std::lock_guard<std::mutex> lock(CountsMutex());
    occupancy_.cells_allocated = counts.Get("array_cells_allocated");
    occupancy_.cells_used = counts.Get("array_cells_used");
  }
  if (ctx.record_counts) AddCounts(stage, counts);
}

void StagedMatmul::AddCounts(Stage s, const ActionCounts& c) {
  std::lock_guard<std::mutex> lock(CountsMutex());
  counts_[static_cast<int>(s)].Merge(c);
}

std::array<ActionCounts, kNumStages> StagedMatmul::TakeCounts() {
  std::lock_guard<std::mutex> lock(CountsMutex());
  auto out = counts_;
  for (auto& c : counts_) c.Clear();
  return out;
}

void StagedMatmul::AddSparsity(const SparsityStats& s) {
  std::lock_guard<std::mutex> lock(CountsMutex());
  sparsity_.input_elements += s.input_elements;
  sparsity_.input_zeros += s.input_zeros;
  sparsity_.error_elements += s.error_elements;
  sparsity_.error_zeros += s.error_zeros;
}

ArrayOccupancy StagedMatmul::occupancy() const {
  std::lock_guard<std::mutex> lock(CountsMutex());
  return occupancy_;
}

SparsityStats StagedMatmul::TakeSparsity() {
  std::lock_guard<std::mutex> lock(CountsMutex());
  SparsityStats out = sparsity_;
  if (last_weights_ != nullptr) {
    out.weight_elements = last_weights_->numel();
    out.weight_zeros = CountZeros(last_weights_->AsMatrix());
  }
  sparsity_.input_elements = sparsity_.input_zeros = 0;
  sparsity_.error_elements = sparsity_.error_zeros = 0;
  return out;
}

}  // namespace pim
