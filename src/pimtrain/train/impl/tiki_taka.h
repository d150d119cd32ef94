// Tiki-Taka v2 and chopped Tiki-Taka v2 (spec section 4): the gradient is pulsed into a fast
// array A; every transfer_every steps rows of A are read through the array and accumulated in a
// digital hidden matrix H; H moves the slow array C (the weights the network reads) by pulses
// once it reaches the device granularity. Shared by tiki_taka.cc and chopped_tiki_taka.cc.
#pragma once

#include <cmath>
#include <map>

#include "pimtrain/base/rng.h"
#include "pimtrain/device/io.h"
#include "pimtrain/train/impl/analog_common.h"

namespace pim {

struct TikiTakaOptions {
  double fast_lr = 1.0;       // lambda_A = fast_lr x the step's lr
  double transfer_lr = 1.0;   // lambda_T = transfer_lr x the step's lr (TTv2) or x 1 (chopped)
  int64_t transfer_every = 1; // steps between transfers
  int64_t rows_per_transfer = 1;  // rows of A read per transfer (aihwkit n_reads_per_transfer)
  double thres_scale = 1.0;   // TTv2: pulse C when |H| >= thres_scale eps_C
  double forget = 0.1;        // TTv2: H <- forget H where a transfer happened
  bool chopped = false;
  double in_chop_prob = 0.1;  // c-TTv2: flip probability of a row's chopper after its read
  double buffer_granularity = 1.0;
  double momentum = 0.0;      // c-TTv2: H <- momentum H after a transfer
};

class TikiTakaBase : public AnalogAlgorithm {
 protected:
  explicit TikiTakaBase(TikiTakaOptions o) : o_(o) {}
  static void AddCommon(Schema& s) {
    s.Add(Param::Float("fast_lr").Default(1.0).Range(0, 1e6).Doc(
        "learning rate of the fast array A, relative to the step's"));
    s.Add(Param::Float("transfer_lr").Default(1.0).Range(0, 1e6).Doc(
        "transfer rate lambda_T, relative to the step's learning rate"));
    s.Add(Param::Int("transfer_every").Default(1).Range(1, 1 << 20).Unit("steps").Doc(
        "steps between transfers"));
    s.Add(Param::Int("rows_per_transfer").Default(1).Range(1, 1 << 20).Doc(
        "rows of A read per transfer, cyclically (aihwkit n_reads_per_transfer)"));
  }

  void UpdateLayer(AnalogLayer& al, ConstMatrixView x, ConstMatrixView d, float lr,
                   const RunContext& rc, ActionCounts& counts) override {
    State& st = state_[al.index];
    const int64_t rows = al.rows, cols = al.cols;
    if (st.h.empty()) {
      st.h.assign(static_cast<size_t>(rows * cols), 0.0f);
      st.chop.assign(static_cast<size_t>(rows), 1.0f);
    }
    DeviceArray& a = al.trainable->fast_array(rc.seed, rc.layer);
    DeviceArray& c = al.trainable->weight_array();
    UpdateContext uc{rc.seed, rc.step, rc.layer, rc.pool};
    // 1. SGD pulses into A (chopped: the row choppers flip the sign of the update).
    if (o_.chopped) {
      xs_.assign(x.data, x.data + x.rows * x.ld);
      for (int64_t s = 0; s < x.rows; ++s) {
        for (int64_t r = 0; r < rows; ++r) xs_[s * x.ld + r] *= st.chop[r];
      }
      al.trainable->update_rule().Apply(a, ConstMatrixView(xs_.data(), x.rows, rows, x.ld), d,
                                        static_cast<float>(o_.fast_lr * lr), uc, 3, counts);
    } else {
      al.trainable->update_rule().Apply(a, x, d, static_cast<float>(o_.fast_lr * lr), uc, 3,
                                        counts);
    }
    if ((rc.step + 1) % o_.transfer_every != 0) return;
    // 2. Read rows of A through the array (one-hot inputs, NM and BM off).
    const int64_t k = std::min(o_.rows_per_transfer, rows);
    std::vector<float> onehot(static_cast<size_t>(k * rows), 0.0f);
    std::vector<float> v(static_cast<size_t>(k * cols));
    std::vector<int64_t> which(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      which[j] = st.next_row;
      onehot[j * rows + st.next_row] = 1.0f;
      st.next_row = (st.next_row + 1) % rows;
    }
    IoParams tio = al.trainable->io();
    tio.noise_management = NoiseManagement::kNone;
    tio.bound_management = BoundManagement::kNone;
    AnalogRead(tio, ConstMatrixView(onehot.data(), k, rows, rows), a.read(), rows, cols, false,
               MixKey(rc.seed, rc.layer, rc.step, 0x7474), 1,
               MatrixView{v.data(), k, cols, cols}, rc.pool, counts);
    counts.Add("transfer_reads", k);
    // 3. H accumulates; pulses into C where it reaches the granularity.
    const double eps_c = c.granularity(), eps_a = a.granularity();
    std::vector<int32_t> n(static_cast<size_t>(rows * cols), 0);
    const CounterRng flip(MixKey(rc.seed, rc.layer, 0x63686f70), 0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = which[j];
      for (int64_t q = 0; q < cols; ++q) {
        float& h = st.h[r * cols + q];
        int32_t p = 0;
        if (o_.chopped) {
          h += static_cast<float>(st.chop[r] * v[j * cols + q] * o_.transfer_lr /
                                  (o_.buffer_granularity * eps_a));
          if (std::fabs(h) >= 1) {
            p = static_cast<int32_t>(std::clamp(std::trunc(h), -1.0f, 1.0f));
            h *= static_cast<float>(o_.momentum);
          }
        } else {
          h += static_cast<float>(o_.transfer_lr * lr * v[j * cols + q]);
          const double t = std::trunc(h / (o_.thres_scale * eps_c));
          p = static_cast<int32_t>(std::clamp(t, -1.0, 1.0));
          if (p != 0) h *= static_cast<float>(o_.forget);
        }
        n[r * cols + q] = p;
      }
      if (o_.chopped && flip.Uniform(static_cast<uint64_t>(rc.step) * rows + r) < o_.in_chop_prob) {
        st.chop[r] = -st.chop[r];
      }
    }
    counts.Add("digital_accumulations", k * cols);
    ApplyPulseCounts(c, n.data(), uc, 4, counts);
  }

 private:
  struct State {
    std::vector<float> h, chop;
    int64_t next_row = 0;
  };
  TikiTakaOptions o_;
  std::map<int, State> state_;
  std::vector<float> xs_;
};

}  // namespace pim
