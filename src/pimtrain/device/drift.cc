// Deployment over time: PCM programming noise, drift, read noise, stuck-at faults (spec 5).
#include "pimtrain/device/drift.h"

#include <algorithm>
#include <cmath>

#include "pimtrain/base/rng.h"

namespace pim {

std::shared_ptr<Schema> DeploymentSchema() {
  auto s = std::make_shared<Schema>();
  s->Add(Param::Float("t_inference").Default(0.0).Range(0, 1e12).Unit("s").Doc(
      "time since programming at which the network is read (drift)"));
  s->Add(Param::Float("g_max_us").Default(25.0).Range(1e-6, 1e6).Unit("uS").Doc(
      "largest programmed conductance (max|W| maps to it)"));
  s->Add(Param::Bool("programming_noise").Default(true).Doc(
      "sigma_p = (c0 + c1 g + c2 g^2) g_max/25, c = [0.26348, 1.9650, -1.1731] uS"));
  s->Add(Param::Bool("drift").Default(true).Doc(
      "g (t/t0)^-nu, nu ~ |N(mu_nu(g), sigma_nu(g))|, t0 = 20 s"));
  s->Add(Param::Bool("read_noise").Default(true).Doc(
      "1/f read noise Q_s sqrt(ln((t + t_r)/(2 t_r))), t_r = 250 ns"));
  s->Add(Param::Bool("compensation").Default(true).Doc(
      "global drift compensation: outputs x sum|W(0)| / sum|W(t)|"));
  s->Add(Param::Float("stuck_at_zero_prob").Default(0.0).Range(0, 1).Doc(
      "probability that a device is stuck at 0 conductance"));
  s->Add(Param::Float("stuck_at_max_prob").Default(0.0).Range(0, 1).Doc(
      "probability that a device is stuck at g_max"));
  s->Add(Param::Int("repetition").Default(0).Range(0, 1 << 30).Doc(
      "index of the programming repetition (keys the noise draws; faults stay)"));
  return s;
}

DeploymentParams ParseDeployment(const ConfigNode& p) {
  DeploymentParams d;
  d.t_inference = p.GetDouble("t_inference");
  d.g_max_us = p.GetDouble("g_max_us");
  d.programming_noise = p.GetBool("programming_noise");
  d.drift = p.GetBool("drift");
  d.read_noise = p.GetBool("read_noise");
  d.compensation = p.GetBool("compensation");
  d.stuck_at_zero_prob = p.GetDouble("stuck_at_zero_prob");
  d.stuck_at_max_prob = p.GetDouble("stuck_at_max_prob");
  d.repetition = p.GetInt("repetition");
  return d;
}

void ApplyDeployment(const DeploymentParams& d, uint64_t seed, int layer, float* w, int64_t n) {
  double wmax = 0;
  for (int64_t i = 0; i < n; ++i) wmax = std::max(wmax, double{std::fabs(w[i])});
  if (wmax == 0) return;
  const double gmax = d.g_max_us, t0 = 20.0, tr = 250e-9;
  const double t = d.t_inference + t0;
  const CounterRng prog(MixKey(seed, layer, d.repetition, 0x70726f67), 0),
      nu_rng(MixKey(seed, layer, d.repetition, 0x6472), 0),
      rd(MixKey(seed, layer, d.repetition, 0x7264), 0),
      fault(MixKey(seed, layer, 0x6661756c), 0);
  double sum0 = 0, sumt = 0;
  for (int64_t i = 0; i < n; ++i) {
    double g0[2], gt[2];
    for (int s = 0; s < 2; ++s) {
      const uint64_t c = 2 * static_cast<uint64_t>(i) + s;
      const double gt_target = std::clamp((s == 0 ? 1 : -1) * w[i] * gmax / wmax, 0.0, gmax);
      double gp = gt_target;
      if (d.programming_noise && gt_target > 0) {
        const double gh = gt_target / gmax;
        const double sig = (0.26348 + 1.9650 * gh - 1.1731 * gh * gh) * gmax / 25.0;
        gp = std::max(gt_target + sig * prog.Normal(c), 0.0);
      }
      double g = gp;
      if (d.drift && gp > 0) {
        const double gh = std::max(gp / gmax, 1e-9);
        const double mu = std::clamp(-0.0155 * std::log(gh) + 0.0244, 0.049, 0.1);
        const double sd = std::clamp(-0.0125 * std::log(gh) - 0.0059, 0.008, 0.045);
        const double nu = std::fabs(mu + sd * nu_rng.Normal(c));
        g = gp * std::pow(t / t0, -nu);
      }
      if (d.read_noise && g > 0) {
        const double qs = std::min(0.0088 / std::max(std::pow(gp / gmax, 0.65), 1e-3), 0.2);
        const double f = std::sqrt(std::log((t + tr) / (2 * tr)));
        g = std::max(g + std::fabs(g) * qs * f * rd.Normal(c), 0.0);
      }
      const float u = fault.Uniform(c);
      if (u < d.stuck_at_zero_prob) {
        gp = g = 0;
      } else if (u < d.stuck_at_zero_prob + d.stuck_at_max_prob) {
        gp = g = gmax;
      }
      g0[s] = gp;
      gt[s] = g;
    }
    const double w0 = (g0[0] - g0[1]) * wmax / gmax, wt = (gt[0] - gt[1]) * wmax / gmax;
    sum0 += std::fabs(w0);
    sumt += std::fabs(wt);
    w[i] = static_cast<float>(wt);
  }
  if (d.compensation && sumt > 0) {
    const float alpha = static_cast<float>(sum0 / sumt);
    for (int64_t i = 0; i < n; ++i) w[i] *= alpha;
  }
}

}  // namespace pim
