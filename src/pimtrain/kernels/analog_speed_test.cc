// Tests of the fast analog kernel's speed techniques against the definition: the refined-cell
// draws deferred past the conversion (FillNormalsDeferRefined, RefinedEdges), bit for bit equal
// to ref::AnalogMatMul at 1 and 2 threads, and the dispatch table.
#include <gtest/gtest.h>

#include <cmath>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/analog.h"
#include "pimtrain/kernels/fast/analog_worker.h"

namespace pim::kernels {
namespace {

namespace fi = fast::internal;

TEST(AnalogSpeedTest, RefinedEdgesBoundEveryDrawOfTheirCell) {
  const fi::RefinedEdges& e = fi::GetRefinedEdges();
  const CounterRng rng(3);
  uint64_t k = 0;
  for (uint32_t c = 0; c < 2 * kGaussRefine; ++c) {
    const uint32_t h = c < kGaussRefine ? c : 65536 - 2 * kGaussRefine + c;
    ASSERT_TRUE(RefinedCell(h));
    ASSERT_EQ(fi::RefinedEdges::Index(h), c);
    ASSERT_LT(e.lo[c], e.hi[c]);
    std::vector<uint64_t> us = {0, 1, ~uint64_t{0}, ~uint64_t{0} - 1, uint64_t{1} << 63};
    for (int t = 0; t < 2000; ++t) {
      const auto b = rng.Block(k++);
      us.push_back((static_cast<uint64_t>(b[1]) << 32) | b[0]);
    }
    for (const uint64_t u : us) {
      const float z = GaussianRefined(h, u);
      EXPECT_GE(z, e.lo[c]) << "cell " << h;
      EXPECT_LE(z, e.hi[c]) << "cell " << h;
    }
  }
}

TEST(AnalogSpeedTest, DeferredRefinedDrawsAreListedAndKeepTheirLabels) {
  for (const uint64_t start : {uint64_t{0}, uint64_t{37}, uint64_t{1} << 20}) {
    const int64_t count = 70000;  // ~0.2 % refined: about 140 of them, partial groups at both ends
    std::vector<float> full(count), lab(count);
    std::vector<fi::DeferredDraw> deferred;
    fast::FillNormals(11, kNoiseStreamA, start, count, full.data());
    fi::FillNormalsDeferRefined(11, kNoiseStreamA, start, count, lab.data(), deferred);
    std::vector<uint8_t> listed(count, 0);
    for (const fi::DeferredDraw& d : deferred) {
      ASSERT_LT(d.pos, count);
      EXPECT_EQ(d.h, NoiseUniform16(11, kNoiseStreamA, start + d.pos));
      EXPECT_TRUE(RefinedCell(d.h));
      EXPECT_EQ(lab[d.pos], GaussianFrom16(d.h));  // the label
      listed[d.pos] = 1;
    }
    int64_t refined = 0;
    for (int64_t i = 0; i < count; ++i) {
      const bool r = RefinedCell(NoiseUniform16(11, kNoiseStreamA, start + i));
      refined += r;
      EXPECT_EQ(listed[i] != 0, r) << i;
      if (!r) {
        EXPECT_EQ(lab[i], full[i]) << i;
      }
    }
    EXPECT_GT(refined, 50);
    EXPECT_EQ(static_cast<int64_t>(deferred.size()), refined);
  }
}

// Dataflow A on the general path with noise wide enough that refined draws (|z| > 3.1) land on
// both sides of code boundaries, and narrow enough that their cells' bounds mostly agree; linear
// and INL transfers, integer and conductance partial sums: fast == ref bit for bit, 1 and 2
// threads, codes and counts (the linear integer cases draw direct codes, compared with their
// reference side, ref::AnalogMatMulAsFast; the others with the definition).
TEST(AnalogSpeedTest, DeferredRefinedDrawsGiveTheReferenceCodes) {
  ThreadPool two(2);
  int cases = 0;
  for (const double sigma : {0.2, 0.45, 1.3, 4.0}) {
    for (const double inl : {0.0, 0.3}) {
      for (const bool variation : {false, true}) {
        const int64_t m = 7, k = 150, n = 37;
        const CounterRng rng(static_cast<uint64_t>(sigma * 100 + inl * 10 + variation));
        uint64_t i = 0;
        std::vector<int32_t> x(m * k), w(k * n);
        for (auto& v : x) v = static_cast<int32_t>(rng.Below(i++, 255)) - 127;
        for (auto& v : w) v = static_cast<int32_t>(rng.Below(i++, 256));
        std::vector<float> g;
        AnalogProblem p;
        p.m = m;
        p.k = k;
        p.n = n;
        p.x = x.data();
        p.ldx = k;
        p.x_bits = 7;
        p.w = w.data();
        p.slices = 8;
        p.block = 64;
        if (variation) {
          g.resize(static_cast<size_t>(k * 8 * n));
          for (int64_t r = 0; r < k; ++r) {
            for (int q = 0; q < 8; ++q) {
              for (int64_t c = 0; c < n; ++c) {
                g[(r * 8 + q) * n + c] = static_cast<float>((w[r * n + c] >> q) & 1) *
                                         (0.95f + 0.1f * static_cast<float>(rng.Uniform(i++)));
              }
            }
          }
          p.conductance = g.data();
        }
        p.readout.adc = MakeAdcTransfer(5, 40.0, inl, sigma * 40.0 / 31.0);
        p.noise_key = 1234 + static_cast<uint64_t>(cases);
        std::vector<int64_t> yr(m * n), y1(m * n), y2(m * n);
        AnalogCounts cr, c1, c2;
        p.y = yr.data();
        p.ldy = n;
        ref::AnalogMatMulAsFast(p, cr);  // the definition where the codes are not direct
        p.y = y1.data();
        fast::AnalogMatMul(p, nullptr, c1, nullptr);
        p.y = y2.data();
        fast::AnalogMatMul(p, nullptr, c2, &two);
        const std::string what = "sigma " + std::to_string(sigma) + " inl " + std::to_string(inl) +
                                 " variation " + std::to_string(variation);
        EXPECT_EQ(yr, y1) << what;
        EXPECT_EQ(yr, y2) << what;
        EXPECT_TRUE(cr == c1) << what;
        EXPECT_TRUE(cr == c2) << what;
        EXPECT_GT(cr.adc_clipped, 0) << what;
        ++cases;
      }
    }
  }
}

// The byte-wise plane packer (levels of at most 8 bits) against the planes' definition: bit t of
// row r's level in column cp, rows from the block start, zero past the block's rows; short last
// blocks, blocks of one, two and three words, column counts off the 64-column tasks.
TEST(AnalogSpeedTest, PackedPlanesHoldTheLevelsBits) {
  ThreadPool two(2);
  for (const auto& [k, n, pol, block, slices, cell_bits] :
       {std::array<int64_t, 6>{130, 70, 1, 128, 8, 1}, std::array<int64_t, 6>{77, 33, 2, 64, 2, 4},
        std::array<int64_t, 6>{200, 5, 2, 150, 3, 2}, std::array<int64_t, 6>{9, 129, 1, 4, 7, 1}}) {
    const int64_t ncp = n * pol;
    const int bits = static_cast<int>(slices * cell_bits);
    const CounterRng rng(static_cast<uint64_t>(k * n));
    std::vector<int32_t> w(static_cast<size_t>(k * ncp));
    uint64_t i = 0;
    for (auto& v : w) v = static_cast<int32_t>(rng.Below(i++, uint64_t{1} << bits));
    AnalogProblem p;
    p.k = k;
    p.n = n;
    p.polarities = static_cast<int>(pol);
    p.w = w.data();
    p.block = block;
    p.slices = static_cast<int>(slices);
    p.cell_bits = static_cast<int>(cell_bits);
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
      fast::PackedAnalogWeights pw;
      fast::PackWeights(p, pw, pool);
      const int64_t blocks = (k + block - 1) / block;
      for (int64_t b = 0; b < blocks; ++b) {
        for (int t = 0; t < bits; ++t) {
          for (int64_t cp = 0; cp < ncp; ++cp) {
            const uint64_t* plane = pw.Plane(b, t, cp);
            for (int64_t wd = 0; wd < pw.words; ++wd) {
              uint64_t want = 0;
              for (int64_t r = 0; r < 64; ++r) {
                const int64_t row = b * block + wd * 64 + r;
                if (wd * 64 + r < block && row < k && ((w[row * ncp + cp] >> t) & 1)) {
                  want |= uint64_t{1} << r;
                }
              }
              ASSERT_EQ(plane[wd], want) << "k " << k << " block " << b << " bit " << t
                                         << " column " << cp << " word " << wd;
            }
          }
        }
      }
    }
  }
}

TEST(AnalogSpeedTest, DispatchTableIsComplete) {
  const fi::AnalogKernels& t = fi::Kernels();
  ASSERT_NE(t.isa, nullptr);
  EXPECT_NE(t.group_pair_normals, nullptr);
  EXPECT_NE(t.transfer_row, nullptr);
  EXPECT_NE(t.readout_c_columns, nullptr);
  for (const auto f : t.popcount_columns) EXPECT_NE(f, nullptr);
  EXPECT_NE(t.pack_planes8, nullptr);
  EXPECT_NE(t.build_planes, nullptr);
  EXPECT_NE(t.exact_product_tiles, nullptr);
}

}  // namespace
}  // namespace pim::kernels
