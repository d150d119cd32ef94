// Deployment over time for PCM-like devices (spec section 5; aihwkit PCMLikeNoiseModel,
// Nandakumar et al., ICECS 2019): weights mapped to conductance pairs, programming noise,
// power-law drift with a spread of its exponent, read noise, stuck-at faults and global drift
// compensation, evaluated at one inference time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/schema.h"

namespace pim {

struct DeploymentParams {
  double t_inference = 0;  // s after programming (t = t_inference + t0)
  double g_max_us = 25;
  bool programming_noise = true, drift = true, read_noise = true, compensation = true;
  double stuck_at_zero_prob = 0, stuck_at_max_prob = 0;
  int64_t repetition = 0;  // keys the programming, drift and read draws (not the faults)
};

std::shared_ptr<Schema> DeploymentSchema();
DeploymentParams ParseDeployment(const ConfigNode& p);

// Replaces w (n values, one layer) by what a read at t_inference sees: g+- = clip(+-w g_max /
// max|w|, 0, g_max), programming noise, drift, read noise, stuck cells, back to weights, then
// (compensation) scaled by alpha = sum |w(t = 0)| / sum |w(t)| (one-hot reads of every row).
// Draws keyed by (seed, layer, repetition) and the cell; faults by (seed, layer) and the cell.
void ApplyDeployment(const DeploymentParams& d, uint64_t seed, int layer, float* w, int64_t n);

}  // namespace pim
