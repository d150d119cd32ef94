// Fast GEMM: oneDNN's sgemm, one single-threaded call per chunk of C. The chunks are fixed by the
// shape alone and threads take whole chunks, so the result is identical at any thread count.
#include "pimtrain/kernels/gemm.h"

#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "pimtrain/base/error.h"

namespace pim::kernels::fast {
namespace {

// oneDNN picks its kernel and blocking by the call's size, so the last bits of an element depend
// on which rows and columns share its call (splits at 8 or 32 rows change them; measured with
// oneDNN 2.6.3 on AVX2). A split by thread count would therefore change results. Instead C is cut
// into chunks that depend only on (m, n, k) and every chunk is one call, whatever the threads.
//
// Below this many multiply-accumulates a chunk is not split further: each chunk packs the shared
// operand again and misses in cache where one call would not, so a split costs the one-thread
// run ~10 % on the MLP's shapes (measured with cold caches: 64 x 256 x 784 runs at 54 GFLOP/s
// in one call, 49 in two column halves, 46 in four quarters).
constexpr int64_t kMinMacsPerChunk = int64_t{1} << 22;
// At most this many chunks (a power of two, so that 1, 2, 4 or 8 threads share them evenly).
constexpr int64_t kMaxChunks = 8;
// Chunk edges fall on multiples of 16 (two AVX2 vectors), and chunks are at least this wide or
// tall; narrower calls fall off oneDNN's fast paths (16-row chunks of a 64-row product ran at
// ~75 % of one call).
constexpr int64_t kAlign = 16;
constexpr int64_t kMinCols = 64;
constexpr int64_t kMinRows = 32;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// The chunks of C: `count` blocks of `size` columns (by_cols) or rows, the last one shorter.
struct Chunks {
  bool by_cols = false;
  int64_t size = 0;
  int64_t count = 1;
};

Chunks ChunksOf(const GemmArgs& g) {
  const int64_t macs = g.m * g.n * g.k;
  int64_t q = 1;
  while (q < kMaxChunks && macs / (2 * q) >= kMinMacsPerChunk) q *= 2;
  for (; q > 1; q /= 2) {
    // Prefer columns: a column chunk re-reads only op(A), usually the smaller operand here.
    if (g.n / q >= kMinCols) {
      const int64_t w = RoundUp(CeilDiv(g.n, q), kAlign);
      return {true, w, CeilDiv(g.n, w)};
    }
    if (g.m / q >= kMinRows) {
      const int64_t h = RoundUp(CeilDiv(g.m, q), kAlign);
      return {false, h, CeilDiv(g.m, h)};
    }
  }
  return {false, g.m, 1};
}

// oneDNN threads with OpenMP; each of our threads calls it single-threaded (set once per thread,
// since the OpenMP thread count is a per-thread setting).
void SingleThreadedOneDnn() {
  thread_local bool done = false;
  if (!done) {
    omp_set_num_threads(1);
    done = true;
  }
}

// Rows [r0, r1) x columns [c0, c1) of C, one sgemm over the full K.
void Block(const GemmArgs& g, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const bool ta = g.trans_a == Trans::kYes, tb = g.trans_b == Trans::kYes;
  const float* a = ta ? g.a + r0 : g.a + r0 * g.lda;
  const float* b = tb ? g.b + c0 * g.ldb : g.b + c0;
  SingleThreadedOneDnn();
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', r1 - r0, c1 - c0, g.k,
                                      g.alpha, a, g.lda, b, g.ldb, g.beta,
                                      g.c + r0 * g.ldc + c0, g.ldc);
  PIM_CHECK_MSG(st == dnnl_success, "dnnl_sgemm failed with status " + std::to_string(st));
}

}  // namespace

void Gemm(const GemmArgs& g, ThreadPool* pool) {
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0) {
    // op(A) op(B) is empty: C = beta * C (BLAS semantics; beta == 0 does not read C).
    for (int64_t i = 0; i < g.m; ++i) {
      float* c = g.c + i * g.ldc;
      for (int64_t j = 0; j < g.n; ++j) c[j] = g.beta == 0.0f ? 0.0f : g.beta * c[j];
    }
    return;
  }
  PIM_CHECK(g.lda >= (g.trans_a == Trans::kNo ? g.k : g.m));
  PIM_CHECK(g.ldb >= (g.trans_b == Trans::kNo ? g.n : g.k));
  PIM_CHECK(g.ldc >= g.n);
  const Chunks ch = ChunksOf(g);
  if (ch.count == 1) {
    Block(g, 0, g.m, 0, g.n);
    return;
  }
  if (pool == nullptr) pool = &DefaultPool();
  pool->ParallelFor(ch.count, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t lo = q * ch.size;
      if (ch.by_cols) {
        Block(g, 0, g.m, lo, std::min(g.n, lo + ch.size));
      } else {
        Block(g, lo, std::min(g.m, lo + ch.size), 0, g.n);
      }
    }
  });
}

void WarmUpGemm(ThreadPool* pool) {
  constexpr int64_t kN = 32;
  auto products = [] {
    std::vector<float> a(kN * kN, 1.0f), b(kN * kN, 1.0f), c(kN * kN, 0.0f);
    for (const Trans ta : {Trans::kNo, Trans::kYes}) {
      for (const Trans tb : {Trans::kNo, Trans::kYes}) {
        GemmArgs g;
        g.trans_a = ta;
        g.trans_b = tb;
        g.m = g.n = g.k = kN;
        g.a = a.data();
        g.b = b.data();
        g.c = c.data();
        g.lda = g.ldb = g.ldc = kN;
        Block(g, 0, kN, 0, kN);
      }
    }
  };
  products();
  if (pool != nullptr && pool->num_threads() > 1) {
    pool->ParallelFor(pool->num_threads(), 1, [&](int64_t, int64_t) { products(); });
  }
}

}  // namespace pim::kernels::fast
