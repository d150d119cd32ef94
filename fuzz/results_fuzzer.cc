// libFuzzer target: the sweep results reader (JSONL text); see harness.h.
#include <cstddef>
#include <cstdint>

#include "harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pim::fuzz::ResultsInput(data, size);
  return 0;
}
