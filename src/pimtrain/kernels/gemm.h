// GEMM kernels: C = alpha * op(A) op(B) + beta * C on row-major float matrices.
// ref: the triple loop of the definition; fast: OpenBLAS sgemm, split over output rows or
// columns (never over the reduction), so results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "pimtrain/base/parallel.h"

namespace pim::kernels {

enum class Trans { kNo, kYes };

// Row-major: op(A) is M x K, op(B) is K x N, C is M x N. lda/ldb/ldc are row strides.
struct GemmArgs {
  Trans trans_a = Trans::kNo;
  Trans trans_b = Trans::kNo;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float beta = 0.0f;
  float* c = nullptr;
  int64_t ldc = 0;
};

namespace ref {
void Gemm(const GemmArgs& args);
}  // namespace ref

namespace fast {
void Gemm(const GemmArgs& args, ThreadPool* pool);
// Does oneDNN's one-time set-up (its JIT kernels and each thread's OpenMP setting, ~40 ms on
// this VM, measured at the first GEMM of a run) now, by small products of every transposition
// on the calling thread and on pool's threads (pool may be null), so that it lands before a
// timed loop instead of inside its first step. Computes nothing that is kept.
void WarmUpGemm(ThreadPool* pool);
}  // namespace fast

}  // namespace pim::kernels
