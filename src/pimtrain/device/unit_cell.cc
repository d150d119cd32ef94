// Unit cells: the hooks that move a unit cell's state and counts in and out of an array.
#include "pimtrain/device/unit_cell.h"

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/array.h"

namespace pim {

std::vector<float>* UnitCellState(DeviceArray& a) {
  SubCells* s = a.cells().sub.get();
  return s != nullptr ? &s->g : nullptr;
}

int DevicesPerWeight(DeviceArray& a) {
  const SubCells* s = a.cells().sub.get();
  return s != nullptr ? s->k : 1;
}

void TakeUnitCellCounts(DeviceArray& a, ActionCounts& counts) {
  SubCells* s = a.cells().sub.get();
  if (s == nullptr) return;
  int64_t pulses = 0, reads = 0;
  for (size_t i = 0; i < s->pulses.size(); ++i) {
    pulses += s->pulses[i];
    reads += s->reads[i];
    s->pulses[i] = 0;
    s->reads[i] = 0;
  }
  if (pulses > 0) counts.Add(kCountDevicePulses, pulses);
  if (reads > 0) counts.Add(kCountVerifyReads, reads);
}

void CheckUnitCellUpdate(const Device& device, const ConfigNode& update) {
  if (dynamic_cast<const UnitCellDevice*>(&device) == nullptr) return;
  const std::string impl = update.GetString("impl");
  if (impl == "ideal") {
    throw ConfigError(update.At("impl").Where() + ": update ideal cannot drive a unit cell "
                      "device (expected stochastic_pulses, deterministic_pulses or write_verify)");
  }
}

void CheckUnitCellAlgorithm(const ConfigNode& device, const ConfigNode& algorithm) {
  const std::string algo = algorithm.GetString("impl");
  if (algo != "tiki_taka" && algo != "chopped_tiki_taka") return;
  const std::unique_ptr<Device> d = Registry<Device>::Create(device);
  if (dynamic_cast<const UnitCellDevice*>(d.get()) == nullptr) return;
  throw UnsupportedError(device.At("impl").Where() + ": a unit cell device (" +
                         device.GetString("impl") + ") under train.algorithm " + algo +
                         " is not modelled (its fast array would be a unit cell too); use "
                         "analog_sgd or mixed_precision, or a single device (docs/devices.md)");
}

}  // namespace pim
