// Update role helpers: signed pulse counts into an array, the digital outer-product gradient.
#include "pimtrain/device/update.h"

#include <cstdlib>

#include "pimtrain/device/unit_cell.h"
#include "pimtrain/kernels/gemm.h"

namespace pim {

void ApplyPulseCounts(DeviceArray& a, const int32_t* n, const UpdateContext& ctx, uint64_t tag,
                      ActionCounts& counts) {
  const uint64_t key = MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                              static_cast<uint64_t>(ctx.step), MixKey(tag, 0x7075));
  const CounterRng rng(key, 0);
  const int64_t rows = a.rows(), cols = a.cols();
  std::vector<int64_t> pulses(static_cast<size_t>(rows), 0), cells(pulses.size(), 0);
  ThreadPool& pool = ctx.pool != nullptr ? *ctx.pool : DefaultPool();
  pool.ParallelFor(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, cols)),
                   [&](int64_t r0, int64_t r1) {
                     for (int64_t r = r0; r < r1; ++r) {
                       for (int64_t c = 0; c < cols; ++c) {
                         const int64_t i = r * cols + c;
                         const int32_t k = n[i];
                         if (k == 0) continue;
                         a.Pulse(i, std::abs(k), k > 0 ? 1 : -1, rng,
                                 static_cast<uint64_t>(i) << 24);
                         pulses[r] += std::abs(k);
                         ++cells[r];
                       }
                     }
                   });
  int64_t p = 0, c = 0, most = 0;
  for (int64_t r = 0; r < rows; ++r) p += pulses[r], c += cells[r];
  for (int64_t i = 0; i < rows * cols; ++i) most = std::max<int64_t>(most, std::abs(n[i]));
  counts.Add(kCountDevicePulses, p);
  counts.Add(kCountCellsPulsed, c);
  counts.Add(kCountPulseSlots, most);  // all cells pulse in parallel, one pulse per slot
  TakeUnitCellCounts(a, counts);        // a unit cell's refreshes (unit_cell.h)
}

void OuterGradient(ConstMatrixView x, ConstMatrixView d, std::vector<float>& dw,
                   ThreadPool* pool) {
  dw.assign(static_cast<size_t>(x.cols * d.cols), 0.0f);
  kernels::GemmArgs g;
  g.trans_a = kernels::Trans::kYes;
  g.m = x.cols;
  g.n = d.cols;
  g.k = x.rows;
  g.a = x.data;
  g.lda = x.ld;
  g.b = d.data;
  g.ldb = d.ld;
  g.c = dw.data();
  g.ldc = d.cols;
  kernels::fast::Gemm(g, pool);
}

}  // namespace pim
