// Hooks the analog training algorithms (analog_sgd, tiki_taka, chopped_tiki_taka,
// mixed_precision) use on a macro whose weights live in pulsed devices: its device arrays, its
// update rule and read path. Implemented by analog_crossbar in device mode; reached with
// dynamic_cast from Macro.
#pragma once

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
};

}  // namespace pim
