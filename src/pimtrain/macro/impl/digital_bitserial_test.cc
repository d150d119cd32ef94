// The digital_bitserial macro: its quantization (nearest and stochastic, keyed by the run context),
// the transposed read, gradient calculation, tiling, zero skipping and config checks.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim::kernels {
namespace {

std::unique_ptr<Macro> MakeMacro(const std::string& yaml) {
  return Registry<Macro>::CreateFrom(ParseYaml(yaml, "test"));
}

// Random floats in [-scale, scale) with `zero_fraction` exact zeros.
std::vector<float> RandomFloats(int64_t count, float scale, double zero_fraction, uint64_t key) {
  CounterRng rng(key);
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    v[i] =
        rng.Uniform(2 * i) < zero_fraction ? 0.0f : scale * (2.0f * rng.Uniform(2 * i + 1) - 1.0f);
  }
  return v;
}

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float a : v) m = std::max(m, static_cast<double>(std::fabs(a)));
  return m;
}

// Independent model of the macro's arithmetic: per-tensor power-of-two quantization, an int64
// GEMM, one rounding to float.
struct QuantizedMatrix {
  std::vector<int64_t> q;
  int exp;
};
QuantizedMatrix QuantizeIndependently(const std::vector<float>& v, int bits) {
  QuantizedMatrix out;
  out.exp = PowerOfTwoExponent(MaxAbs(v), bits, Signedness::kSigned);
  for (float a : v) {
    out.q.push_back(QuantizeToInt(a, out.exp, bits, Signedness::kSigned, Rounding::kNearestEven));
  }
  return out;
}

constexpr int64_t kB = 5, kR = 70, kC = 37;

class BitSerialMacroTest : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = RandomFloats(kR * kC, 0.3f, 0.2, 11);
    x_ = RandomFloats(kB * kR, 2.0f, 0.3, 12);
    e_ = RandomFloats(kB * kC, 0.01f, 0.3, 13);
  }
  std::vector<float> w_, x_, e_;
};

TEST_F(BitSerialMacroTest, ForwardEqualsQuantizedGemmWithTopWeightBits) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, rows: 32, cols: 16, input_bits: 8, "
      "weight_bits: 8, weight_bits_backward: 16}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  EXPECT_EQ(counts.Get("weight_writes"), kR * kC * 16);
  std::vector<float> y(kB * kC);
  macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, counts);
  QuantizedMatrix xq = QuantizeIndependently(x_, 8), wq = QuantizeIndependently(w_, 16);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t r = 0; r < kR; ++r) s += xq.q[b * kR + r] * (wq.q[r * kC + c] >> 8);
      const float expect =
          static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + wq.exp + 8));
      ASSERT_EQ(y[b * kC + c], expect) << b << "," << c;
    }
  }
  EXPECT_EQ(counts.Get("macs"), kB * kR * kC);
  EXPECT_EQ(counts.Get("tile_accumulations"), kB * kC * 2);  // 70 rows = 3 blocks of 32
}

TEST_F(BitSerialMacroTest, ForwardWeightReadNearestRoundsTheDroppedBits) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, weight_bits: 4, weight_bits_backward: 16, "
      "forward_weight_read: nearest}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  std::vector<float> y(kB * kC);
  macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, counts);
  QuantizedMatrix xq = QuantizeIndependently(x_, 8), wq = QuantizeIndependently(w_, 16);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t r = 0; r < kR; ++r) {
        s += xq.q[b * kR + r] * std::min<int64_t>((wq.q[r * kC + c] + 2048) >> 12, 7);
      }
      ASSERT_EQ(y[b * kC + c],
                static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + wq.exp + 12)));
    }
  }
}

TEST_F(BitSerialMacroTest, NonFiniteInputsClipOrVanishWithoutSettingTheScale) {
  auto macro = MakeMacro("{impl: digital_bitserial, rows: 32, cols: 16}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  std::vector<float> x = x_;
  x[3] = std::numeric_limits<float>::infinity();
  x[20] = -std::numeric_limits<float>::infinity();
  x[41] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y(kB * kC);
  macro->Multiply(ConstMatrixView(x.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, counts);
  // The scale comes from the finite values; +inf -> 127, -inf -> -128, NaN -> 0.
  std::vector<float> finite = x_;
  finite[3] = finite[20] = finite[41] = 0.0f;
  QuantizedMatrix xq = QuantizeIndependently(finite, 8), wq = QuantizeIndependently(w_, 16);
  xq.q[3] = 127;
  xq.q[20] = -128;
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t r = 0; r < kR; ++r) s += xq.q[b * kR + r] * (wq.q[r * kC + c] >> 8);
      ASSERT_EQ(y[b * kC + c],
                static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + wq.exp + 8)));
    }
  }
}

TEST_F(BitSerialMacroTest, TransposedEqualsStoredWeightsTransposed) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, rows: 32, cols: 16, error_bits: 12, "
      "weight_bits: 4, weight_bits_backward: 16}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  std::vector<float> dx(kB * kR);
  macro->Multiply(ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{dx.data(), kB, kR, kR},
                  Direction::kTransposed, RunContext{}, counts);
  QuantizedMatrix eq = QuantizeIndependently(e_, 12), wq = QuantizeIndependently(w_, 16);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t r = 0; r < kR; ++r) {
      int64_t s = 0;
      for (int64_t c = 0; c < kC; ++c) s += eq.q[b * kC + c] * wq.q[r * kC + c];
      const float expect = static_cast<float>(std::ldexp(static_cast<double>(s), eq.exp + wq.exp));
      ASSERT_EQ(dx[b * kR + r], expect) << b << "," << r;
    }
  }
  // Reduction over 37 columns in blocks of 16: 3 blocks, 2 merges per output.
  EXPECT_EQ(counts.Get("tile_accumulations"), kB * kR * 2);
  // ReadWeights returns the stored 16-bit weights.
  std::vector<float> back(kR * kC);
  macro->ReadWeights(MatrixView{back.data(), kR, kC, kC});
  for (int64_t i = 0; i < kR * kC; ++i) {
    ASSERT_EQ(back[i], static_cast<float>(std::ldexp(static_cast<double>(wq.q[i]), wq.exp)));
  }
}

TEST_F(BitSerialMacroTest, GradientCalcEqualsQuantizedOuterProductSum) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, rows: 4, cols: 8, input_bits: 8, "
      "gradient_bits: 16}");
  std::vector<float> dw(kR * kC);
  ActionCounts counts;
  macro->GradientCalc(ConstMatrixView(x_.data(), kB, kR, kR),
                      ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{dw.data(), kR, kC, kC},
                      RunContext{}, counts);
  QuantizedMatrix xq = QuantizeIndependently(x_, 8), eq = QuantizeIndependently(e_, 16);
  for (int64_t r = 0; r < kR; ++r) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t b = 0; b < kB; ++b) s += xq.q[b * kR + r] * eq.q[b * kC + c];
      const float expect = static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + eq.exp));
      ASSERT_EQ(dw[r * kC + c], expect) << r << "," << c;
    }
  }
  EXPECT_EQ(counts.Get("gc_operand_writes"), kB * kC * 16);
  EXPECT_EQ(counts.Get("macs"), kB * kR * kC);
  EXPECT_EQ(counts.Get("tile_accumulations"), kR * kC * 1);  // batch 5 on 4 word lines: 2 blocks
}

TEST_F(BitSerialMacroTest, GradientCalcOnStridedBatchesEqualsQuantizedOuterProductSum) {
  // A batch of 21 (the macro transposes X in 8 x 8 blocks, plus edges), X read through a row
  // stride wider than its 70 features, a NaN and infinities among them.
  constexpr int64_t kBatch = 21, kLd = kR + 3;
  auto macro = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 8, gradient_bits: 16}");
  std::vector<float> x = RandomFloats(kBatch * kLd, 2.0f, 0.3, 14);
  std::vector<float> e = RandomFloats(kBatch * kC, 0.01f, 0.3, 15);
  x[3 * kLd + 9] = std::numeric_limits<float>::quiet_NaN();
  x[17 * kLd + 64] = std::numeric_limits<float>::infinity();
  x[20 * kLd + 69] = -std::numeric_limits<float>::infinity();
  std::vector<float> x_dense;  // the logical kBatch x kR matrix
  for (int64_t b = 0; b < kBatch; ++b) {
    x_dense.insert(x_dense.end(), x.begin() + b * kLd, x.begin() + b * kLd + kR);
  }
  std::vector<float> finite = x_dense;
  for (float& v : finite) v = std::isfinite(v) ? v : 0.0f;
  const int xexp = PowerOfTwoExponent(MaxAbs(finite), 8, Signedness::kSigned);
  std::vector<float> dw(kR * kC);
  ActionCounts counts;
  macro->GradientCalc(ConstMatrixView(x.data(), kBatch, kR, kLd),
                      ConstMatrixView(e.data(), kBatch, kC, kC), MatrixView{dw.data(), kR, kC, kC},
                      RunContext{}, counts);
  QuantizedMatrix eq = QuantizeIndependently(e, 16);
  for (int64_t r = 0; r < kR; ++r) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t b = 0; b < kBatch; ++b) {
        const float v = x_dense[b * kR + r];  // NaN -> 0, infinities clip
        const int64_t xq =
            std::isnan(v) ? 0
                          : QuantizeToInt(v, xexp, 8, Signedness::kSigned, Rounding::kNearestEven);
        s += xq * eq.q[b * kC + c];
      }
      const float expect = static_cast<float>(std::ldexp(static_cast<double>(s), xexp + eq.exp));
      ASSERT_EQ(dw[r * kC + c], expect) << r << "," << c;
    }
  }
  EXPECT_EQ(counts.Get("macs"), kBatch * kR * kC);
}

TEST_F(BitSerialMacroTest, TilingKeepsNumbersAndAddsTileAccumulations) {
  auto one = MakeMacro("{impl: digital_bitserial, rows: 1024, cols: 1024}");
  auto tiled = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 8}");
  ActionCounts c1, c2;
  one->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, c1);
  tiled->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, c2);
  for (Direction dir : {Direction::kForward, Direction::kTransposed}) {
    const bool fwd = dir == Direction::kForward;
    const std::vector<float>& in = fwd ? x_ : e_;
    const int64_t k = fwd ? kR : kC, n = fwd ? kC : kR;
    std::vector<float> y1(kB * n), y2(kB * n);
    ActionCounts a1, a2;
    one->Multiply(ConstMatrixView(in.data(), kB, k, k), MatrixView{y1.data(), kB, n, n}, dir,
                  RunContext{}, a1);
    tiled->Multiply(ConstMatrixView(in.data(), kB, k, k), MatrixView{y2.data(), kB, n, n}, dir,
                    RunContext{}, a2);
    EXPECT_EQ(y1, y2);
    EXPECT_EQ(a1.Get("tile_accumulations"), 0);
    EXPECT_GT(a2.Get("tile_accumulations"), 0);
    EXPECT_EQ(a1.Get("macs"), a2.Get("macs"));
  }
}

TEST_F(BitSerialMacroTest, ZeroInputsSkipCyclesAndZeroWeightsGateOps) {
  auto macro = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 16}");
  ActionCounts pc;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, pc);
  std::vector<float> dense = RandomFloats(kB * kR, 1.0f, 0.0, 21), sparse = dense;
  for (int64_t b = 0; b < kB; ++b) {
    // Word lines 16..47 (two whole row blocks) carry zeros, so all their planes are skipped;
    // scattered zeros elsewhere save ANDs only.
    for (int64_t r = 0; r < kR; ++r) {
      if ((r >= 16 && r < 48) || r % 5 == 3) sparse[b * kR + r] = 0;
    }
  }
  sparse[0] = dense[0] = 1.0f;  // same scale for both
  std::vector<float> y(kB * kC);
  ActionCounts cd, cs;
  macro->Multiply(ConstMatrixView(dense.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, cd);
  macro->Multiply(ConstMatrixView(sparse.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, cs);
  EXPECT_LT(cs.Get("bitserial_cycles"), cd.Get("bitserial_cycles"));
  EXPECT_GT(cs.Get("skipped_zero_cycles"), cd.Get("skipped_zero_cycles"));
  EXPECT_EQ(cs.Get("bitserial_cycles") + cs.Get("skipped_zero_cycles"),
            cd.Get("bitserial_cycles") + cd.Get("skipped_zero_cycles"));
  EXPECT_LT(cs.Get("cell_and_ops"), cd.Get("cell_and_ops"));
  EXPECT_EQ(cs.Get("macs"), cd.Get("macs"));

  // More zero weights: more gated ops, fewer ANDs.
  std::vector<float> w_sparse = w_;
  for (int64_t i = 0; i < kR * kC; i += 2) w_sparse[i] = 0;
  auto macro2 = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 16}");
  macro2->Program(ConstMatrixView(w_sparse.data(), kR, kC, kC), RunContext{}, pc);
  ActionCounts cw;
  macro2->Multiply(ConstMatrixView(dense.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                   Direction::kForward, RunContext{}, cw);
  EXPECT_GT(cw.Get("gated_zero_weight_ops"), cd.Get("gated_zero_weight_ops"));
  EXPECT_LT(cw.Get("cell_and_ops"), cd.Get("cell_and_ops"));
  EXPECT_EQ(cw.Get("gated_zero_weight_ops") + cw.Get("cell_and_ops"),
            cd.Get("gated_zero_weight_ops") + cd.Get("cell_and_ops"));
}

TEST_F(BitSerialMacroTest, RefAndFastKernelsAgreeThroughTheMacroWithStochasticRounding) {
  const std::string common =
      "rows: 16, cols: 8, input_bits: 5, error_bits: 11, weight_bits: 2, "
      "rounding: stochastic, weight_rounding: stochastic, gradient_bits: 8";
  auto fast_macro = MakeMacro("{impl: digital_bitserial, kernel: fast, " + common + "}");
  auto ref_macro = MakeMacro("{impl: digital_bitserial, kernel: ref, " + common + "}");
  ThreadPool two(2);
  RunContext ctx{.seed = 9, .step = 3, .layer = 2, .stage = Stage::kForward, .pool = &two};
  ActionCounts cf, cr;
  fast_macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, cf);
  ref_macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, cr);
  std::vector<float> yf(kB * kC), yr(kB * kC), df(kB * kR), dr(kB * kR), gf(kR * kC), gr(kR * kC);
  fast_macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{yf.data(), kB, kC, kC},
                       Direction::kForward, ctx, cf);
  ref_macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{yr.data(), kB, kC, kC},
                      Direction::kForward, ctx, cr);
  ctx.stage = Stage::kBackward;
  fast_macro->Multiply(ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{df.data(), kB, kR, kR},
                       Direction::kTransposed, ctx, cf);
  ref_macro->Multiply(ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{dr.data(), kB, kR, kR},
                      Direction::kTransposed, ctx, cr);
  ctx.stage = Stage::kGradient;
  fast_macro->GradientCalc(ConstMatrixView(x_.data(), kB, kR, kR),
                           ConstMatrixView(e_.data(), kB, kC, kC),
                           MatrixView{gf.data(), kR, kC, kC}, ctx, cf);
  ref_macro->GradientCalc(ConstMatrixView(x_.data(), kB, kR, kR),
                          ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{gr.data(), kR, kC, kC},
                          ctx, cr);
  EXPECT_EQ(yf, yr);
  EXPECT_EQ(df, dr);
  EXPECT_EQ(gf, gr);
  EXPECT_EQ(cf, cr);
}

TEST_F(BitSerialMacroTest, StochasticRoundingIsKeyedByContextNotByThreads) {
  auto macro = MakeMacro("{impl: digital_bitserial, input_bits: 3, rounding: stochastic}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  ThreadPool two(2);
  auto run = [&](int64_t step, ThreadPool* pool) {
    std::vector<float> y(kB * kC);
    RunContext ctx{.seed = 1, .step = step, .layer = 0, .stage = Stage::kForward, .pool = pool};
    macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                    Direction::kForward, ctx, counts);
    return y;
  };
  EXPECT_EQ(run(4, nullptr), run(4, &two));
  EXPECT_NE(run(4, nullptr), run(5, nullptr));
}

TEST(BitSerialMacroConfig, RejectsWeightWidthsThatAreNotPowersOfTwo) {
  try {
    MakeMacro("{impl: digital_bitserial, weight_bits: 3}");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("weight_bits"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MakeMacro("{impl: digital_bitserial, gradient_bits: 12}"), ConfigError);
  EXPECT_THROW(MakeMacro("{impl: digital_bitserial, weight_bits: 16, weight_bits_backward: 8}"),
               ConfigError);
  EXPECT_THROW(MakeMacro("{impl: digital_bitserial, input_bits: 17}"), ConfigError);
  EXPECT_NO_THROW(MakeMacro("{impl: digital_bitserial, input_bits: 13, weight_bits: 2}"));
}

}  // namespace
}  // namespace pim::kernels

namespace pim::kernels {
namespace {

// The reference kernels (kernel: ref: quantizers, word pass, read-back, transpose, MAC) and the
// fast ones agree through the whole macro on the presets' settings and odd shapes, with NaN
// and +-Inf in the inputs, a second Program (the scale-guess pass), ReadWeights, BP and GC, at
// 1 and 2 threads: the same floats and counts.
TEST(BitSerialMacroParity, RefAndFastAgreeOnPresetSettingsAtOneAndTwoThreads) {
  const std::string configs[] = {
      // T-PIM (presets/chips/tpim.yaml): 128-row, 8-column arrays, 8-bit forward weights read
      // from 16 stored bits.
      "rows: 128, cols: 8, input_bits: 8, error_bits: 8, weight_bits: 8, "
      "weight_bits_backward: 16, gradient_bits: 16",
      "rows: 128, cols: 8, weight_bits: 4, weight_bits_backward: 8, forward_weight_read: nearest",
      "rows: 64, cols: 16, signed: false, input_bits: 6, weight_bits: 4, weight_bits_backward: 8",
      "rows: 256, cols: 256, input_bits: 16, error_bits: 16, weight_bits: 16, gradient_bits: 16",
  };
  ThreadPool two(2);
  const int64_t b = 9, rows = 133, cols = 45;
  std::vector<float> w = RandomFloats(rows * cols, 0.3f, 0.1, 21);
  std::vector<float> w2 = RandomFloats(rows * cols, 0.31f, 0.1, 22);
  std::vector<float> x = RandomFloats(b * rows, 2.0f, 0.2, 23);
  std::vector<float> e = RandomFloats(b * cols, 0.01f, 0.2, 24);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[40] = std::numeric_limits<float>::infinity();
  e[7] = -std::numeric_limits<float>::infinity();
  for (const std::string& cfg : configs) {
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
      SCOPED_TRACE(cfg + (pool ? ", 2 threads" : ", 1 thread"));
      struct Out {
        std::vector<float> y, dx, dw, wr;
        ActionCounts counts;
      };
      auto run = [&](const char* kernel) {
        auto m = MakeMacro(std::string("{impl: digital_bitserial, kernel: ") + kernel + ", " +
                           cfg + "}");
        Out o;
        RunContext ctx{.seed = 4, .step = 1, .layer = 0, .stage = Stage::kUpdate, .pool = pool};
        m->Program(ConstMatrixView(w.data(), rows, cols, cols), ctx, o.counts);
        m->Program(ConstMatrixView(w2.data(), rows, cols, cols), ctx, o.counts);
        o.y.resize(b * cols);
        o.dx.resize(b * rows);
        o.dw.resize(rows * cols);
        o.wr.resize(rows * cols);
        ctx.stage = Stage::kForward;
        m->Multiply(ConstMatrixView(x.data(), b, rows, rows), MatrixView{o.y.data(), b, cols, cols},
                    Direction::kForward, ctx, o.counts);
        ctx.stage = Stage::kBackward;
        m->Multiply(ConstMatrixView(e.data(), b, cols, cols), MatrixView{o.dx.data(), b, rows, rows},
                    Direction::kTransposed, ctx, o.counts);
        ctx.stage = Stage::kGradient;
        m->GradientCalc(ConstMatrixView(x.data(), b, rows, rows),
                        ConstMatrixView(e.data(), b, cols, cols),
                        MatrixView{o.dw.data(), rows, cols, cols}, ctx, o.counts);
        m->ReadWeights(MatrixView{o.wr.data(), rows, cols, cols});
        return o;
      };
      const Out f = run("fast"), r = run("ref");
      auto bits = [](const std::vector<float>& v) {
        std::vector<uint32_t> out;
        for (float a : v) out.push_back(std::bit_cast<uint32_t>(a));
        return out;
      };
      EXPECT_EQ(bits(f.y), bits(r.y));
      EXPECT_EQ(bits(f.dx), bits(r.dx));
      EXPECT_EQ(bits(f.dw), bits(r.dw));
      EXPECT_EQ(bits(f.wr), bits(r.wr));
      EXPECT_EQ(f.counts, r.counts);
      double sum = 0;
      for (float a : f.y) sum += std::fabs(a);
      EXPECT_GT(sum, 0);  // not all zero
    }
  }
}

}  // namespace
}  // namespace pim::kernels
