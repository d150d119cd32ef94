// The double_buffered macro's second-buffer modes (SP-PIM, docs/sppim.md "Double buffering"):
// shadow hides the write-back, transposed_copy runs BP as a forward read of a stored W^T with
// both copies written in time, idle writes in time; and the on-macro GC's dual-sparsity counts.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/macro.h"

namespace pim {
namespace {

std::unique_ptr<Macro> Make(const std::string& yaml) {
  return Registry<Macro>::CreateFrom(ParseYaml(yaml, "test"));
}

TEST(DoubleBufferedMacroTest, SecondBufferModesPlaceTheWriteBack) {
  const int64_t batch = 3, rows = 40, cols = 24;
  CounterRng rng(7);
  std::vector<float> w(rows * cols), wt(rows * cols), e(batch * cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      w[r * cols + c] = rng.Normal(r * cols + c);
      wt[c * rows + r] = w[r * cols + c];
    }
  }
  for (size_t i = 0; i < e.size(); ++i) e[i] = rng.Normal(10000 + i);
  const std::string inner = "inner: {impl: fp_digital, gradient_path: macro}";
  RunContext ctx;
  auto program = [&](const std::string& mode, ActionCounts* c) {
    auto m = Make("{impl: double_buffered, second_buffer: " + mode + ", " + inner + "}");
    m->Program(ConstMatrixView(w.data(), rows, cols, cols), ctx, *c);
    return m;
  };
  ActionCounts shadow, copy, idle;
  auto ms = program("shadow", &shadow);
  auto mt = program("transposed_copy", &copy);
  auto mi = program("idle", &idle);
  const int64_t cells = shadow.Get("shadow_weight_writes");
  EXPECT_GT(cells, 0);
  EXPECT_EQ(shadow.Get("weight_writes"), 0);       // hidden behind the other buffer
  EXPECT_EQ(shadow.Get("buffer_switches"), 1);
  EXPECT_EQ(idle.Get("weight_writes"), cells);     // in time
  EXPECT_EQ(idle.Get("shadow_weight_writes"), 0);
  EXPECT_EQ(copy.Get("weight_writes"), 2 * cells);  // W and W^T, in time
  EXPECT_EQ(copy.Get("shadow_weight_writes"), 0);
  // W^T sits in the second buffer of the same arrays: no occupancy of its own.
  EXPECT_EQ(copy.Get("array_cells_allocated"), shadow.Get("array_cells_allocated"));
  // BP of transposed_copy is a forward read of W^T programmed on its own.
  auto plain = Make("{impl: fp_digital, gradient_path: macro}");
  ActionCounts pc, a, b;
  plain->Program(ConstMatrixView(wt.data(), cols, rows, rows), ctx, pc);
  std::vector<float> dx_copy(batch * rows), dx_plain(batch * rows);
  mt->Multiply(ConstMatrixView(e.data(), batch, cols, cols),
               MatrixView(dx_copy.data(), batch, rows, rows), Direction::kTransposed, ctx, a);
  plain->Multiply(ConstMatrixView(e.data(), batch, cols, cols),
                  MatrixView(dx_plain.data(), batch, rows, rows), Direction::kForward, ctx, b);
  EXPECT_EQ(dx_copy, dx_plain);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.Get("exponent_adds"), 0);  // a row read of W^T: no column exponents to fold
}

// GC on the macro skips MACs with a zero activation or error (dual sparsity) and the tree passes
// whose activation or error segment is all zero; the gradient itself is exact here.
TEST(DoubleBufferedMacroTest, GradientOnTheMacroSkipsZeroActivationsAndErrors) {
  auto m = Make("{impl: fp_digital, gradient_path: macro, tree_inputs: 2}");
  const std::vector<float> x = {1, 0, 2, 0, 0, 3, 1, 0, 0, 0, 0, 0};  // 4 samples x 3
  const std::vector<float> dy = {1, 0, 0, 2, 0, 0, 3, 0};             // 4 samples x 2
  std::vector<float> dw(3 * 2);
  ActionCounts c;
  m->GradientCalc(ConstMatrixView(x.data(), 4, 3, 3), ConstMatrixView(dy.data(), 4, 2, 2),
                  MatrixView(dw.data(), 3, 2, 2), RunContext{}, c);
  EXPECT_EQ(dw, (std::vector<float>{1, 0, 0, 0, 2, 6}));
  // Nonzero pairs per sample: 2 x 1, 1 x 1, 1 x 0, 0 x 1 = 3 MACs of 24, 2 x 2 nibble pairs each.
  EXPECT_EQ(c.Get("gc_macro_macs"), 24);
  EXPECT_EQ(c.Get("gc_multiplier_ops"), 3 * 4);
  EXPECT_EQ(c.Get("gc_gated_ops"), 21 * 4);
  // Blocks of 2 samples: {0, 1} has 2 nonzero activation columns x 2 error columns, {2, 3}
  // 1 x 1: 5 passes per nibble pair.
  EXPECT_EQ(c.Get("gc_tree_passes"), 5 * 4);
}

}  // namespace
}  // namespace pim
