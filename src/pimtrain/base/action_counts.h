// ActionCounts: hardware events counted by the functional model (priced later by the cost model).
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace pim {

// Event name -> count. Names are snake_case nouns of one hardware action, e.g.
// "bitserial_cycles", "cell_and_ops", "adc_conversions", "weight_writes", "macs".
// Kernels add to it once per call (never per element), so a map is cheap enough.
class ActionCounts {
 public:
  void Add(const std::string& action, int64_t n) {
    if (n != 0) counts_[action] += n;
  }
  int64_t Get(const std::string& action) const {
    auto it = counts_.find(action);
    return it == counts_.end() ? 0 : it->second;
  }
  void Merge(const ActionCounts& other) {
    for (const auto& [k, v] : other.counts_) counts_[k] += v;
  }
  void Clear() { counts_.clear(); }
  bool empty() const { return counts_.empty(); }
  const std::map<std::string, int64_t>& counts() const { return counts_; }
  bool operator==(const ActionCounts& o) const { return counts_ == o.counts_; }

 private:
  std::map<std::string, int64_t> counts_;
};

}  // namespace pim
