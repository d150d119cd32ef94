// `chopped_tiki_taka` (c-TTv2; Rasch et al., Nat. Commun. 2024): Tiki-Taka v2 with row
// choppers c_r = +-1 that flip the sign of A's updates and of the read-out into H, so A's
// offsets average out; H += c_r v lambda_T / (buffer_granularity eps_A), a pulse on C where
// |H| >= 1 (H <- momentum H), and c_r flips with probability in_chop_prob after its read
// (default 0.001: see docs/devices.md for why a short chopper period loses the signal).
#include "pimtrain/base/registry.h"
#include "pimtrain/train/impl/tiki_taka.h"

namespace pim {
namespace {

TikiTakaOptions Parse(const ConfigNode& p) {
  TikiTakaOptions o;
  o.chopped = true;
  TikiTakaBase::ParseCommon(p, o);
  o.in_chop_prob = p.GetDouble("in_chop_prob");
  o.buffer_granularity = p.GetDouble("buffer_granularity");
  o.momentum = p.GetDouble("momentum");
  return o;
}

class ChoppedTikiTaka final : public TikiTakaBase {
 public:
  explicit ChoppedTikiTaka(const ConfigNode& p) : TikiTakaBase(Parse(p)) {}
  static Schema GetSchema() {
    Schema s;
    AddCommon(s);
    s.Add(Param::Float("in_chop_prob").Default(0.001).Range(0, 1).Doc(
        "probability that a row's chopper flips after its read (aihwkit: 0.1 in "
        "ChoppedTransferCompound, 0.01 / 0.001 in its ChoppedTTv2 presets; 0.001 fitted on a "
        "held-out split: the chopper period must exceed A's relaxation time, docs/devices.md)"));
    s.Add(Param::Float("buffer_granularity").Default(1.0).Range(1e-6, 1e6).Doc(
        "H counts in units of buffer_granularity x A's granularity"));
    s.Add(Param::Float("momentum").Default(0.0).Range(0, 1).Doc("H kept after a transfer"));
    return s;
  }

 protected:
  const char* name() const override { return "chopped_tiki_taka"; }
};

PIM_REGISTER(TrainingAlgorithm, ChoppedTikiTaka, "chopped_tiki_taka",
             "chopped Tiki-Taka v2: sign choppers on A, digital H, transfers into C");

}  // namespace
}  // namespace pim
