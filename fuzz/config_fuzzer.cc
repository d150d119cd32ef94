// libFuzzer target: the config loader and root-schema validator (YAML text); see harness.h.
#include <cstddef>
#include <cstdint>

#include "harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pim::fuzz::ConfigInput(data, size);
  return 0;
}
