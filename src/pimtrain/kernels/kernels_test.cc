// Kernel tests: fast GEMM vs the reference, thread-count bit-identity, im2col/col2im adjointness.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/kernels/im2col.h"

namespace pim::kernels {
namespace {

std::vector<float> RandomVector(int64_t n, uint64_t key) {
  CounterRng rng(key);
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 2.0f * rng.Uniform(i) - 1.0f;
  return v;
}

struct GemmCase {
  Trans ta, tb;
  int64_t m, n, k;
  int64_t pad_a, pad_b, pad_c;  // leading dimension minus the stored row length
  float alpha, beta;
};

// Buffers for one case: A, B stored as op() says, with padded leading dimensions.
struct GemmBuffers {
  std::vector<float> a, b, c;
  GemmArgs args;
};

GemmBuffers MakeBuffers(const GemmCase& t, uint64_t key) {
  GemmBuffers buf;
  const int64_t a_rows = t.ta == Trans::kNo ? t.m : t.k, a_cols = t.ta == Trans::kNo ? t.k : t.m;
  const int64_t b_rows = t.tb == Trans::kNo ? t.k : t.n, b_cols = t.tb == Trans::kNo ? t.n : t.k;
  const int64_t lda = a_cols + t.pad_a, ldb = b_cols + t.pad_b, ldc = t.n + t.pad_c;
  buf.a = RandomVector(a_rows * lda, key);
  buf.b = RandomVector(b_rows * ldb, key + 1);
  buf.c = RandomVector(t.m * ldc, key + 2);
  buf.args = {t.ta, t.tb,         t.m, t.n,    t.k,          t.alpha, buf.a.data(),
              lda,  buf.b.data(), ldb, t.beta, buf.c.data(), ldc};
  return buf;
}

TEST(GemmTest, FastMatchesReferenceForAllTransposesAlphaBetaAndStrides) {
  ThreadPool pool(2);
  CounterRng rng(42);
  int cases = 0;
  for (Trans ta : {Trans::kNo, Trans::kYes}) {
    for (Trans tb : {Trans::kNo, Trans::kYes}) {
      for (int r = 0; r < 12; ++r, ++cases) {
        GemmCase t{ta,
                   tb,
                   1 + static_cast<int64_t>(rng.Below(3 * cases, 150)),
                   1 + static_cast<int64_t>(rng.Below(3 * cases + 1, 150)),
                   1 + static_cast<int64_t>(rng.Below(3 * cases + 2, 300)),
                   r % 3,
                   (r / 3) % 2 * 5,
                   r % 2 * 3,
                   r % 4 == 0 ? 1.0f : 0.75f,
                   r % 3 == 0 ? 0.0f : (r % 3 == 1 ? 1.0f : -0.5f)};
        GemmBuffers ref = MakeBuffers(t, 100 + cases);
        GemmBuffers fast = MakeBuffers(t, 100 + cases);
        if (t.beta == 0.0f) {
          // beta == 0 must not read C: poison it.
          for (auto& v : fast.c) v = std::numeric_limits<float>::quiet_NaN();
        }
        // |error| <= k * eps * sum_p |a_ip b_pj| bounds any summation order; plus beta's term.
        std::vector<float> c0 = ref.c;
        ref::Gemm(ref.args);
        fast::Gemm(fast.args, &pool);
        for (int64_t i = 0; i < t.m; ++i) {
          for (int64_t j = 0; j < t.n + t.pad_c; ++j) {
            const int64_t idx = i * ref.args.ldc + j;
            if (j >= t.n) {  // padding columns of C are untouched
              EXPECT_EQ(ref.c[idx], c0[idx]);
              if (t.beta != 0.0f) {
                EXPECT_EQ(fast.c[idx], c0[idx]);
              }
              continue;
            }
            double abs_sum = std::abs(t.beta * c0[idx]);
            for (int64_t p = 0; p < t.k; ++p) {
              float a =
                  ta == Trans::kNo ? ref.a[i * ref.args.lda + p] : ref.a[p * ref.args.lda + i];
              float b =
                  tb == Trans::kNo ? ref.b[p * ref.args.ldb + j] : ref.b[j * ref.args.ldb + p];
              abs_sum += std::abs(t.alpha * a * b);
            }
            const double tol = (t.k + 2) * 1.2e-7 * abs_sum + 1e-30;
            ASSERT_NEAR(fast.c[idx], ref.c[idx], tol)
                << "case " << cases << " m=" << t.m << " n=" << t.n << " k=" << t.k << " at (" << i
                << ", " << j << ")";
          }
        }
      }
    }
  }
}

TEST(GemmTest, ReferenceIsTheDefinition) {
  // 2x3 times 3x2 by hand: [[1,2,3],[4,5,6]] * [[1,0],[0,1],[1,1]] = [[4,5],[10,11]].
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {1, 0, 0, 1, 1, 1}, c = {1, 1, 1, 1};
  ref::Gemm({Trans::kNo, Trans::kNo, 2, 2, 3, 2.0f, a.data(), 3, b.data(), 2, 1.0f, c.data(), 2});
  EXPECT_EQ(c, (std::vector<float>{9, 11, 21, 23}));
}

TEST(GemmTest, FastIsBitIdenticalAtOneTwoAndThreeThreadsOnAwkwardShapes) {
  ThreadPool one(1), two(2), three(3);
  const int64_t shapes[][3] = {{64, 256, 784},   {64, 784, 256},  {784, 256, 64}, {97, 61, 173},
                               {5, 1000, 333},   {1000, 5, 333},  {17, 33, 999},  {12544, 32, 400},
                               {400, 32, 12544}, {25, 16, 50176}, {33, 17, 1},    {129, 129, 129},
                               {37, 500, 200},   {64, 10, 128},   {3000, 7, 9},   {61, 2000, 1}};
  int idx = 0;
  for (const auto& s : shapes) {
    for (Trans ta : {Trans::kNo, Trans::kYes}) {
      for (Trans tb : {Trans::kNo, Trans::kYes}) {
        GemmCase t{ta, tb, s[0], s[1], s[2], 1, 0, 2, 1.0f, (idx % 2) ? 0.5f : 0.0f};
        GemmBuffers x = MakeBuffers(t, 7000 + idx), y = MakeBuffers(t, 7000 + idx),
                    z = MakeBuffers(t, 7000 + idx);
        fast::Gemm(x.args, &one);
        fast::Gemm(y.args, &two);
        fast::Gemm(z.args, &three);
        ASSERT_EQ(x.c, y.c) << "m=" << t.m << " n=" << t.n << " k=" << t.k;
        ASSERT_EQ(x.c, z.c) << "m=" << t.m << " n=" << t.n << " k=" << t.k;
        ++idx;
      }
    }
  }
}

TEST(GemmTest, FastHandlesEmptyReduction) {
  std::vector<float> c = {1, 2, 3, 4};
  fast::Gemm({Trans::kNo, Trans::kNo, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2},
             nullptr);
  EXPECT_EQ(c, (std::vector<float>{0.5f, 1, 1.5f, 2}));
}

// {n, h, w, c, kh, kw, stride, pad}: odd sizes, strides that skip pixels, padding wider than
// some windows reach.
const ConvGeometry kGeometries[] = {{2, 5, 6, 3, 3, 3, 1, 1}, {1, 7, 7, 2, 3, 3, 2, 0},
                                    {2, 8, 5, 1, 5, 5, 1, 2}, {3, 6, 6, 4, 2, 2, 2, 0},
                                    {1, 4, 4, 3, 3, 3, 3, 2}, {2, 9, 7, 2, 4, 3, 2, 1},
                                    {1, 3, 3, 1, 5, 5, 1, 2}, {4, 28, 28, 1, 5, 5, 1, 2}};

TEST(Im2colTest, MatchesTheDefinition) {
  for (const ConvGeometry& g : kGeometries) {
    std::vector<float> x = RandomVector(g.n * g.h * g.w * g.c, 3);
    std::vector<float> cols(g.n * g.rows_per_image() * g.col_width(), -7.0f);
    Im2col(g, x.data(), cols.data(), nullptr);
    int64_t r = 0;
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t oh = 0; oh < g.out_h(); ++oh)
        for (int64_t ow = 0; ow < g.out_w(); ++ow, ++r)
          for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j)
              for (int64_t ch = 0; ch < g.c; ++ch) {
                int64_t ih = oh * g.stride - g.pad + i, iw = ow * g.stride - g.pad + j;
                float want = (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w)
                                 ? 0.0f
                                 : x[((n * g.h + ih) * g.w + iw) * g.c + ch];
                ASSERT_EQ(cols[r * g.col_width() + (i * g.kw + j) * g.c + ch], want);
              }
  }
}

// Any block of columns, images [n0, n1) alone: those columns of Im2col's rows, bit for bit.
TEST(Im2colTest, ColumnBlocksAreTheColumnsOfIm2col) {
  for (const ConvGeometry& g : kGeometries) {
    std::vector<float> x = RandomVector(g.n * g.h * g.w * g.c, 4);
    const int64_t width = g.col_width(), rpi = g.rows_per_image();
    std::vector<float> cols(g.n * rpi * width);
    Im2col(g, x.data(), cols.data(), nullptr);
    const int64_t n0 = g.n > 1 ? 1 : 0, n1 = g.n;
    for (int64_t c0 : {int64_t{0}, int64_t{1}, width / 3, width - 1}) {
      for (int64_t c1 : {c0 + 1, (c0 + width + 1) / 2, width}) {
        if (c1 <= c0 || c1 > width) continue;
        const int64_t b = c1 - c0;
        std::vector<float> block((n1 - n0) * rpi * b, -7.0f);
        Im2colImagesColumns(g, x.data(), block.data(), n0, n1, c0, c1);
        for (int64_t r = 0; r < (n1 - n0) * rpi; ++r) {
          for (int64_t j = 0; j < b; ++j) {
            ASSERT_EQ(block[r * b + j], cols[(n0 * rpi + r) * width + c0 + j])
                << "columns [" << c0 << ", " << c1 << ") row " << r;
          }
        }
      }
    }
  }
}

TEST(Im2colTest, Col2imIsTheAdjointOfIm2col) {
  ThreadPool pool(2);
  for (const ConvGeometry& g : kGeometries) {
    const int64_t xn = g.n * g.h * g.w * g.c, cn = g.n * g.rows_per_image() * g.col_width();
    std::vector<float> a = RandomVector(cn, 11), b = RandomVector(xn, 12);
    std::vector<float> col2im_a(xn), im2col_b(cn);
    Col2im(g, a.data(), col2im_a.data(), &pool);
    Im2col(g, b.data(), im2col_b.data(), &pool);
    double lhs = 0, rhs = 0, scale = 0;
    for (int64_t i = 0; i < xn; ++i) lhs += static_cast<double>(col2im_a[i]) * b[i];
    for (int64_t i = 0; i < cn; ++i) {
      rhs += static_cast<double>(a[i]) * im2col_b[i];
      scale += std::abs(static_cast<double>(a[i]) * im2col_b[i]);
    }
    EXPECT_NEAR(lhs, rhs, 1e-5 * scale + 1e-6);
  }
}

TEST(Im2colTest, Col2imIsBitIdenticalAtOneAndTwoThreads) {
  ThreadPool one(1), two(2);
  for (const ConvGeometry& g : kGeometries) {
    const int64_t xn = g.n * g.h * g.w * g.c, cn = g.n * g.rows_per_image() * g.col_width();
    std::vector<float> a = RandomVector(cn, 21), x1(xn, 5.0f), x2(xn, -5.0f);
    Col2im(g, a.data(), x1.data(), &one);
    Col2im(g, a.data(), x2.data(), &two);
    EXPECT_EQ(x1, x2);
  }
}

}  // namespace
}  // namespace pim::kernels
