// Declared counters and the counts kept under them.
#include "pimtrain/base/action_counts.h"

#include <algorithm>
#include <mutex>

#include "pimtrain/base/error.h"

namespace pim {
namespace {

struct Table {
  std::mutex mu;
  std::map<std::string, CounterInfo> counters;
};

Table& GetTable() {
  static Table t;
  return t;
}

}  // namespace

const CounterInfo& CounterTable::Declare(const CounterInfo& info) {
  PIM_CHECK_MSG(!info.name.empty() && !info.unit.empty() && !info.meaning.empty(),
                "a counter needs a name, a unit and a meaning: '" + info.name + "'");
  Table& t = GetTable();
  std::lock_guard<std::mutex> lock(t.mu);
  auto [it, added] = t.counters.emplace(info.name, info);
  if (!added) {
    PIM_CHECK_MSG(it->second.unit == info.unit,
                  "counter '" + info.name + "' declared with unit '" + it->second.unit + "' by " +
                      it->second.owner + " and '" + info.unit + "' by " + info.owner);
    if (it->second.owner.find(info.owner) == std::string::npos) {
      it->second.owner += ", " + info.owner;
    }
  }
  return it->second;
}

const CounterInfo* CounterTable::Find(const std::string& name) {
  Table& t = GetTable();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.counters.find(name);
  return it == t.counters.end() ? nullptr : &it->second;
}

std::vector<const CounterInfo*> CounterTable::All() {
  Table& t = GetTable();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<const CounterInfo*> out;
  for (const auto& [k, v] : t.counters) out.push_back(&v);
  return out;
}

CounterSet::CounterSet(const std::string& owner, std::initializer_list<Decl> decls)
    : owner_(owner) {
  for (const Decl& d : decls) {
    CounterTable::Declare({d.name, d.unit, d.stages, d.meaning, owner});
    AddName(d.name);
  }
}

CounterSet CounterSet::Union(const std::string& owner,
                             std::initializer_list<const CounterSet*> parts,
                             std::initializer_list<Decl> own) {
  CounterSet s(owner, own);
  for (const CounterSet* p : parts) {
    for (const auto& n : p->names()) s.AddName(n);
  }
  return s;
}

void CounterSet::AddName(const std::string& name) {
  auto it = std::lower_bound(names_.begin(), names_.end(), name);
  if (it == names_.end() || *it != name) names_.insert(it, name);
}

bool CounterSet::Contains(const std::string& name) const {
  return std::binary_search(names_.begin(), names_.end(), name);
}

void ActionCounts::Add(const std::string& action, int64_t n) {
  PIM_CHECK_MSG(CounterTable::Find(action) != nullptr,
                "counter '" + action +
                    "' is counted but nobody declared it (PIM_DECLARE_COUNTERS)");
  if (n != 0) counts_[action] += n;
}

int64_t ActionCounts::Get(const std::string& action) const {
  PIM_CHECK_MSG(CounterTable::Find(action) != nullptr,
                "counter '" + action + "' is read but nobody declared it");
  auto it = counts_.find(action);
  return it == counts_.end() ? 0 : it->second;
}

}  // namespace pim
