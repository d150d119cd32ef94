// StagedMatmul: the matrix products of a weighted layer (FP, BP, GC) and its write-back (WU),
// run in exact FP32 (GEMM) or through a PIM macro, with the macro's actions counted per stage.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <utility>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/stage.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/layer.h"

namespace pim {

// Sparsity seen by one layer in one epoch: zero elements of its operands, per stage.
// The counters StagedMatmul adds itself, besides its macro's (name, unit, stages, meaning).
const CounterSet& StagedMatmulCounters();

struct SparsityStats {
  int64_t input_elements = 0, input_zeros = 0;  // FP inputs (activations)
  int64_t error_elements = 0, error_zeros = 0;  // BP inputs (output errors)
  int64_t weight_elements = 0, weight_zeros = 0;  // weights as last programmed
};

// How a convolution's weights are laid onto arrays (the numbers are the same; the counts and
// the array utilization differ; docs/numerics.md, "Mapping"). FC layers have one mapping, the
// dense tiling, under either value.
enum class ConvMapping {
  kIm2col,       // the unrolled (kh*kw*c) x oc matrix tiled onto arrays, rows packed densely
  kChannelWise,  // each kernel position's c x oc slice on its own arrays, positions over cycles
};

// The arrays a layer's programmed weights occupy, from the last Program: every cell of those
// arrays, and the cells holding weight bits.
struct ArrayOccupancy {
  int64_t cells_allocated = 0, cells_used = 0;
  // used / allocated, in (0, 1]; 0 before the first Program.
  double utilization() const {
    return cells_allocated > 0
               ? static_cast<double>(cells_used) / static_cast<double>(cells_allocated)
               : 0.0;
  }
};

class StagedMatmul {
 public:
  // Runs every later product through `macro` (nullptr: back to FP32). `layer` keys its noise.
  void AttachMacro(std::unique_ptr<Macro> macro, int layer,
                   ConvMapping mapping = ConvMapping::kIm2col);
  ConvMapping mapping() const { return mapping_; }
  // For a convolution: the weight rows of one kernel position, i.e. its input channels (im2col
  // orders the rows (kh, kw, c)). Under kChannelWise each position's rows take their own arrays.
  // 0 (the default, FC layers): dense under either mapping. Applies from the next Commit.
  void SetPositionRows(int64_t rows) { position_rows_ = rows; }
  bool on_macro() const { return macro_ != nullptr; }
  Macro* macro() { return macro_.get(); }

  // y = x W (+ bias broadcast over rows when non-null). x: n x rows(W); y: n x cols(W).
  // `x_max_abs` is the largest |x| of the whole tensor x is a slice of (a macro scales inputs
  // per tensor, so slicing a batch must not change the scale); pass a negative value for "x
  // itself". `pool` runs the product (nullptr: inline).
  void Forward(ConstMatrixView x, const Tensor& w, const float* bias, MatrixView y,
               float x_max_abs, const StepContext& ctx, ThreadPool* pool);
  // dx = dy W^T. dy: n x cols(W); dx: n x rows(W).
  void Backward(ConstMatrixView dy, const Tensor& w, MatrixView dx, float dy_max_abs,
                const StepContext& ctx, ThreadPool* pool);
  // dw = x^T dy (overwritten). x: n x rows(W); dy: n x cols(W).
  void Gradient(ConstMatrixView x, ConstMatrixView dy, MatrixView dw, const StepContext& ctx,
                ThreadPool* pool);
  // In a GC split over the ranks (ctx.gradient_group of several ranks, on a macro): the block
  // [first, second) of dW's `rows` (x's columns) this rank computes; [0, rows) otherwise.
  std::pair<int64_t, int64_t> GradientRows(int64_t rows, const StepContext& ctx) const;
  // Gradient with x given as its columns [GradientRows(rows(W)).first, .second) alone (x_block:
  // n x that many), e.g. a convolution's columns built for this rank's block only: the same dW
  // as Gradient on the whole x. The scales are the whole operands' maxima, each rank scanning
  // its block of x and its share of dy's rows (one AllMax).
  void GradientOfBlock(ConstMatrixView x_block, ConstMatrixView dy, MatrixView dw,
                       const StepContext& ctx, ThreadPool* pool);
  // The largest |v| of the whole batch `v` is a shard of: MaxAbs(v), and in a data-parallel run
  // (ctx.group) the largest over the ranks. Collective there: every rank calls it once per
  // tensor. What a layer passes as x_max_abs / dy_max_abs when it multiplies in slices.
  float BatchMaxAbs(ConstMatrixView v, const StepContext& ctx) const;
  // What a layer passes as x_max_abs for the forward input x (its whole batch) on a macro: the
  // macro's ForwardInputBound where it has one, else BatchMaxAbs. A macro-chosen bound is not
  // collective: refused in a data-parallel run (ctx.group).
  float ForwardInputBound(ConstMatrixView x, const StepContext& ctx) const;
  // WU write-back: programs the macro with w. Without a master copy the layer's weights become
  // what the array holds (the chip keeps no higher-precision copy), so `w` may change.
  // `stage` is where the write is counted: WU for weights; FP or BP for an activation written
  // into the array as an operand (attention's K and V).
  void Commit(Tensor& w, const StepContext& ctx, Stage stage = Stage::kUpdate);

  // Counts since the last TakeCounts, per stage; thread-safe adds from parallel slices.
  void AddCounts(Stage s, const ActionCounts& c);
  std::array<ActionCounts, kNumStages> TakeCounts();
  SparsityStats TakeSparsity();
  void AddSparsity(const SparsityStats& s);
  // The array occupancy of the last Commit on the macro (zeros without a macro).
  ArrayOccupancy occupancy() const;

 private:
  RunContext MakeRunContext(const StepContext& ctx, Stage stage, ThreadPool* pool,
                            float max_abs) const;

  std::unique_ptr<Macro> macro_;
  int layer_ = 0;
  ConvMapping mapping_ = ConvMapping::kIm2col;
  int64_t position_rows_ = 0;
  bool programmed_ = false;
  ArrayOccupancy occupancy_;
  std::array<ActionCounts, kNumStages> counts_;
  SparsityStats sparsity_;
  const Tensor* last_weights_ = nullptr;  // the weights as last programmed (the layer's tensor)
};

// Largest |v| over a matrix (0 for an empty one). NaN-free inputs assumed.
float MaxAbs(ConstMatrixView v);
// out[j] = sum_r d[r][j] (the bias gradient of a batch), deterministic for any thread count.
void ColumnSums(const float* d, int64_t rows, int64_t cols, float* out, ThreadPool& pool);
// Number of exact zeros in a matrix.
int64_t CountZeros(ConstMatrixView v);

}  // namespace pim
