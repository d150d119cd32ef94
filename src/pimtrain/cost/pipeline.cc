// Pipeline schedules.
#include "pimtrain/cost/pipeline.h"

#include <algorithm>
#include <numeric>

namespace pim {

PipelineTiming SequentialSchedule(const std::vector<double>& stage_latency, int64_t n) {
  PipelineTiming t;
  t.initiation_interval = std::accumulate(stage_latency.begin(), stage_latency.end(), 0.0);
  t.total = n > 0 ? static_cast<double>(n) * t.initiation_interval : 0.0;
  return t;
}

PipelineTiming PipelinedSchedule(const std::vector<double>& stage_latency, int64_t n) {
  PipelineTiming t;
  if (stage_latency.empty()) return t;
  auto it = std::max_element(stage_latency.begin(), stage_latency.end());
  t.initiation_interval = *it;
  t.fill = std::accumulate(stage_latency.begin(), it, 0.0);
  t.drain = std::accumulate(it + 1, stage_latency.end(), 0.0);
  t.total = n > 0 ? t.fill + static_cast<double>(n) * t.initiation_interval + t.drain : 0.0;
  return t;
}

}  // namespace pim
