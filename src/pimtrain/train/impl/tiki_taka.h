// Tiki-Taka v2 and chopped Tiki-Taka v2 (spec section 4): the gradient is pulsed into a fast
// array A; every transfer_every steps rows of A are read through the array and accumulated in a
// digital hidden matrix H; H moves the slow array C (the weights the network reads) by pulses
// once it reaches the device granularity. Shared by tiki_taka.cc and chopped_tiki_taka.cc.
#pragma once

#include <cmath>
#include <algorithm>

#include "pimtrain/base/rng.h"
#include "pimtrain/device/io.h"
#include "pimtrain/train/impl/analog_common.h"

namespace pim {

struct TikiTakaOptions {
  double fast_lr = 1.0;       // lambda_A = fast_lr x the step's lr
  double transfer_lr = 1.0;   // lambda_T = transfer_lr x the step's lr
  int64_t transfer_every = 1; // steps between transfers
  int64_t rows_per_transfer = 0;  // rows of A read per transfer (aihwkit n_reads_per_transfer;
                                  // 0: all rows)
  int transfer_bl = 8;        // most pulses per cell and transfer into C (BL_T)
  double thres_scale = 1.0;   // TTv2: pulse C when |H| >= thres_scale eps_C
  double forget = 0.1;        // TTv2: H <- forget H where a transfer happened
  bool chopped = false;
  double in_chop_prob = 0.001;  // c-TTv2: flip probability of a row's chopper after its read
  double buffer_granularity = 1.0;
  double momentum = 0.0;      // c-TTv2: H <- momentum H after a transfer
  bool perfect_transfer_read = false;  // transfer reads of A exact (aihwkit transfer_forward
                                       // is_perfect) instead of the macro's io
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
    s.Add(Param::Int("rows_per_transfer").Default(0).Range(0, 1 << 20).Doc(
        "rows of A read per transfer, cyclically (aihwkit n_reads_per_transfer, default 1); "
        "0: all rows (fitted on a held-out split, docs/devices.md)"));
    s.Add(Param::Int("transfer_bl").Default(8).Range(1, 1 << 16).Unit("pulses").Doc(
        "most pulses per cell of C and transfer, n = clip(trunc(H / threshold), +-transfer_bl) "
        "(aihwkit transfer update desired_bl, default 1; 8 fitted on a held-out split)"));
    s.Add(Param::Enum("transfer_io", {"macro", "perfect"}).Default("macro").Doc(
        "read path of the transfer reads of A: the macro's io (NM and BM off) or exact "
        "(aihwkit transfer_forward is_perfect)"));
  }
 public:
  static void ParseCommon(const ConfigNode& p, TikiTakaOptions& o) {
    o.fast_lr = p.GetDouble("fast_lr");
    o.transfer_lr = p.GetDouble("transfer_lr");
    o.transfer_every = p.GetInt("transfer_every");
    o.rows_per_transfer = p.GetInt("rows_per_transfer");
    o.transfer_bl = static_cast<int>(p.GetInt("transfer_bl"));
    o.perfect_transfer_read = p.GetString("transfer_io") == "perfect";
  }

 protected:

  void UpdateLayer(AnalogLayer& al, ConstMatrixView x, ConstMatrixView d, float lr,
                   const RunContext& rc, ActionCounts& counts) override {
    float* h_state = State(al.index, "h").data();
    float* chop = State(al.index, "chop").data();
    float& next_row = State(al.index, "next_row").data()[0];
    const int64_t rows = al.rows, cols = al.cols;
    DeviceArray& a = al.trainable->fast_array(rc.seed, rc.layer);
    DeviceArray& c = al.trainable->weight_array();
    UpdateContext uc{rc.seed, rc.step, rc.layer, rc.pool};
    // The errors in C's device units (pim.macro.mapping: W = alpha C_dev), so that A and H
    // carry the gradient of C's devices and a pulse on C moves W by alpha eps_C.
    d = al.trainable->ToDeviceUnits(d, ds_, counts);
    // 1. SGD pulses into A (chopped: the row choppers flip the sign of the update).
    if (o_.chopped) {
      xs_.assign(x.data, x.data + x.rows * x.ld);
      for (int64_t s = 0; s < x.rows; ++s) {
        for (int64_t r = 0; r < rows; ++r) xs_[s * x.ld + r] *= chop[r];
      }
      al.trainable->update_rule().Apply(a, ConstMatrixView(xs_.data(), x.rows, rows, x.ld), d,
                                        static_cast<float>(o_.fast_lr * lr), uc, 3, counts);
    } else {
      al.trainable->update_rule().Apply(a, x, d, static_cast<float>(o_.fast_lr * lr), uc, 3,
                                        counts);
    }
    if ((rc.step + 1) % o_.transfer_every != 0) return;
    // 2. Read rows of A through the array (one-hot inputs, NM and BM off).
    const int64_t k = o_.rows_per_transfer == 0 ? rows : std::min(o_.rows_per_transfer, rows);
    std::vector<float> onehot(static_cast<size_t>(k * rows), 0.0f);
    std::vector<float> v(static_cast<size_t>(k * cols));
    std::vector<int64_t> which(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) {
      const int64_t row = static_cast<int64_t>(next_row);
      which[j] = row;
      onehot[j * rows + row] = 1.0f;
      next_row = static_cast<float>((row + 1) % rows);  // < 2^24 rows: exact in a float
    }
    IoParams tio = al.trainable->io();
    tio.noise_management = NoiseManagement::kNone;
    tio.bound_management = BoundManagement::kNone;
    tio.is_perfect = tio.is_perfect || o_.perfect_transfer_read;
    AnalogRead(tio, ConstMatrixView(onehot.data(), k, rows, rows), a.read(), rows, cols, false,
               MixKey(rc.seed, rc.layer, rc.step, 0x7474), 1,
               MatrixView{v.data(), k, cols, cols}, rc.pool, counts);
    counts.Add("transfer_reads", k);
    // 3. H accumulates; pulses into C where it reaches the granularity.
    const double eps_c = c.granularity(), eps_a = a.granularity();
    std::vector<int32_t> n(static_cast<size_t>(rows * cols), 0);
    const CounterRng flip(MixKey(rc.seed, rc.layer, 0x63686f70), 0);
    const float bl = static_cast<float>(o_.transfer_bl);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = which[j];
      for (int64_t q = 0; q < cols; ++q) {
        float& h = h_state[r * cols + q];
        int32_t p = 0;
        if (o_.chopped) {
          // lambda_T = transfer_lr x the step's lr (spec section 4; aihwkit's
          // scale_transfer_lr, on by default), in units of buffer_granularity x eps_A.
          h += static_cast<float>(chop[r] * v[j * cols + q] * o_.transfer_lr * lr /
                                  (o_.buffer_granularity * eps_a));
          if (std::fabs(h) >= 1) {
            p = static_cast<int32_t>(std::clamp(std::trunc(h), -bl, bl));
            h *= static_cast<float>(o_.momentum);
          }
        } else {
          h += static_cast<float>(o_.transfer_lr * lr * v[j * cols + q]);
          const double t = std::trunc(h / (o_.thres_scale * eps_c));
          p = static_cast<int32_t>(std::clamp(t, -static_cast<double>(bl), static_cast<double>(bl)));
          if (p != 0) h *= static_cast<float>(o_.forget);
        }
        n[r * cols + q] = p;
      }
      if (o_.chopped && flip.Uniform(static_cast<uint64_t>(rc.step) * rows + r) < o_.in_chop_prob) {
        chop[r] = -chop[r];
      }
    }
    counts.Add("digital_accumulations", k * cols);
    ApplyPulseCounts(c, n.data(), uc, 4, counts);
  }

  // H, the row choppers, the next row to read, and the fast array's devices (hidden and, with
  // write noise, read weights): all checkpointed.
  void AllocateState(int layer, int64_t rows, int64_t cols, AnalogTrainable& at) override {
    AddState(layer, "h", rows * cols);
    Tensor& chop = AddState(layer, "chop", rows);
    std::fill(chop.data(), chop.data() + rows, 1.0f);
    AddState(layer, "next_row", 1);
    AddState(layer, "a", rows * cols);
    if (at.weight_array().has_write_noise()) AddState(layer, "a_read", rows * cols);
  }
  void SyncState(const Slot& s, bool to_tensors) override {
    DeviceArray& a = s.trainable->fast_array(seed(), s.index);
    Tensor& t = State(s.index, "a");
    Tensor* tr = FindState(s.index, "a_read");
    const int64_t n = t.numel();
    if (to_tensors) {
      std::copy(a.hidden(), a.hidden() + n, t.data());
      if (tr != nullptr) std::copy(a.mutable_read(), a.mutable_read() + n, tr->data());
    } else {
      std::copy(t.data(), t.data() + n, a.mutable_hidden());
      if (tr != nullptr) std::copy(tr->data(), tr->data() + n, a.mutable_read());
    }
  }

 private:
  TikiTakaOptions o_;
  std::vector<float> xs_, ds_;
};

}  // namespace pim
