// `stochastic_pulses` update (aihwkit's stochastic-compressed pulsed update, spec section 1):
// each sample of the batch is one update cycle. Rows (inputs) fire with p_r = B |x_r| and
// columns (outputs) with q_c = A |d_c| in each of BL slots; every coincidence is one pulse on
// cell (r, c) with sign(lr x_r d_c) > 0 = down, so E[n_rc] = lr |x_r d_c| / epsilon <= BL.
// update_bl_management and update_management set BL, A and B from the sample's max |x|, |d|.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "pimtrain/base/error.h"
#include "pimtrain/base/philox_simd.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/update.h"
#include "pimtrain/kernels/analog.h"
#include "pimtrain/numerics/adc.h"

namespace pim {
namespace {
class StochasticPulses final : public UpdateRule {
 public:
  explicit StochasticPulses(const ConfigNode& p)
      : desired_bl_(static_cast<int>(p.GetInt("desired_bl"))),
        fixed_bl_(p.GetBool("fixed_bl")),
        um_(p.GetBool("update_management")),
        ublm_(p.GetBool("update_bl_management")),
        grad_scale_(p.GetDouble("um_grad_scale")),
        res_(p.GetDouble("res")) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("desired_bl").Default(31).Range(1, 64).Unit("slots").Doc(
        "bit-stream length BL (pulse slots per update cycle)"));
    s.Add(Param::Bool("fixed_bl").Default(true).Doc(
        "keep BL (false, without UBLM: BL = ceil(lr/epsilon) when desired_bl epsilon < lr)"));
    s.Add(Param::Bool("update_management").Default(true).Doc(
        "balance the row and column probabilities by sqrt(max|x|/max|d|) (UM)"));
    s.Add(Param::Bool("update_bl_management").Default(true).Doc(
        "BL = min(ceil(lr max|x| max|d| / epsilon), desired_bl) per cycle (UBLM; forces UM)"));
    s.Add(Param::Float("um_grad_scale").Default(1.0).Range(1e-6, 1e6).Doc(
        "scale of max|d| in the UBLM estimate"));
    s.Add(Param::Float("res").Default(0.0).Range(0, 1).Doc(
        "resolution of the line probabilities (0: continuous; 2^-16 at the finest)"));
    return s;
  }
  int max_pulses() const override { return desired_bl_; }

  void Apply(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
             const UpdateContext& ctx, uint64_t tag, ActionCounts& counts) const override {
    const int64_t m = x.rows, rows = a.rows(), cols = a.cols();
    const double eps = a.granularity(), lam = std::fabs(lr);
    if (lam == 0) return;
    const float lsign = lr > 0 ? 1.0f : -1.0f;
    const uint64_t key = MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                                static_cast<uint64_t>(ctx.step), MixKey(tag, 0x7370));
    // Per sample: the line masks (rows then columns), BL, the active columns.
    const int64_t lines = rows + cols;
    row_masks_.resize(static_cast<size_t>(m * rows));  // written for every cycle with na > 0
    col_masks_.resize(static_cast<size_t>(m * cols));
    col_pos_.resize(static_cast<size_t>(m * cols));
    fire_rows_.resize(static_cast<size_t>(m * rows));
    row_pos_.resize(static_cast<size_t>(m * rows));
    n_fire_.assign(static_cast<size_t>(m), 0);
    active_.resize(static_cast<size_t>(m * cols));
    n_active_.assign(static_cast<size_t>(m), 0);
    std::vector<int> bls(static_cast<size_t>(m), 0);
    ThreadPool& pool = ctx.pool != nullptr ? *ctx.pool : DefaultPool();
    pool.ParallelFor(m, 1, [&](int64_t s0, int64_t s1) {
      thread_local std::vector<uint32_t> uni, thr;
      for (int64_t s = s0; s < s1; ++s) {
        const float* xs = x.Row(s);
        const float* ds = d.Row(s);
        double xm = 0, dm = 0;
        for (int64_t r = 0; r < rows; ++r) xm = std::max(xm, double{std::fabs(xs[r])});
        for (int64_t c = 0; c < cols; ++c) dm = std::max(dm, double{std::fabs(ds[c])});
        if (xm == 0 || dm == 0) continue;
        int bl = desired_bl_;
        double k = lam * xm * grad_scale_ * dm / eps;
        if (!fixed_bl_ && !ublm_ && eps * desired_bl_ < lam) {
          bl = std::min(64, static_cast<int>(std::ceil(lam / eps)));
        }
        if (ublm_) bl = std::clamp(static_cast<int>(std::ceil(k)), 1, desired_bl_);
        double ab = std::sqrt(lam / (eps * bl));
        double a_scale = ab, b_scale = ab;
        if (!fixed_bl_ && !ublm_ && eps * desired_bl_ < lam) a_scale = b_scale = 1;
        if (um_ || ublm_) {
          double dmu = dm;
          if (k > desired_bl_) dmu *= desired_bl_ / k;
          a_scale *= std::sqrt(xm / dmu);
          b_scale *= std::sqrt(dmu / xm);
        }
        bls[s] = bl;
        // Thresholds of the lines, then their masks: line l fires in slot t when
        // NoiseUniform16(key, s, t * lines + l) < threshold_l.
        thr.resize(static_cast<size_t>(lines));
        Thresholds(xs, rows, static_cast<float>(b_scale), thr.data());
        Thresholds(ds, cols, static_cast<float>(a_scale), thr.data() + rows);
        uni.resize(static_cast<size_t>(bl * lines));
        kernels::fast::FillUniforms(key, static_cast<uint64_t>(s), 0, bl * lines, uni.data());
        uint64_t* rm = row_masks_.data() + s * rows;
        uint64_t* cm = col_masks_.data() + s * cols;
        Masks(uni.data(), thr.data(), rows, lines, bl, rm);
        Masks(uni.data() + rows, thr.data() + rows, cols, lines, bl, cm);
        // The firing lines in compact lists: columns (index, mask, d_c > 0), rows (index, mask,
        // lr x_r > 0), in increasing order.
        int32_t* act = active_.data() + s * cols;
        uint64_t* amask = col_masks_.data() + s * cols;  // compacted over cm in place
        uint8_t* pos = col_pos_.data() + s * cols;
        int32_t na = 0;
        for (int64_t c = 0; c < cols; ++c) {
          if (cm[c] != 0) {
            pos[na] = ds[c] > 0;
            amask[na] = cm[c];
            act[na++] = static_cast<int32_t>(c);
          }
        }
        n_active_[s] = na;
        int32_t* fr = fire_rows_.data() + s * rows;
        uint8_t* rpos = row_pos_.data() + s * rows;
        int32_t nf = 0;
        for (int64_t r = 0; r < rows; ++r) {
          if (rm[r] != 0) {
            rpos[nf] = xs[r] * lsign > 0;
            rm[nf] = rm[r];
            fr[nf++] = static_cast<int32_t>(r);
          }
        }
        n_fire_[s] = nf;
      }
    });
    // Pulses: cells are independent, so rows run in parallel; each cell sees its cycles in
    // order (aihwkit's sequential update cycles). The events of a block of kBlockRows rows over
    // all cycles (cycle-major, so each cell's pulses stay in cycle order) go to the device as one
    // batch, which keeps those rows' device parameters in cache across the cycles; their
    // cycle-to-cycle normals are drawn first in vector lanes: pulse p of cell i in cycle s is
    // NoiseNormal(key, m + s, PulseNormalIndex(i, p)). sign(lr x_r d_c) > 0 is a down pulse.
    const Device& dev = a.device();
    const int normals = dev.drawn_normals();
    const uint64_t size8 = (static_cast<uint64_t>(a.size()) + 7) & ~uint64_t{7};
    PIM_CHECK_MSG(size8 < (uint64_t{1} << 32) && 2 * static_cast<uint64_t>(m) < (uint64_t{1} << 32),
                  "stochastic_pulses: array or batch too large for 32-bit pulse counters");
    std::vector<int64_t> pulses(static_cast<size_t>(rows), 0), cells(pulses.size(), 0);
    const uint32_t cols32 = static_cast<uint32_t>(cols);
    pool.ParallelFor(rows, 4, [&](int64_t r0, int64_t r1) {
      thread_local Events ev;
      thread_local std::vector<int32_t> cursor;
      int64_t np = 0, nc = 0;
      // cursor[s]: the first of cycle s's firing rows at or after the current block
      cursor.resize(static_cast<size_t>(m));
      for (int64_t s = 0; s < m; ++s) {
        const int32_t* fr = fire_rows_.data() + s * rows;
        cursor[s] = static_cast<int32_t>(
            std::lower_bound(fr, fr + n_fire_[s], static_cast<int32_t>(r0)) - fr);
      }
      for (int64_t b0 = r0; b0 < r1; b0 += kBlockRows) {
        const int32_t b1 = static_cast<int32_t>(std::min(r1, b0 + kBlockRows));
        if (b1 < r1) a.Prefetch(b1 * cols, std::min(r1, b1 + kBlockRows) * cols);
        ev.clear();
        int most = 0;
        for (int64_t s = 0; s < m; ++s) {
          const int32_t na = n_active_[s];
          const int32_t* fr = fire_rows_.data() + s * rows;
          int32_t f = cursor[s];
          const int32_t nf = n_fire_[s];
          if (na == 0 || f >= nf || fr[f] >= b1) continue;
          const uint64_t* rm = row_masks_.data() + s * rows;
          const uint8_t* rpos = row_pos_.data() + s * rows;
          const uint64_t* amask = col_masks_.data() + s * cols;
          const int32_t* act = active_.data() + s * cols;
          const uint8_t* pos = col_pos_.data() + s * cols;
          const uint32_t stream = static_cast<uint32_t>(m + s);
          for (; f < nf && fr[f] < b1; ++f) {
            ev.Reserve(na);
            const RowPulses rp = EmitRow(rm[f], static_cast<uint32_t>(fr[f]) * cols32, rpos[f],
                                         amask, act, pos, na, stream, ev);
            most = std::max(most, rp.most);
            np += rp.pulses;
          }
          cursor[s] = f;
        }
        const int64_t count = ev.size();
        if (count == 0) continue;
        nc += count;
        // Cell-major: the block's events stably sorted by cell, so a cell's pulses of all
        // cycles are consecutive (still in cycle order) and are applied as one chain; no two
        // events of different cells wait on each other's stores.
        ev.SortByCell(static_cast<uint32_t>(b0 * cols), static_cast<uint32_t>((b1 - b0) * cols));
        if (normals < 0) {  // the model draws its own noise
          for (int64_t e = 0; e < count; ++e) {
            const int64_t i = ev.cell[e];
            a.Pulse(i, ev.n[e], ev.dir[e], CounterRng(key, ev.stream[e]),
                    static_cast<uint64_t>(i) << 8);
          }
          continue;
        }
        Device::PulseBatch pb;
        pb.cell = ev.cell.data();
        pb.n = ev.n.data();
        pb.dir = ev.dir.data();
        pb.count = count;
        if (normals > 0) {
          DrawNormals(key, size8, ev, most);
          pb.xi = ev.xi.data();
        }
        a.PulseDrawn(pb, key, ev.stream.data());
      }
      pulses[r0] += np;
      cells[r0] += nc;
    });
    int64_t p = 0, c = 0, slots = 0;
    for (int64_t r = 0; r < rows; ++r) p += pulses[r], c += cells[r];
    for (int64_t s = 0; s < m; ++s) slots += bls[s];
    counts.Add(kCountDevicePulses, p);
    counts.Add(kCountCellsPulsed, c);
    counts.Add(kCountPulseSlots, slots);
  }

 private:
  static constexpr int64_t kBlockRows = 32;
  // The pulse events of one block of rows, and the words and normals drawn for them.
  struct Events {
    std::vector<uint32_t> cell;
    std::vector<uint8_t> n;
    std::vector<int8_t> dir;
    std::vector<uint32_t> stream, w0, w1, w2, w3;
    std::vector<float> xi;
    int64_t size_ = 0;
    void clear() { size_ = 0; }
    int64_t size() const { return size_; }
    // Room for k more events.
    void Reserve(int64_t k) {
      if (size_ + k <= static_cast<int64_t>(cell.size())) return;
      const size_t want = static_cast<size_t>(std::max<int64_t>(2 * (size_ + k), 1024));
      cell.resize(want);
      n.resize(want);
      dir.resize(want);
      stream.resize(want);
    }
    // Stable counting sort of the events by cell (cells in [base, base + span)).
    std::vector<uint32_t> bucket, cell2, stream2;
    std::vector<uint8_t> n2;
    std::vector<int8_t> dir2;
    void SortByCell(uint32_t base, uint32_t span) {
      bucket.assign(static_cast<size_t>(span) + 1, 0);
      cell2.resize(cell.size());
      stream2.resize(cell.size());
      n2.resize(cell.size());
      dir2.resize(cell.size());
      // Raw pointers: the byte arrays would otherwise make every store reload the vectors.
      uint32_t* const bk = bucket.data();
      const uint32_t* const c = cell.data();
      const uint32_t* const st = stream.data();
      const uint8_t* const nn = n.data();
      const int8_t* const dr = dir.data();
      uint32_t* const c2 = cell2.data();
      uint32_t* const st2 = stream2.data();
      uint8_t* const nn2 = n2.data();
      int8_t* const dr2 = dir2.data();
      const int64_t count = size_;
      for (int64_t e = 0; e < count; ++e) ++bk[c[e] - base + 1];
      for (uint32_t k = 0; k < span; ++k) bk[k + 1] += bk[k];
      for (int64_t e = 0; e < count; ++e) {
        const uint32_t to = bk[c[e] - base]++;
        c2[to] = c[e];
        st2[to] = st[e];
        nn2[to] = nn[e];
        dr2[to] = dr[e];
      }
      cell.swap(cell2);
      stream.swap(stream2);
      n.swap(n2);
      dir.swap(dir2);
    }
    void Push(uint32_t i, int k, int d, uint32_t st) {
      cell[size_] = i;
      n[size_] = static_cast<uint8_t>(k);
      dir[size_] = static_cast<int8_t>(d);
      stream[size_] = st;
      ++size_;
    }
  };

  // The pulses of firing row (mask mr, cells base + column, lr x_r > 0: rp) in one cycle: for
  // each active column j (mask amask[j], column act[j], d > 0: pos[j]) with
  // n = popcount(mr & amask[j]) > 0, the event (cell, n, rp == pos[j] ? down : up, stream),
  // appended in increasing j. Room for na events must be reserved.
  struct RowPulses {
    int most = 0;
    int64_t pulses = 0;
  };
  static RowPulses EmitRow(uint64_t mr, uint32_t base, uint8_t rp, const uint64_t* amask,
                           const int32_t* act, const uint8_t* pos, int32_t na, uint32_t stream,
                           Events& ev) {
    RowPulses out;
    int64_t size = ev.size_;
    uint32_t* cell = ev.cell.data();
    uint8_t* nn = ev.n.data();
    int8_t* dir = ev.dir.data();
    uint32_t* st = ev.stream.data();
    int32_t j = 0;
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__) && defined(__AVX512VBMI2__) && \
    defined(__AVX512VL__) && defined(__AVX512BW__)
    const __m512i vmr = _mm512_set1_epi64(static_cast<long long>(mr));
    const __m256i vbase = _mm256_set1_epi32(static_cast<int>(base));
    const __m256i vst = _mm256_set1_epi32(static_cast<int>(stream));
    const __m128i vrp = _mm_set1_epi8(static_cast<char>(rp));
    const __m128i one8 = _mm_set1_epi8(1), mone8 = _mm_set1_epi8(-1);
    __m512i vmost = _mm512_setzero_si512(), vsum = _mm512_setzero_si512();
    for (; j < na; j += 8) {
      const __mmask8 k = na - j >= 8 ? __mmask8{0xFF} : static_cast<__mmask8>((1u << (na - j)) - 1);
      const __m512i n = _mm512_popcnt_epi64(
          _mm512_and_si512(_mm512_maskz_loadu_epi64(k, amask + j), vmr));
      const __mmask8 nz = _mm512_test_epi64_mask(n, n);
      if (nz == 0) continue;
      const __m256i c = _mm256_add_epi32(vbase, _mm256_maskz_loadu_epi32(k, act + j));
      _mm256_mask_compressstoreu_epi32(cell + size, nz, c);
      _mm_mask_compressstoreu_epi8(nn + size, nz, _mm512_maskz_cvtepi64_epi8(0xFF, n));
      const __mmask16 same = _mm_cmpeq_epi8_mask(_mm_maskz_loadu_epi8(k, pos + j), vrp);
      _mm_mask_compressstoreu_epi8(dir + size, nz, _mm_mask_blend_epi8(same, one8, mone8));
      const int cnt = std::popcount(static_cast<unsigned>(nz));
      _mm256_mask_storeu_epi32(st + size, static_cast<__mmask8>((1u << cnt) - 1), vst);
      size += cnt;
      vmost = _mm512_maskz_max_epu64(0xFF, vmost, n);
      vsum = _mm512_add_epi64(vsum, n);
    }
    alignas(64) uint64_t lanes_most[8], lanes_sum[8];
    _mm512_store_si512(lanes_most, vmost);
    _mm512_store_si512(lanes_sum, vsum);
    for (int l = 0; l < 8; ++l) {
      out.most = std::max(out.most, static_cast<int>(lanes_most[l]));
      out.pulses += static_cast<int64_t>(lanes_sum[l]);
    }
#endif
    for (; j < na; ++j) {
      const int n = std::popcount(mr & amask[j]);
      if (n == 0) continue;
      cell[size] = base + static_cast<uint32_t>(act[j]);
      nn[size] = static_cast<uint8_t>(n);
      dir[size] = rp == pos[j] ? -1 : 1;
      st[size] = stream;
      ++size;
      out.most = std::max(out.most, n);
      out.pulses += n;
    }
    ev.size_ = size;
    return out;
  }

  // ev.xi[p * count + e] = NoiseNormal(key, stream_e, PulseNormalIndex(cell_e, p)) for p < n_e:
  // pulses p < 8 from the one Philox block of counter cell_e (vector lanes, one event each),
  // through the 16-bit table (refined tail cells and p >= 8 by the scalar definition).
  static void DrawNormals(uint64_t key, uint64_t size8, Events& ev, int most) {
    const int64_t count = ev.size();
    ev.w0.resize(count);
    ev.w1.resize(count);
    ev.w2.resize(count);
    ev.w3.resize(count);
    ev.xi.resize(static_cast<size_t>(most * count));
    PhiloxBlocks(key, 0, ev.cell.data(), nullptr, ev.stream.data(), count, ev.w0.data(),
                 ev.w1.data(), ev.w2.data(), ev.w3.data());
    const uint32_t* words[4] = {ev.w0.data(), ev.w1.data(), ev.w2.data(), ev.w3.data()};
    for (int p = 0; p < most; ++p) {
      float* xp = ev.xi.data() + p * count;
      if (p >= 8) {
        for (int64_t e = 0; e < count; ++e) {
          if (ev.n[e] > p) {
            xp[e] = NoiseNormal(key, ev.stream[e],
                                PulseNormalIndex(static_cast<uint64_t>(ev.cell[e]), p, size8));
          }
        }
        continue;
      }
      const uint32_t* wp = words[p & 3];
      const int shift = 16 * ((p >> 2) & 1);
      if (!Normals16(wp, shift, count, xp)) continue;
      for (int64_t e = 0; e < count; ++e) {  // the refined tail cells (2^-9 of the draws)
        const uint32_t h = (wp[e] >> shift) & 0xFFFFu;
        if (RefinedCell(h) && ev.n[e] > p) {
          xp[e] = GaussianRefined(
              h, NoiseRefineWord(key, ev.stream[e],
                                 PulseNormalIndex(static_cast<uint64_t>(ev.cell[e]), p, size8)));
        }
      }
    }
  }

  // NoiseNormal's index of pulse p (< 64) of cell i: Philox block i + size8 (p / 8), word p % 4,
  // half (p / 4) % 2 (numerics/adc.h's layout), so the first 8 pulses share one block.
  static uint64_t PulseNormalIndex(uint64_t i, int p, uint64_t size8) {
    const uint64_t b = i + size8 * static_cast<uint64_t>(p >> 3);
    return 64 * (b >> 3) + (b & 7) + 8 * static_cast<uint64_t>(p & 7);
  }

  // out[e] = GaussianFrom16(h_e), h_e = (words[e] >> shift) & 0xFFFF (the same float operations
  // as numerics/adc.cc: Acklam's central rational, the tail table outside it; 8 lanes at a
  // time). Returns whether any h_e is a refined cell (its value is then only the cell's label).
  static bool Normals16(const uint32_t* words, int shift, int64_t count, float* out) {
    const float* tail = GetGaussianTable().tail;
    int64_t e = 0;
    bool refined = false;
#if defined(__AVX2__)
    const __m256i m16 = _mm256_set1_epi32(0xFFFF);
    const __m256i lo_edge = _mm256_set1_epi32(static_cast<int>(kGaussTail));
    const __m256i hi_edge = _mm256_set1_epi32(static_cast<int>(65536 - kGaussTail) - 1);
    const __m256i rlo = _mm256_set1_epi32(static_cast<int>(kGaussRefine));
    const __m256i rhi = _mm256_set1_epi32(static_cast<int>(65536 - kGaussRefine) - 1);
    const __m256i hi_base = _mm256_set1_epi32(static_cast<int>(65536 - 2 * kGaussTail));
    const __m256 vhalf = _mm256_set1_ps(0.5f), vinv = _mm256_set1_ps(1.0f / 65536.0f);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    __m256i any_refined = _mm256_setzero_si256();
    for (; e + 8 <= count; e += 8) {
      const __m256i h = _mm256_and_si256(
          _mm256_srl_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + e)), sh),
          m16);
      const __m256 t = _mm256_sub_ps(
          _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(h), vhalf), vinv), vhalf);
      const __m256 r = _mm256_mul_ps(t, t);
      __m256 num = _mm256_set1_ps(kGaussA[0]), den = _mm256_set1_ps(kGaussB[0]);
      for (int i = 1; i < 6; ++i) {
        num = _mm256_add_ps(_mm256_mul_ps(num, r), _mm256_set1_ps(kGaussA[i]));
        den = _mm256_add_ps(_mm256_mul_ps(den, r), _mm256_set1_ps(i < 5 ? kGaussB[i] : 1.0f));
      }
      __m256 z = _mm256_div_ps(_mm256_mul_ps(t, num), den);
      const __m256i hi_tail = _mm256_cmpgt_epi32(h, hi_edge);
      const __m256i is_tail = _mm256_or_si256(_mm256_cmpgt_epi32(lo_edge, h), hi_tail);
      if (!_mm256_testz_si256(is_tail, is_tail)) {
        const __m256i idx = _mm256_sub_epi32(h, _mm256_and_si256(hi_tail, hi_base));
        z = _mm256_mask_i32gather_ps(z, tail, idx, _mm256_castsi256_ps(is_tail), 4);
        any_refined = _mm256_or_si256(
            any_refined, _mm256_or_si256(_mm256_cmpgt_epi32(rlo, h), _mm256_cmpgt_epi32(h, rhi)));
      }
      _mm256_storeu_ps(out + e, z);
    }
    refined = !_mm256_testz_si256(any_refined, any_refined);
#endif
    for (; e < count; ++e) {
      const uint32_t h = (words[e] >> shift) & 0xFFFFu;
      out[e] = GaussianFrom16(h);
      refined |= RefinedCell(h);
    }
    return refined;
  }

  // threshold_l = round(min(scale |v_l|, 1) 65536) (p resolved to 2^-16; `res` first).
  void Thresholds(const float* v, int64_t n, float scale, uint32_t* thr) const {
    if (res_ > 0) {
      for (int64_t j = 0; j < n; ++j) thr[j] = Threshold(double{scale} * std::fabs(v[j]));
      return;
    }
    for (int64_t j = 0; j < n; ++j) {
      const float p = std::min(scale * std::fabs(v[j]), 1.0f);
      thr[j] = static_cast<uint32_t>(static_cast<int32_t>(std::nearbyint(p * 65536.0f)));
    }
  }
  // mask_j bit t = (uni[t * stride + j] < thr_j), t < bl.
  static void Masks(const uint32_t* uni, const uint32_t* thr, int64_t n, int64_t stride, int bl,
                    uint64_t* mask) {
    for (int64_t j = 0; j < n; ++j) mask[j] = 0;
    for (int t = 0; t < bl; ++t) {
      const uint32_t* u = uni + t * stride;
      for (int64_t j = 0; j < n; ++j) mask[j] |= static_cast<uint64_t>(u[j] < thr[j]) << t;
    }
  }

  uint32_t Threshold(double p) const {
    p = std::min(p, 1.0);
    if (res_ > 0) p = std::nearbyint(p / res_) * res_;
    return static_cast<uint32_t>(std::nearbyint(std::min(p, 1.0) * 65536.0));
  }

  int desired_bl_;
  bool fixed_bl_, um_, ublm_;
  double grad_scale_, res_;
  // Scratch, reused across calls (a layer's macro owns its rule; calls are not concurrent).
  mutable std::vector<uint64_t> row_masks_, col_masks_;
  mutable std::vector<uint8_t> col_pos_, row_pos_;  // per firing line: d_c > 0, lr x_r > 0
  mutable std::vector<int32_t> fire_rows_, n_fire_;  // per cycle: the firing rows
  mutable std::vector<int32_t> active_, n_active_;
};

PIM_REGISTER(UpdateRule, StochasticPulses, "stochastic_pulses",
             "coincidences of row and column bit streams (aihwkit's pulsed update, UM, UBLM)");

}  // namespace
}  // namespace pim
