// Hooks the analog training algorithms (analog_sgd, tiki_taka, chopped_tiki_taka,
// mixed_precision) use on a macro whose weights live in pulsed devices: its device arrays, its
// update rule and read path. Implemented by analog_crossbar in device mode; reached with
// dynamic_cast from Macro.
#pragma once

#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/device/array.h"
#include "pimtrain/device/io.h"
#include "pimtrain/device/update.h"

namespace pim {

class AnalogTrainable {
 public:
  virtual ~AnalogTrainable() = default;
  // false when the macro runs its bit-accurate integer path (no device, update or io block).
  virtual bool device_mode() const = 0;
  // The devices holding the weights the array reads (Tiki-Taka's C). Valid after Program.
  virtual DeviceArray& weight_array() = 0;
  // A second array of the same device model and shape, with its own device-to-device draws,
  // all weights 0 (Tiki-Taka's fast matrix A); created at the first call.
  virtual DeviceArray& fast_array(uint64_t seed, int layer) = 0;
  // The fast array if an algorithm created it, else nullptr.
  virtual const DeviceArray* fast_array_if_created() const = 0;
  virtual const UpdateRule& update_rule() const = 0;
  virtual const IoParams& io() const = 0;
  // The weight mapping (pim.macro.mapping): the layer's weights are W = alpha_c W_dev, one
  // alpha per column (or one for the layer); empty without a mapping. Set at programming; a
  // checkpoint restores it.
  virtual std::vector<float>& out_scales() = 0;
  // d (batch x cols, errors of the layer's outputs) in device units, d_:c / alpha_c, so that an
  // update of the devices by -lr x^T d' is the step -lr x^T d of W; d itself without a mapping
  // (`buf` holds the scaled copy; counts out_scale_multiplies).
  virtual ConstMatrixView ToDeviceUnits(ConstMatrixView d, std::vector<float>& buf,
                                        ActionCounts& counts) const = 0;
};

}  // namespace pim
