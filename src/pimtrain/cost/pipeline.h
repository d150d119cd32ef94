// Pipeline schedules: pure functions from stage latencies to the time a sequence of items takes
// (docs/cost.md, "Schedules"). Latencies in any unit; results in the same unit.
#pragma once

#include <cstdint>
#include <vector>

namespace pim {

struct PipelineTiming {
  double fill = 0;                  // before the bottleneck stage starts its first item
  double initiation_interval = 0;   // time between successive items leaving the pipeline
  double drain = 0;                 // after the bottleneck stage finishes its last item
  double total = 0;                 // fill + n * initiation_interval + drain (0 for n = 0)
};

// One stage after another, one item after another: total = n * sum(l). II = sum(l), fill and
// drain 0. T-PIM runs its four training stages this way.
PipelineTiming SequentialSchedule(const std::vector<double>& stage_latency, int64_t n);

// Each stage is its own unit and starts an item as soon as the item left the previous stage and
// the unit is free. For a chain of stages l_0..l_{S-1} with bottleneck b (the first maximal
// l_b): II = l_b, fill = sum_{i<b} l_i, drain = sum_{i>b} l_i, and
// total = fill + n * II + drain = sum(l) + (n - 1) * max(l).
PipelineTiming PipelinedSchedule(const std::vector<double>& stage_latency, int64_t n);

}  // namespace pim
