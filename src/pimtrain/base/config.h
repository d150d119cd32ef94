// ConfigNode: a YAML-shaped tree (scalars, maps, lists) that remembers where each value came from.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pim {

class Schema;

// The type a scalar has after schema validation; kUnknown before (all scalars start as text).
enum class ScalarType { kUnknown, kInt, kFloat, kBool, kString };

class ConfigNode {
 public:
  enum class Kind { kNull, kScalar, kMap, kList };

  ConfigNode() = default;
  static ConfigNode Scalar(std::string text, ScalarType type = ScalarType::kUnknown);
  static ConfigNode Map();
  static ConfigNode List();

  Kind kind() const { return kind_; }
  bool IsNull() const { return kind_ == Kind::kNull; }
  bool IsScalar() const { return kind_ == Kind::kScalar; }
  bool IsMap() const { return kind_ == Kind::kMap; }
  bool IsList() const { return kind_ == Kind::kList; }
  const char* KindName() const;

  // Map access. Keys keep insertion order (so dumps read like the input).
  bool Has(std::string_view key) const;
  const ConfigNode* Find(std::string_view key) const;
  ConfigNode* Find(std::string_view key);
  // Throws ConfigError naming the path if the key is absent.
  const ConfigNode& At(std::string_view key) const;
  // Inserts or replaces; returns the stored child.
  ConfigNode& Set(std::string key, ConfigNode value);
  void Erase(std::string_view key);
  const std::vector<std::pair<std::string, ConfigNode>>& entries() const { return entries_; }
  std::vector<std::pair<std::string, ConfigNode>>& entries() { return entries_; }

  // List access.
  const std::vector<ConfigNode>& items() const { return items_; }
  std::vector<ConfigNode>& items() { return items_; }
  ConfigNode& Append(ConfigNode value);

  // Scalar access. The typed getters throw ConfigError naming the path and the bad text.
  const std::string& text() const { return text_; }
  ScalarType scalar_type() const { return scalar_type_; }
  void set_scalar_type(ScalarType t) { scalar_type_ = t; }
  int64_t AsInt() const;
  double AsDouble() const;
  bool AsBool() const;
  std::string AsString() const;
  std::vector<int64_t> AsIntList() const;
  std::vector<double> AsDoubleList() const;

  // Convenience lookups on maps: the value of a key (which must exist after validation).
  int64_t GetInt(std::string_view key) const { return At(key).AsInt(); }
  double GetDouble(std::string_view key) const { return At(key).AsDouble(); }
  bool GetBool(std::string_view key) const { return At(key).AsBool(); }
  std::string GetString(std::string_view key) const { return At(key).AsString(); }

  // Where the value is: "model.layers[1].kernel". The root's path is "".
  const std::string& path() const { return path_; }
  // Which file (and line) or command-line flag set it: "cfg.yaml:12" or "--set".
  const std::string& origin() const { return origin_; }
  void set_origin(std::string origin) { origin_ = std::move(origin); }
  // "cfg.yaml:12: model.layers[1].kernel" (or just the path when the origin is unknown).
  std::string Where() const;
  // Recomputes path() for this node and every descendant, with this node at `path`.
  void SetPaths(const std::string& path);
  // Sets origin on this node and all descendants that have none.
  void SetOriginIfEmpty(const std::string& origin);

  bool operator==(const ConfigNode& other) const;  // compares structure and text only

 private:
  Kind kind_ = Kind::kNull;
  std::string text_;
  ScalarType scalar_type_ = ScalarType::kUnknown;
  std::vector<std::pair<std::string, ConfigNode>> entries_;
  std::vector<ConfigNode> items_;
  std::string path_;
  std::string origin_;
};

// Parses YAML text (one document). `origin` names the source in error messages.
ConfigNode ParseYaml(const std::string& text, const std::string& origin);
// Reads and parses a YAML file; IoError if unreadable, ConfigError if malformed.
ConfigNode LoadYamlFile(const std::string& file);
// Deep-merges `overlay` into `base`: maps merge key by key, anything else replaces.
void MergeInto(ConfigNode& base, const ConfigNode& overlay);
// Applies one "--set a.b[2].c=value" override; the value is parsed as YAML ("[1, 2]" is a list).
// With `schema` (the root's, sim/session.h RootSchema), the walk to the key fills in what the
// resolved config would hold there: a key that the tree lacks but the schema defaults (a default
// component such as train.optimizer = {impl: sgd, ...}, a section, a default list) is inserted
// with its default first, so "train.optimizer.learning_rate=0.01" changes that one key of the
// default optimizer and "model.layers[1]=512" one element of the default layer list. At the key:
//   - a map value without `impl` merges into what is there (MergeInto's rules);
//   - a map value with `impl`, a scalar or a list replaces it (explicit component replacement:
//     "train.optimizer={impl: adam}" or "train.optimizer=adam");
//   - "X.impl=NAME" with a different NAME than X holds replaces X whole by {impl: NAME} (the old
//     implementation's keys would not fit the new one's schema, as in MergeInto).
// Without `schema`, nothing is filled in (a plain tree edit).
void ApplySet(ConfigNode& root, std::string_view assignment, const Schema* schema = nullptr);
// Serializes to YAML / JSON text. Validated scalars keep their types in JSON.
std::string ToYaml(const ConfigNode& node);
std::string ToJson(const ConfigNode& node, int indent = -1);

}  // namespace pim
