// The aihwkit-style read path (spec section 3): y = s r_bm ADC(W DAC(x / (s r_bm)) + noise).
#include "pimtrain/device/io.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/gemm.h"

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

}  // namespace

void AnalogRead(const IoParams& io, ConstMatrixView x, const float* w, int64_t rows, int64_t cols,
                bool transposed, uint64_t key, int64_t tiles, MatrixView y, ThreadPool* pool,
                ActionCounts& counts) {
  const int64_t m = x.rows;
  const int64_t k = transposed ? cols : rows, n = transposed ? rows : cols;
  ThreadPool& tp = pool != nullptr ? *pool : DefaultPool();
  auto gemm = [&](const float* a, int64_t mm, float* c) {
    kernels::GemmArgs g;
    g.trans_b = transposed ? kernels::Trans::kYes : kernels::Trans::kNo;
    g.m = mm;
    g.n = n;
    g.k = k;
    g.a = a;
    g.lda = k;
    g.b = w;
    g.ldb = cols;
    g.c = c;
    g.ldc = n;
    kernels::fast::Gemm(g, pool);
  };
  counts.Add("dac_conversions", m * k);
  counts.Add("adc_conversions", m * n);
  counts.Add("cell_reads", m * k * n);
  counts.Add("input_cycles", m * tiles);
  if (io.is_perfect) {
    std::vector<float> xs(static_cast<size_t>(m * k));
    for (int64_t i = 0; i < m; ++i) std::copy(x.Row(i), x.Row(i) + k, xs.data() + i * k);
    std::vector<float> out(static_cast<size_t>(m * n));
    gemm(xs.data(), m, out.data());
    for (int64_t i = 0; i < m; ++i) {
      std::copy(out.data() + i * n, out.data() + (i + 1) * n, y.Row(i));
    }
    return;
  }
  const double din = StepOf(io.inp_res, io.inp_bound);
  const double dout = StepOf(io.out_res, io.out_bound);
  const bool bm = !transposed && io.bound_management == BoundManagement::kIterative;
  // 1. noise management: the scale of each sample.
  std::vector<double> scale(static_cast<size_t>(m), 1.0), rbm(static_cast<size_t>(m), 1.0);
  for (int64_t i = 0; i < m; ++i) {
    if (io.noise_management == NoiseManagement::kAbsMax) {
      double s = 0;
      const float* xr = x.Row(i);
      for (int64_t j = 0; j < k; ++j) s = std::max(s, double{std::fabs(xr[j])});
      if (io.nm_thres > 0) s = std::min(s, io.nm_thres);
      scale[i] = s;
    }
  }
  // Samples still to (re)compute; a pass handles them together.
  std::vector<int64_t> todo;
  for (int64_t i = 0; i < m; ++i) {
    if (scale[i] > 0) {
      todo.push_back(i);
    } else {
      std::fill(y.Row(i), y.Row(i) + n, 0.0f);
    }
  }
  std::vector<float> u, out, ua, wa, up, outa, outb;
  const bool pcm = io.w_noise > 0 && io.w_noise_type == WeightNoiseType::kPcmRead;
  if (pcm || io.ir_drop > 0) {
    wa.resize(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < wa.size(); ++i) wa[i] = std::fabs(w[i]);
  }
  int pass = 0;
  while (!todo.empty()) {
    const int64_t mm = static_cast<int64_t>(todo.size());
    u.assign(static_cast<size_t>(mm * k), 0.0f);
    const CounterRng in_rng(MixKey(key, static_cast<uint64_t>(pass), 1), 0);
    // 2.-3. scaling, DAC, clip, input noise.
    for (int64_t t = 0; t < mm; ++t) {
      const int64_t i = todo[t];
      const float* xr = x.Row(i);
      const double inv = 1.0 / (scale[i] * rbm[i]);
      float* ur = u.data() + t * k;
      for (int64_t j = 0; j < k; ++j) {
        double v = xr[j] * inv;
        if (din > 0) v = std::nearbyint(v / din) * din;
        v = std::clamp(v, -io.inp_bound, io.inp_bound);
        if (io.inp_noise > 0) v += io.inp_noise * in_rng.Normal(static_cast<uint64_t>(i * k + j));
        ur[j] = static_cast<float>(v);
      }
    }
    // 4. MVM.
    out.assign(static_cast<size_t>(mm * n), 0.0f);
    gemm(u.data(), mm, out.data());
    // 5. IR drop: a_i = (X/g_ratio) sum |w||u|, c = a(a(.05a - .2) + .5),
    // u'_j = u_j (1 - (1 - j/X)^2), y_i -= ir_drop c_i sum w u'.
    if (io.ir_drop > 0) {
      ua.resize(u.size());
      up.resize(u.size());
      for (int64_t t = 0; t < mm; ++t) {
        for (int64_t j = 0; j < k; ++j) {
          const float v = u[t * k + j];
          const double f = 1.0 - static_cast<double>(j) / k;
          ua[t * k + j] = std::fabs(v);
          up[t * k + j] = static_cast<float>(v * (1 - f * f));
        }
      }
      outa.assign(out.size(), 0.0f);
      outb.assign(out.size(), 0.0f);
      {
        kernels::GemmArgs g;
        g.trans_b = transposed ? kernels::Trans::kYes : kernels::Trans::kNo;
        g.m = mm, g.n = n, g.k = k, g.a = ua.data(), g.lda = k, g.b = wa.data(), g.ldb = cols;
        g.c = outa.data(), g.ldc = n;
        kernels::fast::Gemm(g, pool);
        g.a = up.data(), g.b = w, g.c = outb.data();
        kernels::fast::Gemm(g, pool);
      }
      for (size_t i = 0; i < out.size(); ++i) {
        const double a = static_cast<double>(k) / kIrGRatio * outa[i];
        const double c = a * (a * (0.05 * a - 0.2) + 0.5);
        out[i] -= static_cast<float>(io.ir_drop * c * outb[i]);
      }
    }
    // 6. weight noise.
    if (io.w_noise > 0) {
      const CounterRng wr(MixKey(key, static_cast<uint64_t>(pass), 2), 0);
      if (pcm) {
        std::vector<float> u2(u.size()), pw(out.size());
        for (size_t i = 0; i < u.size(); ++i) u2[i] = u[i] * u[i];
        kernels::GemmArgs g;
        g.trans_b = transposed ? kernels::Trans::kYes : kernels::Trans::kNo;
        g.m = mm, g.n = n, g.k = k, g.a = u2.data(), g.lda = k, g.b = wa.data(), g.ldb = cols;
        g.c = pw.data(), g.ldc = n;
        kernels::fast::Gemm(g, pool);
        for (int64_t t = 0; t < mm; ++t) {
          for (int64_t c = 0; c < n; ++c) {
            const uint64_t ctr = static_cast<uint64_t>(todo[t] * n + c);
            out[t * n + c] += static_cast<float>(
                io.w_noise * std::sqrt(std::max(0.0f, pw[t * n + c])) * wr.Normal(ctr));
          }
        }
      } else {
        for (int64_t t = 0; t < mm; ++t) {
          double nrm = 0;
          for (int64_t j = 0; j < k; ++j) nrm += double{u[t * k + j]} * u[t * k + j];
          nrm = std::sqrt(nrm);
          for (int64_t c = 0; c < n; ++c) {
            const uint64_t ctr = static_cast<uint64_t>(todo[t] * n + c);
            out[t * n + c] += static_cast<float>(io.w_noise * nrm * wr.Normal(ctr));
          }
        }
      }
    }
    // 7. output noise, ADC, clip; 8. bound management; 9. rescale.
    const CounterRng orng(MixKey(key, static_cast<uint64_t>(pass), 3), 0);
    std::vector<int64_t> again;
    std::vector<uint8_t> hit(static_cast<size_t>(mm), 0);
    tp.ParallelFor(mm, 8, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t i = todo[t];
        const double back = scale[i] * rbm[i];
        float* yr = y.Row(i);
        bool h = false;
        for (int64_t c = 0; c < n; ++c) {
          double v = out[t * n + c];
          if (io.out_noise > 0) v += io.out_noise * orng.Normal(static_cast<uint64_t>(i * n + c));
          if (dout > 0) v = std::nearbyint(v / dout) * dout;
          if (v >= io.out_bound || v <= -io.out_bound) h = true;
          v = std::clamp(v, -io.out_bound, io.out_bound);
          yr[c] = static_cast<float>(v * back);
        }
        hit[t] = h;
      }
    });
    if (!bm) break;
    for (int64_t t = 0; t < mm; ++t) {
      const int64_t i = todo[t];
      if (!hit[t]) continue;
      const double next = rbm[i] * 2;
      if (next > 1000 || (din > 0 && next > 0.25 / din)) continue;
      rbm[i] = next;
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

}  // namespace pim
