// Data mapping of FC and CONV layers onto fixed arrays: im2col (dense) vs channel-wise (one row
// segment per kernel position). The numbers are identical in every stage; the counts and the
// array utilization follow docs/numerics.md, "Mapping".
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// --- The kernel's segments ------------------------------------------------------------------

std::vector<int32_t> RandomInts(int64_t count, int bits, double zero_fraction, uint64_t key) {
  CounterRng rng(key);
  const int64_t lo = IntMin(bits, Signedness::kSigned), hi = IntMax(bits, Signedness::kSigned);
  std::vector<int32_t> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    v[i] = rng.Uniform(2 * i) < zero_fraction
               ? 0
               : static_cast<int32_t>(lo + static_cast<int64_t>(rng.Below(2 * i + 1, hi - lo + 1)));
  }
  return v;
}

TEST(MappingKernel, BlockEndsAndCountsRestartAtEverySegment) {
  using kernels::BlockEnd;
  using kernels::NumBlocks;
  // 3 segments of 5 with tiles of 4: blocks [0,4) [4,5) [5,9) [9,10) [10,14) [14,15).
  EXPECT_EQ(BlockEnd(0, 15, 4, 5), 4);
  EXPECT_EQ(BlockEnd(4, 15, 4, 5), 5);
  EXPECT_EQ(BlockEnd(5, 15, 4, 5), 9);
  EXPECT_EQ(BlockEnd(14, 15, 4, 5), 15);
  EXPECT_EQ(NumBlocks(15, 4, 5), 6);
  EXPECT_EQ(NumBlocks(15, 4, 0), 4);
  EXPECT_EQ(NumBlocks(17, 4, 5), 7);  // a ragged last segment of 2
  EXPECT_EQ(NumBlocks(15, 8, 5), 3);
  EXPECT_EQ(NumBlocks(15, 4, 15), 4);
  EXPECT_EQ(NumBlocks(0, 4, 5), 0);
}

// Segments change the blocks, never the integers; ref and fast agree on every count, and the
// counts that depend on the blocks follow the block numbers.
TEST(MappingKernel, SegmentsKeepTheProductAndFastEqualsRef) {
  struct Shape {
    int64_t m, k, n, tile_k, tile_n, segment_k, segment_n;
  };
  const Shape shapes[] = {{7, 45, 20, 16, 8, 5, 0},   {9, 45, 20, 4, 8, 9, 0},
                          {5, 60, 33, 16, 16, 12, 0}, {6, 20, 45, 8, 16, 0, 5},
                          {11, 37, 50, 8, 4, 0, 10},  {3, 100, 3, 256, 256, 7, 0}};
  static ThreadPool two(2);
  uint64_t key = 1;
  for (const Shape& s : shapes) {
    for (int bits : {8, 16}) {
      const auto x = RandomInts(s.m * s.k, 8, 0.4, MixKey(key, 1));
      const auto w = RandomInts(s.k * s.n, bits, 0.2, MixKey(key, 2));
      ++key;
      kernels::BitSerialProblem p;
      p.m = s.m;
      p.k = s.k;
      p.n = s.n;
      p.x = {x.data(), s.k, 1, 8, Signedness::kSigned};
      p.w = {w.data(), s.n, 1, bits, Signedness::kSigned};
      p.tile_k = s.tile_k;
      p.tile_n = s.tile_n;
      std::vector<int64_t> dense(static_cast<size_t>(s.m * s.n)), ref_y(dense.size()),
          fast_y(dense.size());
      p.ldy = s.n;
      p.y = dense.data();
      kernels::BitSerialCounts dense_c, ref_c, fast_c;
      kernels::ref::BitSerialMatMul(p, dense_c);
      p.segment_k = s.segment_k;
      p.segment_n = s.segment_n;
      p.y = ref_y.data();
      kernels::ref::BitSerialMatMul(p, ref_c);
      const std::string what = std::to_string(s.m) + "x" + std::to_string(s.k) + "x" +
                               std::to_string(s.n) + " w" + std::to_string(bits);
      EXPECT_EQ(ref_y, dense) << what;
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
        std::fill(fast_y.begin(), fast_y.end(), -3);
        p.y = fast_y.data();
        kernels::fast::BitSerialMatMul(p, fast_c, pool);
        EXPECT_EQ(fast_y, dense) << what;
        EXPECT_TRUE(fast_c == ref_c) << what;
      }
      const int64_t nk = kernels::NumBlocks(s.k, s.tile_k, s.segment_k);
      const int64_t nn = kernels::NumBlocks(s.n, s.tile_n, s.segment_n);
      EXPECT_EQ(ref_c.tile_accumulations, s.m * s.n * (nk - 1)) << what;
      EXPECT_EQ(ref_c.bitserial_cycles + ref_c.skipped_zero_cycles, s.m * nk * nn * 8) << what;
      EXPECT_EQ(ref_c.input_buffer_reads, s.m * s.k * nn) << what;
      // Block-independent counts do not move.
      EXPECT_EQ(ref_c.cell_and_ops, dense_c.cell_and_ops) << what;
      EXPECT_EQ(ref_c.gated_zero_weight_ops, dense_c.gated_zero_weight_ops) << what;
      EXPECT_EQ(ref_c.output_buffer_writes, dense_c.output_buffer_writes) << what;
      EXPECT_EQ(ref_c.macs, dense_c.macs) << what;
    }
  }
}

// --- A conv layer on the macro under both mappings -----------------------------------------

struct ConvCase {
  int64_t h, c, oc, kernel, rows, cols;
};

struct ConvRun {
  std::vector<float> y, dx, dw;
  std::array<ActionCounts, kNumStages> counts;
  ArrayOccupancy occupancy;
};

ConvRun RunConv(const ConvCase& cc, ConvMapping mapping, const std::string& kernel) {
  auto layer = Registry<Layer>::CreateFrom(
      ParseYaml("{impl: conv2d, out_channels: " + std::to_string(cc.oc) +
                    ", kernel: " + std::to_string(cc.kernel) + ", padding: 1}",
                "test"));
  const Shape out = layer->Build(Shape{cc.h, cc.h, cc.c}, 77);
  const std::string macro = "{impl: digital_bitserial, rows: " + std::to_string(cc.rows) +
                            ", cols: " + std::to_string(cc.cols) +
                            ", weight_bits: 8, error_bits: 8, kernel: " + kernel + "}";
  layer->matmul()->AttachMacro(Registry<Macro>::CreateFrom(ParseYaml(macro, "test")), 3, mapping);
  StepContext ctx;
  ctx.seed = 5;
  ctx.step = 2;
  layer->CommitUpdate(ctx);
  const int64_t n = 3;
  Tensor x(Shape{n, cc.h, cc.h, cc.c});
  CounterRng rng(MixKey(cc.h, cc.c, cc.oc));
  for (int64_t i = 0; i < x.numel(); ++i) {
    // ReLU-like inputs: a third exact zeros (skipped planes).
    const float u = rng.Uniform(2 * i);
    x[i] = u < 0.33f ? 0.0f : rng.Uniform(2 * i + 1);
  }
  Tensor y, dx;
  layer->Forward(x, y, ctx);
  Tensor dy(y.shape());
  for (int64_t i = 0; i < dy.numel(); ++i) dy[i] = 0.01f * (2.0f * rng.Uniform(1000000 + i) - 1);
  layer->PropagateError(dy, dx, ctx);
  layer->ComputeGradient(dy, ctx);
  EXPECT_EQ(y.shape(), (Shape{n, out[0], out[1], out[2]}));
  ConvRun r;
  r.y.assign(y.data(), y.data() + y.numel());
  r.dx.assign(dx.data(), dx.data() + dx.numel());
  const Tensor& dw = layer->Parameters()[0]->grad;
  r.dw.assign(dw.data(), dw.data() + dw.numel());
  r.counts = layer->matmul()->TakeCounts();
  r.occupancy = layer->matmul()->occupancy();
  return r;
}

const ConvCase kConvCases[] = {
    {6, 3, 5, 3, 16, 4},    // c < rows: positions share arrays under im2col
    {5, 20, 6, 3, 8, 4},    // c > rows: each position takes several row tiles
    {6, 6, 7, 3, 16, 8},    // c does not divide rows
    {5, 16, 9, 3, 16, 16},  // c == rows: both mappings take the same arrays
};

int64_t Count(const ConvRun& r, Stage s, const char* action) {
  return r.counts[static_cast<int>(s)].Get(action);
}

TEST(ConvMappingTest, ChannelWiseGivesBitIdenticalOutputsErrorsAndGradients) {
  for (const ConvCase& cc : kConvCases) {
    for (const char* kernel : {"fast", "ref"}) {
      const ConvRun a = RunConv(cc, ConvMapping::kIm2col, kernel);
      const ConvRun b = RunConv(cc, ConvMapping::kChannelWise, kernel);
      const std::string what =
          "c=" + std::to_string(cc.c) + " rows=" + std::to_string(cc.rows) + " kernel=" + kernel;
      EXPECT_EQ(a.y, b.y) << what;
      EXPECT_EQ(a.dx, b.dx) << what;
      EXPECT_EQ(a.dw, b.dw) << what;
      // The fast kernel counts what the reference does, under either mapping.
      const ConvRun f = RunConv(cc, ConvMapping::kChannelWise, "fast");
      for (int s = 0; s < kNumStages; ++s) EXPECT_EQ(f.counts[s], b.counts[s]) << what;
    }
  }
}

TEST(ConvMappingTest, CountsAndUtilizationFollowTheMappingEquations) {
  for (const ConvCase& cc : kConvCases) {
    const ConvRun a = RunConv(cc, ConvMapping::kIm2col, "fast");
    const ConvRun b = RunConv(cc, ConvMapping::kChannelWise, "fast");
    const std::string what = "c=" + std::to_string(cc.c) + " rows=" + std::to_string(cc.rows);
    const int64_t positions = cc.kernel * cc.kernel, r = positions * cc.c;
    const int64_t out_hw = cc.h * cc.h;  // padding 1, kernel 3: same size
    const int64_t m = 3 * out_hw;
    const int64_t col_tiles = CeilDiv(cc.oc, cc.cols);
    const int64_t row_tiles_im2col = CeilDiv(r, cc.rows);
    const int64_t row_tiles_cw = positions * CeilDiv(cc.c, cc.rows);

    // FP: one merge per extra row block of the reduction.
    EXPECT_EQ(Count(a, Stage::kForward, "tile_accumulations"), m * cc.oc * (row_tiles_im2col - 1))
        << what;
    EXPECT_EQ(Count(b, Stage::kForward, "tile_accumulations"), m * cc.oc * (row_tiles_cw - 1))
        << what;
    // Every (sample, row block, column block) sees 8 input planes, applied or skipped.
    for (const auto& [run, tiles] :
         {std::pair{&a, row_tiles_im2col}, std::pair{&b, row_tiles_cw}}) {
      EXPECT_EQ(Count(*run, Stage::kForward, "bitserial_cycles") +
                    Count(*run, Stage::kForward, "skipped_zero_cycles"),
                m * tiles * col_tiles * 8)
          << what;
      EXPECT_EQ(Count(*run, Stage::kForward, "input_buffer_reads"), m * r * col_tiles) << what;
      // BP: the reduction runs over oc (unchanged); the stored rows are outputs, in blocks.
      EXPECT_EQ(Count(*run, Stage::kBackward, "tile_accumulations"),
                m * r * (CeilDiv(cc.oc, cc.cols) - 1))
          << what;
      EXPECT_EQ(Count(*run, Stage::kBackward, "bitserial_cycles") +
                    Count(*run, Stage::kBackward, "skipped_zero_cycles"),
                m * CeilDiv(cc.oc, cc.cols) * tiles * 8)
          << what;
      // Occupancy: arrays x rows x cols x 16-bit cells vs the stored weights' cells.
      EXPECT_EQ(run->occupancy.cells_allocated, tiles * col_tiles * cc.rows * cc.cols * 16) << what;
      EXPECT_EQ(run->occupancy.cells_used, r * cc.oc * 16) << what;
      EXPECT_GT(run->occupancy.utilization(), 0.0) << what;
      EXPECT_LE(run->occupancy.utilization(), 1.0) << what;
      EXPECT_EQ(Count(*run, Stage::kUpdate, "array_cells_allocated"),
                run->occupancy.cells_allocated);
    }
    // Mapping-independent: the logical work, the ANDs, the writes, and the whole GC stage.
    for (const char* action : {"macs", "cell_and_ops", "gated_zero_weight_ops",
                               "output_buffer_writes", "input_buffer_writes", "bias_adds"}) {
      EXPECT_EQ(Count(a, Stage::kForward, action), Count(b, Stage::kForward, action))
          << what << " " << action;
      EXPECT_EQ(Count(a, Stage::kBackward, action), Count(b, Stage::kBackward, action))
          << what << " " << action;
    }
    EXPECT_EQ(a.counts[static_cast<int>(Stage::kGradient)],
              b.counts[static_cast<int>(Stage::kGradient)])
        << what;
    EXPECT_EQ(Count(a, Stage::kUpdate, "weight_writes"), Count(b, Stage::kUpdate, "weight_writes"));

    if (row_tiles_cw > row_tiles_im2col) {
      // Positions that share an array under im2col take their own arrays channel-wise: more
      // merges, lower utilization.
      EXPECT_GT(Count(b, Stage::kForward, "tile_accumulations"),
                Count(a, Stage::kForward, "tile_accumulations"))
          << what;
      EXPECT_LT(b.occupancy.utilization(), a.occupancy.utilization()) << what;
    } else {
      EXPECT_EQ(b.counts, a.counts) << what;  // c a multiple of rows: the same layout
    }
    if (cc.c < cc.rows) {
      EXPECT_LT(b.occupancy.utilization(), a.occupancy.utilization()) << what;
      EXPECT_NEAR(b.occupancy.utilization(),
                  static_cast<double>(cc.c) / cc.rows * cc.oc / (col_tiles * cc.cols), 1e-12);
    }
  }
}

TEST(ConvMappingTest, FcLayersKeepTheDenseTilingUnderEitherMapping) {
  for (ConvMapping mapping : {ConvMapping::kIm2col, ConvMapping::kChannelWise}) {
    auto layer = Registry<Layer>::CreateFrom(ParseYaml("{impl: linear, out_features: 10}", "t"));
    layer->Build(Shape{50}, 3);
    layer->matmul()->AttachMacro(
        Registry<Macro>::CreateFrom(ParseYaml("{impl: digital_bitserial, rows: 16, cols: 8}", "t")),
        0, mapping);
    layer->CommitUpdate(StepContext{});
    // 50 x 10 on 4 x 2 arrays of 16 x 8.
    const ArrayOccupancy occ = layer->matmul()->occupancy();
    EXPECT_EQ(occ.cells_used, 50 * 10 * 16);
    EXPECT_EQ(occ.cells_allocated, 4 * 2 * 16 * 8 * 16);
    EXPECT_DOUBLE_EQ(occ.utilization(), 500.0 / 1024.0);
  }
}

// --- End to end -----------------------------------------------------------------------------

const char* kPimCnn = R"(
seed: 9
data: {impl: synthetic, train_size: 64, test_size: 32, height: 8, width: 8, channels: 2, classes: 4,
       noise: 1.0}
model:
  impl: sequential
  layers:
    - {impl: conv2d, out_channels: 6, kernel: 3, padding: 1}
    - {impl: relu}
    - {impl: max_pool2d, kernel: 2}
    - {impl: conv2d, out_channels: 5, kernel: 3, padding: 1}
    - {impl: relu}
    - {impl: flatten}
    - {impl: linear, out_features: 4}
train: {epochs: 2, batch_size: 16, optimizer: {impl: sgd, learning_rate: 0.05, momentum: 0.9}}
pim:
  macro: {impl: digital_bitserial, rows: 16, cols: 8, input_bits: 8, weight_bits: 8}
)";

ConfigNode Resolve(const std::vector<std::string>& sets) {
  return testing::ResolveYaml(kPimCnn, "pim.yaml", sets);
}

std::vector<std::vector<float>> Weights(Session& s) { return testing::StateValues(s); }

nlohmann::json FirstEpochLayers(const std::string& dir) {
  std::istringstream in(ReadFile(dir + "/metrics.jsonl"));
  std::string line;
  std::getline(in, line);
  return nlohmann::json::parse(line)["layers"];
}

TEST(ConvMappingTest, ChannelWiseTrainsToTheSameWeightsWithLowerConvUtilization) {
  testing::TempDir dir_a, dir_b;
  Session im2col(Resolve({"pim.conv_mapping=im2col"}));
  im2col.Train(dir_a.path(), false, {});
  Session channel(Resolve({"pim.conv_mapping=channel_wise"}));
  channel.Train(dir_b.path(), false, {});
  EXPECT_EQ(Weights(im2col), Weights(channel));

  const nlohmann::json a = FirstEpochLayers(dir_a.path()), b = FirstEpochLayers(dir_b.path());
  ASSERT_EQ(a.size(), 3u);  // conv, conv, linear
  ASSERT_EQ(b.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) {
    for (const auto* l : {&a[i], &b[i]}) {
      const double u = (*l)["array_utilization"];
      EXPECT_GT(u, 0.0);
      EXPECT_LE(u, 1.0);
    }
    EXPECT_EQ(a[i]["actions"]["forward"]["macs"], b[i]["actions"]["forward"]["macs"]);
    EXPECT_EQ(a[i]["actions"]["gradient"], b[i]["actions"]["gradient"]);
  }
  // conv 8x8x2 -> 6, kernel 3: 18 rows. im2col: 2 row tiles of 16 x 1 column tile of 8.
  // Channel-wise: 9 positions of 2 rows, one array each.
  EXPECT_DOUBLE_EQ(a[0]["array_utilization"].get<double>(), 18.0 * 6 / (2 * 16 * 8));
  EXPECT_DOUBLE_EQ(b[0]["array_utilization"].get<double>(), 18.0 * 6 / (9 * 16 * 8));
  EXPECT_GT(b[0]["actions"]["forward"]["tile_accumulations"].get<int64_t>(),
            a[0]["actions"]["forward"]["tile_accumulations"].get<int64_t>());
  // conv 4x4x6 -> 5: 54 rows; im2col 4 row tiles, channel-wise 9.
  EXPECT_DOUBLE_EQ(a[1]["array_utilization"].get<double>(), 54.0 * 5 / (4 * 16 * 8));
  EXPECT_DOUBLE_EQ(b[1]["array_utilization"].get<double>(), 54.0 * 5 / (9 * 16 * 8));
  // The FC layer: 80 x 4 on 5 x 1 arrays, the same under both.
  EXPECT_EQ(a[2]["actions"], b[2]["actions"]);
  EXPECT_DOUBLE_EQ(a[2]["array_utilization"].get<double>(), 80.0 * 4 / (5 * 16 * 8));
  EXPECT_DOUBLE_EQ(b[2]["array_utilization"].get<double>(), 80.0 * 4 / (5 * 16 * 8));
}

}  // namespace
}  // namespace pim
