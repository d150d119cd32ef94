// The aihwkit-style read path (spec section 3): y = s r_bm ADC(W DAC(x / (s r_bm)) + noise).
// Two drivers over the same element arithmetic: AnalogReadRef (the definition: one element at a
// time, one NoiseNormal call per draw) and AnalogRead (the DAC, the NM scale and the output stage
// in whole vectors, the output noise drawn 64 normals per 8 Philox blocks by FillNormals, scratch
// reused between calls). Every step is one IEEE float operation in both, so they agree bit for
// bit (tests/devices_test.cc) at any thread count.
#include "pimtrain/device/io.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "pimtrain/kernels/analog.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/numerics/adc.h"

namespace pim {

std::shared_ptr<Schema> IoSchema() {
  auto s = std::make_shared<Schema>();
  s->Add(Param::Enum("noise_management", {"abs_max", "none"}).Default("abs_max").Doc(
      "1. input scale s = max|x| per sample (abs_max) or 1 (none)"));
  s->Add(Param::Float("nm_thres").Default(0.0).Range(0, 1e9).Doc(
      "cap on the abs_max scale (0: none)"));
  s->Add(Param::Float("inp_res").Default(1.0 / 126).Range(0, 1e9).Doc(
      "3. DAC resolution: step = inp_res x 2 inp_bound (> 1: a number of steps); 0: none"));
  s->Add(Param::Float("inp_bound").Default(1.0).Range(1e-9, 1e9).Doc("3. DAC clip +-inp_bound"));
  s->Add(Param::Float("inp_noise").Default(0.0).Range(0, 1e9).Doc("3. DAC output noise sigma"));
  s->Add(Param::Float("ir_drop").Default(0.0).Range(0, 1e9).Doc(
      "5. IR-drop scale (aihwkit's model; 0: off)"));
  s->Add(Param::Float("w_noise").Default(0.0).Range(0, 1e9).Doc("6. weight read noise sigma"));
  s->Add(Param::Enum("w_noise_type", {"additive_constant", "pcm_read"})
             .Default("additive_constant")
             .Doc("6. additive_constant: w_noise ||u|| xi; pcm_read: "
                  "w_noise sqrt(sum |w| u^2) xi"));
  s->Add(Param::Float("out_noise").Default(0.06).Range(0, 1e9).Doc("7. output noise sigma"));
  s->Add(Param::Float("out_res").Default(1.0 / 510).Range(0, 1e9).Doc(
      "7. ADC resolution: step = out_res x 2 out_bound (> 1: steps); 0: none"));
  s->Add(Param::Float("out_bound").Default(12.0).Range(1e-9, 1e9).Doc("7. ADC clip +-out_bound"));
  s->Add(Param::Enum("bound_management", {"iterative", "none"}).Default("iterative").Doc(
      "8. forward: repeat with the input halved while an output hits the bound"));
  s->Add(Param::Bool("is_perfect").Default(false).Doc(
      "an exact read (no quantization, noise, bounds)"));
  return s;
}

IoParams ParseIo(const ConfigNode& p) {
  IoParams io;
  io.noise_management =
      p.GetString("noise_management") == "none" ? NoiseManagement::kNone : NoiseManagement::kAbsMax;
  io.nm_thres = p.GetDouble("nm_thres");
  io.inp_res = p.GetDouble("inp_res");
  io.inp_bound = p.GetDouble("inp_bound");
  io.inp_noise = p.GetDouble("inp_noise");
  io.ir_drop = p.GetDouble("ir_drop");
  io.w_noise = p.GetDouble("w_noise");
  io.w_noise_type = p.GetString("w_noise_type") == "pcm_read" ? WeightNoiseType::kPcmRead
                                                              : WeightNoiseType::kAdditiveConstant;
  io.out_noise = p.GetDouble("out_noise");
  io.out_res = p.GetDouble("out_res");
  io.out_bound = p.GetDouble("out_bound");
  io.bound_management = p.GetString("bound_management") == "none" ? BoundManagement::kNone
                                                                  : BoundManagement::kIterative;
  io.is_perfect = p.GetBool("is_perfect");
  return io;
}

namespace {

// Step of a quantizer with resolution `res` over +-bound (res > 1: a number of steps).
double StepOf(double res, double bound) {
  if (res <= 0) return 0;
  return (res > 1 ? 1.0 / res : res) * 2 * bound;
}

constexpr double kIrGRatio = 5.714e5;  // aihwkit's IR-drop conductance ratio

// The constants of the element arithmetic, in float.
struct Q {
  float din = 0, inv_din = 0, ib = 1;   // DAC step, its reciprocal, clip
  float dout = 0, inv_dout = 0, ob = 1;  // ADC step, its reciprocal, clip
  float inp_noise = 0, out_noise = 0;
};

Q MakeQ(const IoParams& io) {
  Q q;
  const double din = StepOf(io.inp_res, io.inp_bound), dout = StepOf(io.out_res, io.out_bound);
  q.din = static_cast<float>(din);
  q.inv_din = din > 0 ? static_cast<float>(1.0 / din) : 0.0f;
  q.ib = static_cast<float>(io.inp_bound);
  q.dout = static_cast<float>(dout);
  q.inv_dout = dout > 0 ? static_cast<float>(1.0 / dout) : 0.0f;
  q.ob = static_cast<float>(io.out_bound);
  q.inp_noise = static_cast<float>(io.inp_noise);
  q.out_noise = static_cast<float>(io.out_noise);
  return q;
}

// ---- The element arithmetic (the definition; the vector loops below repeat it op for op) ----
// 2.-3. u = clip(rint((x inv) / din) din, +-ib) (division as a multiply by 1/din).
inline float Dac(float x, float inv, const Q& q) {
  float v = x * inv;
  if (q.din > 0) v = std::nearbyint(v * q.inv_din) * q.din;
  return std::min(std::max(v, -q.ib), q.ib);
}
// 7. v = rint((out + out_noise z) / dout) dout; hit = |v| >= ob; y = clip(v, +-ob) back.
inline float Adc(float out, float z, float back, const Q& q, bool& hit) {
  float v = out;
  if (q.out_noise > 0) v = v + q.out_noise * z;
  if (q.dout > 0) v = std::nearbyint(v * q.inv_dout) * q.dout;
  hit |= v >= q.ob || v <= -q.ob;
  return std::min(std::max(v, -q.ob), q.ob) * back;
}

// ---- Vector loops (AVX2; the scalar tail is the definition) ---------------------------------
float MaxAbs(const float* x, int64_t k) {
  int64_t j = 0;
  float s = 0;
#if defined(__AVX2__)
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (; j + 8 <= k; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
  alignas(32) float t[8];
  _mm256_store_ps(t, m);
  for (float v : t) s = std::max(s, v);
#endif
  for (; j < k; ++j) s = std::max(s, std::fabs(x[j]));
  return s;
}

void DacRow(const float* x, int64_t k, float inv, const Q& q, float* u) {
  int64_t j = 0;
#if defined(__AVX2__)
  const __m256 vinv = _mm256_set1_ps(inv), vid = _mm256_set1_ps(q.inv_din),
               vd = _mm256_set1_ps(q.din), hi = _mm256_set1_ps(q.ib),
               lo = _mm256_set1_ps(-q.ib);
  const bool quant = q.din > 0;
  for (; j + 8 <= k; j += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), vinv);
    if (quant) {
      v = _mm256_mul_ps(
          _mm256_round_ps(_mm256_mul_ps(v, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
          vd);
    }
    _mm256_storeu_ps(u + j, _mm256_min_ps(_mm256_max_ps(v, lo), hi));
  }
#endif
  for (; j < k; ++j) u[j] = Dac(x[j], inv, q);
}

// y[c] = Adc(out[c], z[c], back) for c < n; returns whether any output hit the bound.
bool AdcRow(const float* out, const float* z, int64_t n, float back, const Q& q, float* y) {
  int64_t c = 0;
  bool hit = false;
#if defined(__AVX2__)
  const __m256 vs = _mm256_set1_ps(q.out_noise), vid = _mm256_set1_ps(q.inv_dout),
               vd = _mm256_set1_ps(q.dout), hi = _mm256_set1_ps(q.ob),
               lo = _mm256_set1_ps(-q.ob), vb = _mm256_set1_ps(back);
  const bool noise = q.out_noise > 0, quant = q.dout > 0;
  __m256 any = _mm256_setzero_ps();
  for (; c + 8 <= n; c += 8) {
    __m256 v = _mm256_loadu_ps(out + c);
    if (noise) v = _mm256_add_ps(v, _mm256_mul_ps(vs, _mm256_loadu_ps(z + c)));
    if (quant) {
      v = _mm256_mul_ps(
          _mm256_round_ps(_mm256_mul_ps(v, vid), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
          vd);
    }
    any = _mm256_or_ps(any, _mm256_or_ps(_mm256_cmp_ps(v, hi, _CMP_GE_OQ),
                                         _mm256_cmp_ps(v, lo, _CMP_LE_OQ)));
    _mm256_storeu_ps(y + c, _mm256_mul_ps(_mm256_min_ps(_mm256_max_ps(v, lo), hi), vb));
  }
  hit = _mm256_movemask_ps(any) != 0;
#endif
  for (; c < n; ++c) y[c] = Adc(out[c], z[c], back, q, hit);
  return hit;
}

// Scratch reused between calls (a read is not reentrant on one thread).
struct Scratch {
  std::vector<float> scale, rbm, u, out, ua, wa, up, outa, outb, z;
  std::vector<int64_t> todo, again;
  std::vector<uint8_t> hit;
};

template <bool kFast>
void Read(const IoParams& io, ConstMatrixView x, const float* w, int64_t rows, int64_t cols,
          bool transposed, uint64_t key, int64_t tiles, MatrixView y, ThreadPool* pool,
          ActionCounts& counts) {
  const int64_t m = x.rows;
  const int64_t k = transposed ? cols : rows, n = transposed ? rows : cols;
  ThreadPool& tp = pool != nullptr ? *pool : DefaultPool();
  auto gemm = [&](const float* a, int64_t mm, const float* b, float* c) {
    kernels::GemmArgs g;
    g.trans_b = transposed ? kernels::Trans::kYes : kernels::Trans::kNo;
    g.m = mm;
    g.n = n;
    g.k = k;
    g.a = a;
    g.lda = k;
    g.b = b;
    g.ldb = cols;
    g.c = c;
    g.ldc = n;
    kernels::fast::Gemm(g, pool);
  };
  counts.Add("dac_conversions", m * k);
  counts.Add("adc_conversions", m * n);
  counts.Add("cell_reads", m * k * n);
  counts.Add("input_cycles", m * tiles);
  thread_local Scratch sc;
  if (io.is_perfect) {
    sc.u.resize(static_cast<size_t>(m * k));
    for (int64_t i = 0; i < m; ++i) std::copy(x.Row(i), x.Row(i) + k, sc.u.data() + i * k);
    sc.out.resize(static_cast<size_t>(m * n));
    gemm(sc.u.data(), m, w, sc.out.data());
    for (int64_t i = 0; i < m; ++i) {
      std::copy(sc.out.data() + i * n, sc.out.data() + (i + 1) * n, y.Row(i));
    }
    return;
  }
  const Q q = MakeQ(io);
  const double din = StepOf(io.inp_res, io.inp_bound);
  const bool bm = !transposed && io.bound_management == BoundManagement::kIterative;
  // 1. noise management: the scale of each sample.
  sc.scale.assign(static_cast<size_t>(m), 1.0f);
  sc.rbm.assign(static_cast<size_t>(m), 1.0f);
  float* scale = sc.scale.data();
  float* rbm = sc.rbm.data();
  if (io.noise_management == NoiseManagement::kAbsMax) {
    const float cap = static_cast<float>(io.nm_thres);
    for (int64_t i = 0; i < m; ++i) {
      float s = 0;
      const float* xr = x.Row(i);
      if (kFast) {
        s = MaxAbs(xr, k);
      } else {
        for (int64_t j = 0; j < k; ++j) s = std::max(s, std::fabs(xr[j]));
      }
      if (io.nm_thres > 0) s = std::min(s, cap);
      scale[i] = s;
    }
  }
  // Samples still to (re)compute; a pass handles them together.
  std::vector<int64_t>& todo = sc.todo;
  todo.clear();
  for (int64_t i = 0; i < m; ++i) {
    if (scale[i] > 0) {
      todo.push_back(i);
    } else {
      std::fill(y.Row(i), y.Row(i) + n, 0.0f);
    }
  }
  const bool pcm = io.w_noise > 0 && io.w_noise_type == WeightNoiseType::kPcmRead;
  if (pcm || io.ir_drop > 0) {
    sc.wa.resize(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < sc.wa.size(); ++i) sc.wa[i] = std::fabs(w[i]);
  }
  int pass = 0;
  while (!todo.empty()) {
    const int64_t mm = static_cast<int64_t>(todo.size());
    sc.u.resize(static_cast<size_t>(mm * k));
    float* u = sc.u.data();
    const uint64_t in_key = MixKey(key, static_cast<uint64_t>(pass), 1);
    // 2.-3. scaling, DAC, clip, input noise.
    tp.ParallelFor(mm, 16, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = todo[t];
        const float* xr = x.Row(i);
        const float inv = 1.0f / (scale[i] * rbm[i]);
        float* ur = u + t * k;
        if (kFast) {
          DacRow(xr, k, inv, q, ur);
        } else {
          for (int64_t j = 0; j < k; ++j) ur[j] = Dac(xr[j], inv, q);
        }
        if (q.inp_noise > 0) {
          for (int64_t j = 0; j < k; ++j) {
            ur[j] = ur[j] + q.inp_noise * NoiseNormal(in_key, 0, static_cast<uint64_t>(i * k + j));
          }
        }
      }
    });
    // 4. MVM.
    sc.out.resize(static_cast<size_t>(mm * n));
    float* out = sc.out.data();
    gemm(u, mm, w, out);
    // 5. IR drop: a_i = (X/g_ratio) sum |w||u|, c = a(a(.05a - .2) + .5),
    // u'_j = u_j (1 - (1 - j/X)^2), y_i -= ir_drop c_i sum w u'.
    if (io.ir_drop > 0) {
      sc.ua.resize(static_cast<size_t>(mm * k));
      sc.up.resize(static_cast<size_t>(mm * k));
      for (int64_t t = 0; t < mm; ++t) {
        for (int64_t j = 0; j < k; ++j) {
          const float v = u[t * k + j];
          const double f = 1.0 - static_cast<double>(j) / k;
          sc.ua[t * k + j] = std::fabs(v);
          sc.up[t * k + j] = static_cast<float>(v * (1 - f * f));
        }
      }
      sc.outa.assign(static_cast<size_t>(mm * n), 0.0f);
      sc.outb.assign(static_cast<size_t>(mm * n), 0.0f);
      gemm(sc.ua.data(), mm, sc.wa.data(), sc.outa.data());
      gemm(sc.up.data(), mm, w, sc.outb.data());
      for (int64_t i = 0; i < mm * n; ++i) {
        const double a = static_cast<double>(k) / kIrGRatio * sc.outa[i];
        const double c = a * (a * (0.05 * a - 0.2) + 0.5);
        out[i] -= static_cast<float>(io.ir_drop * c * sc.outb[i]);
      }
    }
    // 6. weight noise.
    if (io.w_noise > 0) {
      const uint64_t wkey = MixKey(key, static_cast<uint64_t>(pass), 2);
      if (pcm) {
        std::vector<float> u2(static_cast<size_t>(mm * k)), pw(static_cast<size_t>(mm * n));
        for (size_t i = 0; i < u2.size(); ++i) u2[i] = u[i] * u[i];
        gemm(u2.data(), mm, sc.wa.data(), pw.data());
        for (int64_t t = 0; t < mm; ++t) {
          for (int64_t c = 0; c < n; ++c) {
            const uint64_t ctr = static_cast<uint64_t>(todo[t] * n + c);
            out[t * n + c] += static_cast<float>(
                io.w_noise * std::sqrt(std::max(0.0f, pw[t * n + c])) * NoiseNormal(wkey, 0, ctr));
          }
        }
      } else {
        for (int64_t t = 0; t < mm; ++t) {
          double nrm = 0;
          for (int64_t j = 0; j < k; ++j) nrm += double{u[t * k + j]} * u[t * k + j];
          nrm = std::sqrt(nrm);
          for (int64_t c = 0; c < n; ++c) {
            const uint64_t ctr = static_cast<uint64_t>(todo[t] * n + c);
            out[t * n + c] += static_cast<float>(io.w_noise * nrm * NoiseNormal(wkey, 0, ctr));
          }
        }
      }
    }
    // 7. output noise, ADC, clip; 8. bound management; 9. rescale. Output noise of sample i,
    // output c: NoiseNormal(MixKey(key, pass, 3), 0, i n + c).
    const uint64_t okey = MixKey(key, static_cast<uint64_t>(pass), 3);
    sc.hit.assign(static_cast<size_t>(mm), 0);
    uint8_t* hit = sc.hit.data();
    tp.ParallelFor(mm, 8, [&](int64_t t0, int64_t t1) {
      thread_local std::vector<float> zbuf;
      const float* z = nullptr;
      int64_t base = 0;  // index of z[0]
      if (kFast && q.out_noise > 0) {
        // One fill over the chunk's samples when they are (nearly) contiguous, else per sample.
        const int64_t lo = todo[t0] * n, hi = (todo[t1 - 1] + 1) * n;
        if (hi - lo <= 2 * (t1 - t0) * n) {
          zbuf.resize(static_cast<size_t>(hi - lo));
          kernels::fast::FillNormals(okey, 0, static_cast<uint64_t>(lo), hi - lo, zbuf.data());
          z = zbuf.data();
          base = lo;
        }
      }
      if (!kFast || q.out_noise <= 0) zbuf.resize(static_cast<size_t>(n));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = todo[t];
        const float back = scale[i] * rbm[i];
        float* yr = y.Row(i);
        const float* orow = out + t * n;
        const float* zr;
        if (q.out_noise <= 0) {
          std::fill(zbuf.begin(), zbuf.end(), 0.0f);
          zr = zbuf.data();
        } else if (z != nullptr) {
          zr = z + (i * n - base);
        } else if (kFast) {
          zbuf.resize(static_cast<size_t>(n));
          kernels::fast::FillNormals(okey, 0, static_cast<uint64_t>(i * n), n, zbuf.data());
          zr = zbuf.data();
        } else {
          for (int64_t c = 0; c < n; ++c) {
            zbuf[c] = NoiseNormal(okey, 0, static_cast<uint64_t>(i * n + c));
          }
          zr = zbuf.data();
        }
        bool h = false;
        if (kFast) {
          h = AdcRow(orow, zr, n, back, q, yr);
        } else {
          for (int64_t c = 0; c < n; ++c) yr[c] = Adc(orow[c], zr[c], back, q, h);
        }
        hit[t] = h;
      }
    });
    if (!bm) break;
    std::vector<int64_t>& again = sc.again;
    again.clear();
    for (int64_t t = 0; t < mm; ++t) {
      const int64_t i = todo[t];
      if (!hit[t]) continue;
      const double next = double{rbm[i]} * 2;
      if (next > 1000 || (din > 0 && next > 0.25 / din)) continue;
      rbm[i] = static_cast<float>(next);
      again.push_back(i);
    }
    if (!again.empty()) {
      counts.Add("bm_repeats", static_cast<int64_t>(again.size()));
      counts.Add("dac_conversions", static_cast<int64_t>(again.size()) * k);
      counts.Add("adc_conversions", static_cast<int64_t>(again.size()) * n);
      counts.Add("cell_reads", static_cast<int64_t>(again.size()) * k * n);
      counts.Add("input_cycles", static_cast<int64_t>(again.size()) * tiles);
    }
    todo.swap(again);
    ++pass;
  }
}

}  // namespace

void AnalogRead(const IoParams& io, ConstMatrixView x, const float* w, int64_t rows, int64_t cols,
                bool transposed, uint64_t key, int64_t tiles, MatrixView y, ThreadPool* pool,
                ActionCounts& counts) {
  Read<true>(io, x, w, rows, cols, transposed, key, tiles, y, pool, counts);
}

void AnalogReadRef(const IoParams& io, ConstMatrixView x, const float* w, int64_t rows,
                   int64_t cols, bool transposed, uint64_t key, int64_t tiles, MatrixView y,
                   ThreadPool* pool, ActionCounts& counts) {
  Read<false>(io, x, w, rows, cols, transposed, key, tiles, y, pool, counts);
}

}  // namespace pim
