// Unit cells: one weight held by several devices (the one-sided differential pair), their
// sub-devices' draws and states, and the hooks the array, the macro and the checkpoints use.
#pragma once

#include <cstdint>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/device/device.h"

namespace pim {

class DeviceArray;

// The devices behind the weights of one array when a weight is a unit cell of k devices:
// device j of weight i is sub-cell i*k + j (its own device-to-device draws in `cells`, its
// state in `g`). Pulses on weight i touch only entries i*k..i*k+k-1, so cells pulsed in
// parallel never share an entry. `pulses` / `reads` accumulate the refresh's actions per
// weight until TakeUnitCellCounts moves them into the step's counts.
struct SubCells {
  int k = 1;
  DeviceCells cells;
  std::vector<float> g;
  std::vector<int32_t> pulses, reads;
};

// A device model whose cell is several devices (impl/one_sided.cc); Draw fills `cells.sub`.
class UnitCellDevice : public Device {
 protected:
  UnitCellDevice() = default;
};

// The state of every sub-device (k per weight), or nullptr when a weight is one device.
std::vector<float>* UnitCellState(DeviceArray& a);
// Devices per weight: SubCells::k, 1 for one device per weight.
int DevicesPerWeight(DeviceArray& a);
// Adds the refreshes' pulses (device_pulses) and pair reads (device_verify_reads, cell reads)
// accumulated since the last call to `counts` and zeroes them; no-op for one device per weight.
void TakeUnitCellCounts(DeviceArray& a, ActionCounts& counts);
// Throws ConfigError when `update` cannot drive a unit cell (`update: ideal` writes the weight
// as one exact increment, which has no meaning on a pair); `where` names the macro's config.
void CheckUnitCellUpdate(const Device& device, const ConfigNode& update);
// Throws UnsupportedError naming `device`'s impl key when `algorithm` (train.algorithm) needs a
// fast array of the same device (tiki_taka, chopped_tiki_taka) and `device` is a unit cell: a
// unit cell as Tiki-Taka's fast array is not modelled (docs/devices.md, "Not built yet").
void CheckUnitCellAlgorithm(const ConfigNode& device, const ConfigNode& algorithm);

}  // namespace pim
