// ActionCounts: hardware events counted by the functional model (priced later by the cost model),
// under counters that the counting code declares (name, unit, stages, meaning), gem5-style.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace pim {

// One declared counter: a snake_case noun of one hardware action ("adc_conversions").
struct CounterInfo {
  std::string name;
  std::string unit;     // what one count is: "conversion", "cell write", "MAC", ...
  std::string stages;   // the stages that count it: "FP BP", "GC", "WU", "CAL", "any"
  std::string meaning;  // one line
  std::string owner;    // who counts it: "analog kernel", "macro/analog_crossbar", ...
};

// The process-wide table of declared counters. A name declared twice must agree on its unit
// (two components counting the same action, e.g. `macs`); owners accumulate.
class CounterTable {
 public:
  static const CounterInfo& Declare(const CounterInfo& info);
  static const CounterInfo* Find(const std::string& name);  // nullptr: undeclared
  static std::vector<const CounterInfo*> All();
};

// The counters one component counts (a kernel's counts struct, a macro's own actions, a
// training algorithm's unit): a named list whose entries are declared in CounterTable. Declare
// a component's counters once, where it counts them, with PIM_DECLARE_COUNTERS; a macro's set is
// the union of the sets of what it runs (Macro::Counters()).
class CounterSet {
 public:
  struct Decl {
    const char* name;
    const char* unit;
    const char* stages;
    const char* meaning;
  };
  CounterSet() = default;
  CounterSet(const std::string& owner, std::initializer_list<Decl> decls);
  // The union of `parts` (already declared) plus `own` declarations under `owner`.
  static CounterSet Union(const std::string& owner, std::initializer_list<const CounterSet*> parts,
                          std::initializer_list<Decl> own = {});
  const std::vector<std::string>& names() const { return names_; }
  bool Contains(const std::string& name) const;
  const std::string& owner() const { return owner_; }

 private:
  void AddName(const std::string& name);
  std::string owner_;
  std::vector<std::string> names_;  // sorted, unique
};

// Defines `const CounterSet& FUNC()` returning the set (built on first use, so other static
// initializers may call it) and declares its counters at start-up, so that ActionCounts::Add of
// any of them works from main() on. Use at namespace scope of the .cc that counts them:
//   PIM_DECLARE_COUNTERS(AnalogKernelCounters, "analog kernel",
//                        {"adc_conversions", "conversion", "FP BP", "ADC conversions"}, ...);
#define PIM_DECLARE_COUNTERS(FUNC, OWNER, ...)                                \
  const ::pim::CounterSet& FUNC() {                                           \
    static const ::pim::CounterSet set(OWNER, {__VA_ARGS__});                 \
    return set;                                                               \
  }                                                                           \
  [[maybe_unused]] static const ::pim::CounterSet& kPimCounters_##FUNC = FUNC()

// Counter name -> count. Kernels add to it once per call (never per element), so a map is cheap
// enough. Adding or reading a counter that nobody declared is a PIM_CHECK failure: a count can
// neither be made up under a misspelt name nor read as zero by accident.
class ActionCounts {
 public:
  void Add(const std::string& action, int64_t n);
  // The count of a declared counter (0 when this period had none of it).
  int64_t Get(const std::string& action) const;
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
