// Fast GEMM: OpenBLAS sgemm (single-threaded) on blocks of C split across our own thread pool.
#include "pimtrain/kernels/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <mutex>

#include "pimtrain/base/error.h"

namespace pim::kernels::fast {
namespace {

// Chunk boundaries fall on multiples of this many rows of C. OpenBLAS (row-major call = its
// column-major C^T) tiles our rows by its register block and computes leftover rows with
// narrower kernels that round differently, so a chunk starting off a tile boundary changes the
// last bits of its rows (measured with OpenBLAS 0.3.21's Zen kernel: splits at multiples of 12
// keep every bit, at 16 or 32 they do not). Splitting columns is worse: the tiling along them
// depends on the call's width (no alignment kept the bits), so we never split columns.
// kernels_test checks the bit-identity on awkward shapes; a CPU whose kernel tiles by another
// block would fail it there.
constexpr int64_t kRowAlign = 12;
// Below this many multiply-accumulates per chunk, waking a worker costs more than it saves.
constexpr int64_t kMinMacsPerChunk = int64_t{1} << 20;
// Each chunk packs all of op(B) again; with fewer rows than this the repacking outweighs the
// second core (measured on the 25-row weight gradient of a 5x5 conv on one channel).
constexpr int64_t kMinRowsPerChunk = 32;

void DisableOpenBlasThreads() {
  // We parallelize over independent blocks of C ourselves; OpenBLAS's own threads would split
  // in ways that depend on its thread count and would oversubscribe the cores.
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

CBLAS_TRANSPOSE ToCblas(Trans t) { return t == Trans::kYes ? CblasTrans : CblasNoTrans; }

// Rows [r0, r1) of C, one sgemm over the full K.
void Rows(const GemmArgs& g, int64_t r0, int64_t r1) {
  const float* a = g.trans_a == Trans::kNo ? g.a + r0 * g.lda : g.a + r0;
  cblas_sgemm(CblasRowMajor, ToCblas(g.trans_a), ToCblas(g.trans_b), static_cast<int>(r1 - r0),
              static_cast<int>(g.n), static_cast<int>(g.k), g.alpha, a, static_cast<int>(g.lda),
              g.b, static_cast<int>(g.ldb), g.beta, g.c + r0 * g.ldc, static_cast<int>(g.ldc));
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
  DisableOpenBlasThreads();
  if (pool == nullptr) pool = &DefaultPool();
  // Split C into row blocks; each chunk is one sgemm over the whole reduction, so every element
  // is summed exactly as in a one-thread run.
  const int64_t blocks = (g.m + kRowAlign - 1) / kRowAlign;
  const int64_t macs_per_block = kRowAlign * g.n * g.k;
  const int64_t grain = std::max({int64_t{1}, kMinMacsPerChunk / macs_per_block,
                                  (kMinRowsPerChunk + kRowAlign - 1) / kRowAlign});
  pool->ParallelFor(blocks, grain, [&](int64_t b0, int64_t b1) {
    Rows(g, b0 * kRowAlign, std::min(g.m, b1 * kRowAlign));
  });
}

}  // namespace pim::kernels::fast
