// Reference GEMM: the triple loop of the definition, C = alpha * op(A) op(B) + beta * C.
#include "pimtrain/kernels/gemm.h"

namespace pim::kernels::ref {

// C[i][j] = alpha * sum_p op(A)[i][p] * op(B)[p][j] + beta * C[i][j], the sum accumulated in
// float in increasing p (the reference of the definition, not of any blocking). As in BLAS,
// beta == 0 means C is not read (it may hold garbage or NaN).
void Gemm(const GemmArgs& g) {
  const bool ta = g.trans_a == Trans::kYes;
  const bool tb = g.trans_b == Trans::kYes;
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < g.k; ++p) {
        const float a = ta ? g.a[p * g.lda + i] : g.a[i * g.lda + p];
        const float b = tb ? g.b[j * g.ldb + p] : g.b[p * g.ldb + j];
        acc += a * b;
      }
      float& c = g.c[i * g.ldc + j];
      c = g.beta == 0.0f ? g.alpha * acc : g.alpha * acc + g.beta * c;
    }
  }
}

}  // namespace pim::kernels::ref
