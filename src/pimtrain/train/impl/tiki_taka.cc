// `tiki_taka` (TTv2; Gokmen, Front. AI 2021; aihwkit BufferedTransferCompound): SGD pulses
// into a fast array A, rows of A read every transfer_every steps into a digital hidden matrix
// H += lambda_T v, and one pulse on the slow array C where |H| >= thres_scale eps_C
// (H <- forget H there). The network reads C. Equations and cost: docs/devices.md.
#include "pimtrain/base/registry.h"
#include "pimtrain/train/impl/tiki_taka.h"

namespace pim {
namespace {

TikiTakaOptions Parse(const ConfigNode& p) {
  TikiTakaOptions o;
  TikiTakaBase::ParseCommon(p, o);
  o.thres_scale = p.GetDouble("thres_scale");
  o.forget = p.GetDouble("forget_buffer");
  return o;
}

class TikiTaka final : public TikiTakaBase {
 public:
  explicit TikiTaka(const ConfigNode& p) : TikiTakaBase(Parse(p)) {}
  static Schema GetSchema() {
    Schema s;
    AddCommon(s);
    s.Add(Param::Float("thres_scale").Default(1.0).Range(1e-6, 1e6).Doc(
        "transfer threshold in units of C's granularity"));
    s.Add(Param::Float("forget_buffer").Default(0.1).Range(0, 1).Doc(
        "H is multiplied by this where a pulse was transferred"));
    return s;
  }

 protected:
  const char* name() const override { return "tiki_taka"; }
};

PIM_REGISTER(TrainingAlgorithm, TikiTaka, "tiki_taka",
             "Tiki-Taka v2: fast array A, digital hidden matrix H, transfers into C");

}  // namespace
}  // namespace pim
