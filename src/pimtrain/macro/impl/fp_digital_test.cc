// The fp_digital macro (ISSCC 2025 14.5): ref (generic encoder, port reads through the
// cyclically mapped array) == fast (fused encode/align, integer GEMM, formula counts) in
// outputs and every count; forward and BP are W and W^T exactly where nothing is lost; port,
// rotation and buffer counts per direction; per-block exponents (align_block); vector-wise beats
// layer-wise alignment; training on the macro is deterministic and learns.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/formats.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

std::unique_ptr<Macro> MakeMacro(const std::string& yaml) {
  return Registry<Macro>::CreateFrom(ParseYaml("{impl: fp_digital, " + yaml + "}", "test"));
}

// Random values with a spread of 2^spread in magnitude, a few zeros, and optionally one huge
// element per row.
std::vector<float> RandomValues(int64_t rows, int64_t cols, int spread, bool huge, uint64_t key) {
  CounterRng rng(key);
  std::vector<float> v(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    const auto b = rng.Block(i);
    const float mag =
        std::ldexp(1.0f + (b[0] >> 9) * 0x1p-23f, -static_cast<int>(b[1] % (spread + 1)));
    v[i] = b[3] % 11 == 0 ? 0.0f : (b[2] & 1 ? -mag : mag);
    if (huge && i % cols == 3) v[i] *= 300.0f;
  }
  return v;
}

struct MacroRun {
  std::vector<float> fwd, bwd, weights;
  ActionCounts program, forward, backward;
};

// Overwrites some elements of v (cols per row) with special values: NaN, +-Inf, subnormals,
// FLT_MAX, and a row of values far below any format's range (its scale exponent out of range).
using Inject = void (*)(std::vector<float>& v, int64_t cols, float scale);

MacroRun RunMacro(const std::string& yaml, int64_t batch, int64_t rows, int64_t cols, int spread,
             bool huge, ThreadPool* pool, uint64_t key, Inject inject = nullptr,
             float error_scale = 1e-4f) {
  auto m = MakeMacro(yaml);
  std::vector<float> w = RandomValues(rows, cols, spread, huge, key);
  std::vector<float> x = RandomValues(batch, rows, spread, huge, key + 1);
  std::vector<float> e = RandomValues(batch, cols, spread, huge, key + 2);
  for (float& v : e) v *= error_scale;  // errors are small: exercises the tensor scale
  if (inject != nullptr) {
    inject(x, rows, 1.0f);
    inject(e, cols, error_scale);
  }
  RunContext ctx;
  ctx.seed = 3;
  ctx.step = 7;
  ctx.pool = pool;
  MacroRun r;
  ctx.stage = Stage::kUpdate;
  m->Program(ConstMatrixView(w.data(), rows, cols, cols), ctx, r.program);
  r.fwd.resize(batch * cols);
  r.bwd.resize(batch * rows);
  ctx.stage = Stage::kForward;
  m->Multiply(ConstMatrixView(x.data(), batch, rows, rows),
              MatrixView(r.fwd.data(), batch, cols, cols), Direction::kForward, ctx, r.forward);
  ctx.stage = Stage::kBackward;
  m->Multiply(ConstMatrixView(e.data(), batch, cols, cols),
              MatrixView(r.bwd.data(), batch, rows, rows), Direction::kTransposed, ctx, r.backward);
  r.weights.resize(rows * cols);
  m->ReadWeights(MatrixView(r.weights.data(), rows, cols, cols));
  return r;
}

std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float f : v) out.push_back(std::bit_cast<uint32_t>(f));
  return out;
}

TEST(FpDigitalMacroTest, RefAndFastAgreeInOutputsAndCounts) {
  ThreadPool two(2);
  const std::vector<std::string> configs = {
      "",  // BF16 accurate, vector-wise, truncation
      "input_format: e4m3, weight_format: e4m3, error_format: e5m2",
      "input_format: e4m3, weight_format: e4m3, error_format: e5m2, output_format: fp32, "
      "align_rounding: nearest",
      "alignment: layer",
      "alignment: layer, input_format: e4m3, weight_format: e4m3, error_format: e5m2",
      "input_bits: 12, weight_bits: 6, error_bits: 5, align_rounding: nearest",
      "input_format: fp16, weight_format: fp16, error_format: fp16, output_format: fp32",
      "input_format: int8, weight_format: int8, error_format: int8",
      "input_format: int4, weight_format: int4, error_format: int8, alignment: layer",
      "rounding: stochastic, weight_rounding: stochastic",
      "mode: approximate",
      "mode: approximate, input_format: e4m3, weight_format: e4m3, approx_or_bits: 4, "
      "approx_dropped_columns: 3",
      "tensor_scaling: false, input_format: e4m3, weight_format: e4m3, error_format: e5m2",
      "port_bits: 64, tree_inputs: 16",
  };
  uint64_t key = 10;
  for (const std::string& cfg : configs) {
    for (bool huge : {false, true}) {
      SCOPED_TRACE(cfg + (huge ? " (huge element)" : ""));
      const MacroRun ref = RunMacro("kernel: ref, " + cfg, 5, 70, 37, 12, huge, nullptr, key);
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
        const MacroRun fast = RunMacro("kernel: fast, " + cfg, 5, 70, 37, 12, huge, pool, key);
        EXPECT_EQ(Bits(fast.fwd), Bits(ref.fwd));
        EXPECT_EQ(Bits(fast.bwd), Bits(ref.bwd));
        EXPECT_EQ(Bits(fast.weights), Bits(ref.weights));
        EXPECT_EQ(fast.program.counts(), ref.program.counts());
        EXPECT_EQ(fast.forward.counts(), ref.forward.counts());
        EXPECT_EQ(fast.backward.counts(), ref.backward.counts());
      }
      ++key;
    }
  }
}

void InjectSpecials(std::vector<float>& v, int64_t cols, float scale) {
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            1e-40f,   // subnormal
                            -3e-42f,  // subnormal
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(),
                            -1e30f * scale,
                            1e-30f};
  const int64_t rows = static_cast<int64_t>(v.size()) / cols;
  for (int64_t r = 0; r < rows; ++r) {
    if (r == 1) {
      // A row far below every format's range: all subnormal or tiny.
      for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = (c % 3 == 0 ? 1e-39f : -2e-44f);
      continue;
    }
    for (int64_t c = r % 3; c < cols; c += 5) v[r * cols + c] = specials[(r + c) % 9];
  }
}

// The fast fused encoder against the reference numerics (fp::Encode) on NaN, +-Inf, subnormals,
// FLT_MAX and scales out of every format's range (a whole row of subnormals; errors scaled by
// 1e-30 and by 1e30): the same bits, forward and BP, every operand format and both alignments.
TEST(FpDigitalMacroTest, RefAndFastAgreeOnNanInfSubnormalsAndOutOfRangeScales) {
  const std::vector<std::string> configs = {
      "",
      "input_format: e4m3, weight_format: e4m3, error_format: e5m2",
      "input_format: e4m3, weight_format: e4m3, error_format: e5m2, output_format: fp32",
      "alignment: layer, input_format: e5m2, weight_format: e4m3, error_format: e5m2",
      "input_format: fp16, weight_format: fp16, error_format: fp16, output_format: fp32",
      "alignment: layer",
      "tensor_scaling: false, input_format: e4m3, weight_format: e4m3, error_format: e5m2",
      "mode: approximate, input_format: e4m3, weight_format: e4m3",
  };
  uint64_t key = 900;
  int64_t finite = 0;
  for (const std::string& cfg : configs) {
    for (float error_scale : {1e-4f, 1e-30f, 1e30f}) {
      SCOPED_TRACE(cfg + " error scale " + std::to_string(error_scale));
      const MacroRun ref = RunMacro("kernel: ref, " + cfg, 6, 40, 23, 12, false, nullptr, key,
                                    InjectSpecials, error_scale);
      const MacroRun fast = RunMacro("kernel: fast, " + cfg, 6, 40, 23, 12, false, nullptr, key,
                                     InjectSpecials, error_scale);
      EXPECT_EQ(Bits(fast.fwd), Bits(ref.fwd));
      EXPECT_EQ(Bits(fast.bwd), Bits(ref.bwd));
      EXPECT_EQ(fast.forward.counts(), ref.forward.counts());
      EXPECT_EQ(fast.backward.counts(), ref.backward.counts());
      for (float y : ref.fwd) finite += std::isfinite(y);
      ++key;
    }
  }
  EXPECT_GT(finite, 0);  // NaN is encoded as 0 and Inf saturates: outputs stay finite
}

// INT8 weights and inputs that are small integers: nothing is lost in alignment, so forward is
// x W and BP is e W^T exactly, rounded once to BF16.
TEST(FpDigitalMacroTest, ForwardAndBackwardAreWAndWTransposed) {
  const int64_t batch = 3, rows = 70, cols = 40;
  CounterRng rng(1);
  std::vector<float> w(rows * cols), x(batch * rows), e(batch * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(rng.Below(i, 15)) - 7;
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.Below(1000 + i, 15)) - 7;
  for (size_t i = 0; i < e.size(); ++i) e[i] = static_cast<float>(rng.Below(5000 + i, 15)) - 7;
  for (const char* kernel : {"ref", "fast"}) {
    auto m = MakeMacro(std::string("kernel: ") + kernel +
                       ", input_format: int8, weight_format: int8, error_format: int8, "
                       "output_format: fp32, port_bits: 64");
    RunContext ctx;
    ActionCounts pc, fc, bc;
    m->Program(ConstMatrixView(w.data(), rows, cols, cols), ctx, pc);
    std::vector<float> y(batch * cols), dx(batch * rows);
    m->Multiply(ConstMatrixView(x.data(), batch, rows, rows),
                MatrixView(y.data(), batch, cols, cols), Direction::kForward, ctx, fc);
    m->Multiply(ConstMatrixView(e.data(), batch, cols, cols),
                MatrixView(dx.data(), batch, rows, rows), Direction::kTransposed, ctx, bc);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t c = 0; c < cols; ++c) {
        double s = 0;
        for (int64_t r = 0; r < rows; ++r) s += double{x[b * rows + r]} * w[r * cols + c];
        EXPECT_EQ(y[b * cols + c], static_cast<float>(s)) << kernel;
      }
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t c = 0; c < cols; ++c) s += double{e[b * cols + c]} * w[r * cols + c];
        EXPECT_EQ(dx[b * rows + r], static_cast<float>(s)) << kernel;
      }
    }
    // Port model: 64-bit port, 8-bit cells: n = 8 weights per read, 64-input trees, 2 x 2
    // nibble passes per block. A pass reads its block's weight nibbles through the port: 4 x 64
    // bits = 4 reads for a full block, ceil(4 x 6 / 64) = 1 for the 6-element tail; every read
    // of an output off offset 0 is rotated. Forward (k = 70): 4 x (4 + 1) = 20 reads per
    // output, 40 - 5 outputs rotated. BP (k = 40): 4 x ceil(160 / 64) = 12, 70 - 9 rotated.
    EXPECT_EQ(fc.Get("array_row_reads"), batch * 40 * 20);
    EXPECT_EQ(fc.Get("rotations"), batch * (40 - 5) * 20);
    EXPECT_EQ(fc.Get("multiplier_input_loads"), batch * 40 * rows * 4);
    EXPECT_EQ(fc.Get("input_buffer_reads"), batch * rows * 5);
    EXPECT_EQ(fc.Get("output_buffer_writes"), batch * cols);
    EXPECT_EQ(bc.Get("array_row_reads"), batch * 70 * 12);
    EXPECT_EQ(bc.Get("rotations"), batch * (70 - 9) * 12);
    EXPECT_EQ(bc.Get("multiplier_input_loads"), batch * 70 * cols * 4);
    EXPECT_EQ(bc.Get("input_buffer_reads"), batch * cols * 9);
    EXPECT_EQ(bc.Get("exponent_adds"), batch * cols);
    EXPECT_EQ(pc.Get("weight_writes"), rows * cols * 8);
    EXPECT_EQ(pc.Get("exponent_writes"), cols);
    // S is 40 x 70 in 8 x 8 blocks: 5 x 9 blocks of 8 physical rows = 360 rows, 2 arrays of 256.
    EXPECT_EQ(pc.Get("array_cells_allocated"), 2 * 256 * 64);
    EXPECT_EQ(pc.Get("array_cells_used"), rows * cols * 8);
    EXPECT_EQ(fc.Get("macs"), batch * rows * cols);
  }
}

// align_block: every block of the reduction has its own shared exponent. Inputs whose second
// block is 2^-12 times the first: with one exponent per vector the 8-bit mantissas of the small
// block shift out entirely; with 64-element blocks they survive, in both directions. Ref and fast
// give the same bits and counts; the blocks' FP32 results are added once per extra block.
TEST(FpDigitalMacroTest, AlignBlockGivesEachBlockItsOwnExponent) {
  const int64_t batch = 2, rows = 128, cols = 70;
  CounterRng rng(3);
  std::vector<float> w(rows * cols), x(batch * rows), e(batch * cols);
  // Values with few mantissa bits, so that within a block nothing but the scale is lost.
  auto few_bits = [&](uint64_t i) { return 0.5f + 0.0625f * static_cast<float>(rng.Below(i, 8)); };
  for (size_t i = 0; i < w.size(); ++i) w[i] = few_bits(i);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t r = 0; r < rows; ++r) {
      x[b * rows + r] = (r < 64 ? 1.0f : 0x1p-12f) * few_bits(1000 + b * rows + r);
    }
    for (int64_t c = 0; c < cols; ++c) {
      e[b * cols + c] = (c < 64 ? 1.0f : 0x1p-12f) * few_bits(5000 + b * cols + c);
    }
  }
  auto run = [&](const std::string& extra, std::vector<float>* y, std::vector<float>* dx,
                 ActionCounts* fc) {
    auto m = MakeMacro("output_format: fp32, " + extra);
    RunContext ctx;
    ActionCounts pc, bc;
    m->Program(ConstMatrixView(w.data(), rows, cols, cols), ctx, pc);
    y->assign(batch * cols, 0);
    dx->assign(batch * rows, 0);
    m->Multiply(ConstMatrixView(x.data(), batch, rows, rows),
                MatrixView(y->data(), batch, cols, cols), Direction::kForward, ctx, *fc);
    m->Multiply(ConstMatrixView(e.data(), batch, cols, cols),
                MatrixView(dx->data(), batch, rows, rows), Direction::kTransposed, ctx, bc);
    fc->Merge(bc);
  };
  std::vector<float> yv, dxv, yb, dxb, yr, dxr;
  ActionCounts cv, cb, cr;
  run("align_block: 0", &yv, &dxv, &cv);
  run("align_block: 64", &yb, &dxb, &cb);
  run("align_block: 64, kernel: ref", &yr, &dxr, &cr);
  EXPECT_EQ(yb, yr);
  EXPECT_EQ(dxb, dxr);
  EXPECT_EQ(cb.counts(), cr.counts());
  // The small block's contribution to the outputs: lost with one exponent per vector, kept
  // with one per block (the large block is exact in both).
  double small = 0, gained = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t c = 0; c < cols; ++c) {
      for (int64_t r = 64; r < rows; ++r) small += double{x[b * rows + r]} * w[r * cols + c];
      gained += double{yb[b * cols + c]} - yv[b * cols + c];
    }
  }
  EXPECT_NEAR(gained, small, 1e-3 * small);
  // Forward: 2 row blocks per output column (70 columns) -> one FP32 add each; BP: 2 column
  // blocks per output row (128 rows).
  EXPECT_EQ(cb.Get("fp_accumulations"), batch * cols * 1 + batch * rows * 1);
  EXPECT_EQ(cv.Get("fp_accumulations"), 0);
  EXPECT_EQ(cb.Get("macs"), cv.Get("macs"));
}

// Relative error of one long dot product against FP64, BF16 at 8 bits: vector-wise alignment
// loses only against each vector's own maximum, layer-wise against the tensor's.
TEST(FpDigitalMacroTest, VectorWiseAlignmentBeatsLayerWise) {
  const int64_t batch = 16, rows = 256, cols = 16;
  auto error = [&](const char* mode) {
    CounterRng rng(9);
    std::vector<float> w(rows * cols), x(batch * rows);
    for (size_t i = 0; i < w.size(); ++i) w[i] = rng.Normal(i);
    // Rows of x at scales 2^0 .. 2^-15: a per-tensor exponent truncates the small rows.
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t r = 0; r < rows; ++r) {
        x[b * rows + r] =
            std::ldexp(std::fabs(rng.Normal(10000 + b * rows + r)), -static_cast<int>(b));
      }
    }
    auto m = MakeMacro(std::string("alignment: ") + mode + ", output_format: fp32");
    RunContext ctx;
    ActionCounts c;
    m->Program(ConstMatrixView(w.data(), rows, cols, cols), ctx, c);
    std::vector<float> y(batch * cols);
    m->Multiply(ConstMatrixView(x.data(), batch, rows, rows),
                MatrixView(y.data(), batch, cols, cols), Direction::kForward, ctx, c);
    double mean = 0;  // the mean over samples of each sample's relative RMS error
    for (int64_t b = 0; b < batch; ++b) {
      double err = 0, norm = 0;
      for (int64_t col = 0; col < cols; ++col) {
        double s = 0;
        for (int64_t r = 0; r < rows; ++r) s += double{x[b * rows + r]} * w[r * cols + col];
        err += (y[b * cols + col] - s) * (y[b * cols + col] - s);
        norm += s * s;
      }
      mean += std::sqrt(err / norm) / batch;
    }
    return mean;
  };
  const double vec = error("vector"), layer = error("layer");
  EXPECT_LT(vec, 0.05);
  EXPECT_LT(2 * vec, layer);
}

TEST(FpDigitalMacroTest, BadWidthsAreConfigErrors) {
  EXPECT_THROW(MakeMacro("input_format: int8, input_bits: 6"), ConfigError);
  EXPECT_THROW(MakeMacro("input_bits: 1"), ConfigError);
  EXPECT_THROW(MakeMacro("weight_bits: 16, port_bits: 8"), ConfigError);
  EXPECT_THROW(MakeMacro("input_format: fp8"), ConfigError);
  auto m = MakeMacro("input_format: e4m3, weight_format: e4m3, error_format: e5m2");
  EXPECT_EQ(m->spec().input_bits, 4);
  EXPECT_EQ(m->spec().error_bits, 4);
  EXPECT_EQ(m->HardwareParams().at("weights_per_read"), 64.0);
}

const char* kFpMlp = R"(
seed: 4
data: {impl: synthetic, train_size: 128, test_size: 64, height: 6, width: 6, channels: 1,
       classes: 4, noise: 0.8}
model: {impl: mlp, layers: [36, 24, 4]}
train: {epochs: 3, batch_size: 16, optimizer: {impl: sgd, learning_rate: 0.05, momentum: 0.9}}
pim:
  macro: {impl: fp_digital, input_format: e4m3, weight_format: e4m3, error_format: e5m2}
)";

ConfigNode ResolveMlp(const std::vector<std::string>& sets) {
  return testing::ResolveYaml(kFpMlp, "fp.yaml", sets);
}

TEST(FpDigitalMacroTest, TrainingIsDeterministicAcrossKernelsAndThreadsAndLearns) {
  Session fast1(ResolveMlp({"threads=1", "pim.macro.rounding=stochastic"}));
  TrainSummary a = fast1.Train("", false, {});
  Session fast2(ResolveMlp({"threads=2", "pim.macro.rounding=stochastic"}));
  fast2.Train("", false, {});
  Session ref(ResolveMlp({"threads=2", "pim.macro.rounding=stochastic", "pim.macro.kernel=ref"}));
  ref.Train("", false, {});
  EXPECT_EQ(testing::StateValues(fast1), testing::StateValues(fast2));
  EXPECT_EQ(testing::StateValues(fast1), testing::StateValues(ref));
  EXPECT_GT(a.test_accuracy, 0.5);
}

// The same with per-block exponents (align_block: 16 cuts the 36 x 24 and 24 x 4 layers into
// tiles): 1 and 2 threads and the ref kernel train to the same bits, stochastic rounding on.
TEST(FpDigitalMacroTest, TrainingWithAlignBlocksIsDeterministicAcrossKernelsAndThreads) {
  const std::vector<std::string> base = {"pim.macro.rounding=stochastic", "pim.macro.align_block=16",
                                         "train.epochs=1"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.end(), base.begin(), base.end());
    return ResolveMlp(more);
  };
  Session fast1(with({"threads=1"}));
  TrainSummary a = fast1.Train("", false, {});
  Session fast2(with({"threads=2"}));
  fast2.Train("", false, {});
  Session ref(with({"threads=2", "pim.macro.kernel=ref"}));
  ref.Train("", false, {});
  EXPECT_EQ(testing::StateValues(fast1), testing::StateValues(fast2));
  EXPECT_EQ(testing::StateValues(fast1), testing::StateValues(ref));
  EXPECT_GT(a.test_accuracy, 0.3);
}

}  // namespace
}  // namespace pim
