// Schema: each configurable implementation declares its parameters once (type, default, unit,
// range, description); validation, defaults, `describe` and error messages all come from here.
#pragma once

#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"

namespace pim {

class Schema;

enum class ParamType {
  kInt,
  kFloat,
  kBool,
  kString,
  kEnum,           // one of choices
  kIntList,
  kFloatList,
  kSection,        // a nested map with its own schema
  kComponent,      // {impl: NAME, ...} validated against the registered NAME of `role`
  kComponentList,  // a list of components of `role`
  kAny,            // free-form (kept as given)
};

const char* ParamTypeName(ParamType t);

class Param {
 public:
  static Param Int(std::string name);
  static Param Float(std::string name);
  static Param Bool(std::string name);
  static Param String(std::string name);
  static Param Enum(std::string name, std::vector<std::string> choices);
  static Param IntList(std::string name);
  static Param FloatList(std::string name);
  static Param Section(std::string name, std::shared_ptr<const Schema> schema);
  static Param Component(std::string name, std::string role);
  static Param ComponentList(std::string name, std::string role);
  static Param Any(std::string name);

  // Fluent setters.
  Param& Default(std::string yaml_text);  // parsed as YAML when filled in
  Param& Default(int64_t v) { return Default(std::to_string(v)); }
  Param& Default(int v) { return Default(std::to_string(v)); }
  Param& Default(double v);
  Param& Default(bool v) { return Default(std::string(v ? "true" : "false")); }
  Param& Default(const char* v) { return Default(std::string(v)); }
  Param& Range(double lo, double hi);
  Param& Unit(std::string unit);
  Param& Doc(std::string description);
  Param& Optional();  // may be absent (no default, not required)

  const std::string& name() const { return name_; }
  ParamType type() const { return type_; }
  const std::optional<std::string>& default_text() const { return default_; }
  bool optional() const { return optional_; }
  double lo() const { return lo_; }
  double hi() const { return hi_; }
  bool has_range() const { return has_range_; }
  const std::string& unit() const { return unit_; }
  const std::string& doc() const { return doc_; }
  const std::vector<std::string>& choices() const { return choices_; }
  const std::string& role() const { return role_; }
  const std::shared_ptr<const Schema>& section() const { return section_; }
  // "integer in [1, 16]", "one of {a, b}", ... for describe and messages.
  std::string TypeDescription() const;

 private:
  std::string name_;
  ParamType type_ = ParamType::kAny;
  std::optional<std::string> default_;
  bool optional_ = false;
  double lo_ = -std::numeric_limits<double>::infinity();
  double hi_ = std::numeric_limits<double>::infinity();
  bool has_range_ = false;
  std::string unit_;
  std::string doc_;
  std::vector<std::string> choices_;
  std::string role_;
  std::shared_ptr<const Schema> section_;
};

class Schema {
 public:
  Schema() = default;
  Schema& Add(Param p);
  const std::vector<Param>& params() const { return params_; }
  const Param* Find(const std::string& name) const;

  // Checks `node` (a map) and returns a copy with defaults filled in and scalar types set.
  // Unknown keys fail with a did-you-mean suggestion; wrong types and out-of-range values fail
  // naming the full key path and the allowed range. `allow_impl` accepts an `impl` key.
  ConfigNode Validate(const ConfigNode& node, bool allow_impl = false) const;

 private:
  std::vector<Param> params_;
};

// Validates a component block ({impl: NAME, ...} or just NAME) against the registry of `role`.
ConfigNode ValidateComponent(const ConfigNode& node, const std::string& role);

// Levenshtein distance, for "did you mean" suggestions.
size_t EditDistance(const std::string& a, const std::string& b);
// " (did you mean 'x'?)" or "" when nothing is close.
std::string DidYouMean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace pim
