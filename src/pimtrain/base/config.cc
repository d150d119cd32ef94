// ConfigNode implementation, YAML parsing (yaml-cpp), merging, --set overrides and dumps.
#include "pimtrain/base/config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/schema.h"

namespace pim {

ConfigNode ConfigNode::Scalar(std::string text, ScalarType type) {
  ConfigNode n;
  n.kind_ = Kind::kScalar;
  n.text_ = std::move(text);
  n.scalar_type_ = type;
  return n;
}

ConfigNode ConfigNode::Map() {
  ConfigNode n;
  n.kind_ = Kind::kMap;
  return n;
}

ConfigNode ConfigNode::List() {
  ConfigNode n;
  n.kind_ = Kind::kList;
  return n;
}

const char* ConfigNode::KindName() const {
  switch (kind_) {
    case Kind::kNull: return "null";
    case Kind::kScalar: return "a scalar";
    case Kind::kMap: return "a map";
    case Kind::kList: return "a list";
  }
  return "?";
}

bool ConfigNode::Has(std::string_view key) const { return Find(key) != nullptr; }

const ConfigNode* ConfigNode::Find(std::string_view key) const {
  for (const auto& [k, v] : entries_)
    if (k == key) return &v;
  return nullptr;
}

ConfigNode* ConfigNode::Find(std::string_view key) {
  for (auto& [k, v] : entries_)
    if (k == key) return &v;
  return nullptr;
}

const ConfigNode& ConfigNode::At(std::string_view key) const {
  if (!IsMap()) throw ConfigError(Where() + ": expected a map, got " + KindName());
  const ConfigNode* n = Find(key);
  if (n == nullptr) {
    throw ConfigError(Where() + (path_.empty() ? "" : ": ") + "missing key '" + std::string(key) +
                      "'");
  }
  return *n;
}

ConfigNode& ConfigNode::Set(std::string key, ConfigNode value) {
  if (kind_ == Kind::kNull) kind_ = Kind::kMap;
  PIM_CHECK(kind_ == Kind::kMap);
  std::string child_path = path_.empty() ? key : path_ + "." + key;
  for (auto& [k, v] : entries_) {
    if (k == key) {
      v = std::move(value);
      v.SetPaths(child_path);
      return v;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
  entries_.back().second.SetPaths(child_path);
  return entries_.back().second;
}

void ConfigNode::Erase(std::string_view key) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->first == key) {
      entries_.erase(it);
      return;
    }
  }
}

ConfigNode& ConfigNode::Append(ConfigNode value) {
  if (kind_ == Kind::kNull) kind_ = Kind::kList;
  PIM_CHECK(kind_ == Kind::kList);
  items_.push_back(std::move(value));
  items_.back().SetPaths(path_ + "[" + std::to_string(items_.size() - 1) + "]");
  return items_.back();
}

std::string ConfigNode::Where() const {
  if (origin_.empty()) return path_.empty() ? "config" : path_;
  if (path_.empty()) return origin_;
  // The value of "--set KEY=..." itself: its origin names the key already.
  if (origin_.size() == path_.size() + 6 && origin_.compare(0, 6, "--set ") == 0 &&
      origin_.compare(6, std::string::npos, path_) == 0) {
    return origin_;
  }
  return origin_ + ": " + path_;
}

void ConfigNode::SetPaths(const std::string& path) {
  path_ = path;
  for (auto& [k, v] : entries_) v.SetPaths(path.empty() ? k : path + "." + k);
  for (size_t i = 0; i < items_.size(); ++i) items_[i].SetPaths(path + "[" + std::to_string(i) + "]");
}

void ConfigNode::SetOriginIfEmpty(const std::string& origin) {
  if (origin_.empty()) origin_ = origin;
  for (auto& [k, v] : entries_) v.SetOriginIfEmpty(origin);
  for (auto& v : items_) v.SetOriginIfEmpty(origin);
}

bool ConfigNode::operator==(const ConfigNode& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::kNull: return true;
    case Kind::kScalar: return text_ == o.text_;
    case Kind::kList: return items_ == o.items_;
    case Kind::kMap:
      if (entries_.size() != o.entries_.size()) return false;
      for (const auto& [k, v] : entries_) {
        const ConfigNode* other = o.Find(k);
        if (other == nullptr || !(v == *other)) return false;
      }
      return true;
  }
  return false;
}

namespace {

[[noreturn]] void TypeError(const ConfigNode& n, const std::string& expected) {
  std::string got = n.IsScalar() ? "'" + n.text() + "'" : std::string(n.KindName());
  throw ConfigError(n.Where() + ": expected " + expected + ", got " + got);
}

}  // namespace

int64_t ConfigNode::AsInt() const {
  if (!IsScalar()) TypeError(*this, "an integer");
  int64_t v = 0;
  const char* b = text_.data();
  const char* e = b + text_.size();
  if (b != e && *b == '+') ++b;
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec == std::errc() && p == e) return v;
  // Accept integral floats written as 1e3 or 64.0.
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(text_.c_str(), &end);
  if (!text_.empty() && end == text_.c_str() + text_.size() && errno == 0 && std::isfinite(d) &&
      d == std::floor(d) && std::fabs(d) < 9.0e15) {
    return static_cast<int64_t>(d);
  }
  TypeError(*this, "an integer");
}

double ConfigNode::AsDouble() const {
  if (!IsScalar()) TypeError(*this, "a number");
  const std::string& t = text_;
  if (t == ".inf" || t == "inf" || t == "+.inf") return INFINITY;
  if (t == "-.inf" || t == "-inf") return -INFINITY;
  char* end = nullptr;
  errno = 0;
  double d = std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || errno == ERANGE || std::isnan(d)) {
    TypeError(*this, "a number");
  }
  return d;
}

bool ConfigNode::AsBool() const {
  if (IsScalar()) {
    const std::string& t = text_;
    if (t == "true" || t == "True" || t == "TRUE" || t == "yes" || t == "on") return true;
    if (t == "false" || t == "False" || t == "FALSE" || t == "no" || t == "off") return false;
  }
  TypeError(*this, "true or false");
}

std::string ConfigNode::AsString() const {
  if (!IsScalar()) TypeError(*this, "a string");
  return text_;
}

std::vector<int64_t> ConfigNode::AsIntList() const {
  if (!IsList()) TypeError(*this, "a list of integers");
  std::vector<int64_t> out;
  for (const auto& item : items_) out.push_back(item.AsInt());
  return out;
}

std::vector<double> ConfigNode::AsDoubleList() const {
  if (!IsList()) TypeError(*this, "a list of numbers");
  std::vector<double> out;
  for (const auto& item : items_) out.push_back(item.AsDouble());
  return out;
}

namespace {

// Offset of the first byte of `s` that is not part of well-formed UTF-8 (no overlong forms,
// surrogates or code points above U+10FFFF), or npos.
size_t FirstInvalidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char b = p[i + k];
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// Config text must be UTF-8: other bytes would not survive the YAML written into run
// directories and checkpoints, nor the JSON of summaries.
void RequireUtf8(const std::string& text, const char* what, const YAML::Mark& mark,
                 const std::string& origin) {
  const size_t bad = FirstInvalidUtf8(text);
  if (bad == std::string_view::npos) return;
  char byte[8];
  std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[bad]));
  throw ConfigError(origin + ":" + std::to_string(mark.line + 1) + ": not valid UTF-8 (byte " +
                    byte + " at offset " + std::to_string(bad) + " of a " +
                    what + "); save the file as UTF-8");
}

// Bounds on what one YAML text may expand to. Aliases make the node graph a DAG (and a
// recursive anchor, "a: &x [*x]", a cycle), so without them a few lines could recurse forever
// or expand to billions of nodes. Hand-written configs are a few levels deep and hold hundreds
// of values.
constexpr int kMaxYamlDepth = 64;
constexpr int64_t kMaxYamlNodes = 100000;

struct YamlBudget {
  int depth = 0;
  int64_t nodes = 0;
};

ConfigNode FromYaml(const YAML::Node& y, const std::string& origin, YamlBudget& budget) {
  auto where = [&] { return origin + ":" + std::to_string(y.Mark().line + 1); };
  if (budget.depth >= kMaxYamlDepth) {
    throw ConfigError(where() + ": nested more than " + std::to_string(kMaxYamlDepth) +
                      " levels deep (a recursive alias?)");
  }
  if (++budget.nodes > kMaxYamlNodes) {
    throw ConfigError(where() + ": expands to more than " + std::to_string(kMaxYamlNodes) +
                      " values (aliases repeated inside aliases?)");
  }
  struct Level {
    int& depth;
    explicit Level(int& d) : depth(++d) {}
    ~Level() { --depth; }
  } level(budget.depth);
  ConfigNode n;
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n = ConfigNode();
      break;
    case YAML::NodeType::Scalar:
      RequireUtf8(y.Scalar(), "value", y.Mark(), origin);
      n = ConfigNode::Scalar(y.Scalar(),
                             y.Tag() == "!" ? ScalarType::kString : ScalarType::kUnknown);
      break;
    case YAML::NodeType::Sequence:
      n = ConfigNode::List();
      for (const auto& item : y) n.Append(FromYaml(item, origin, budget));
      break;
    case YAML::NodeType::Map:
      n = ConfigNode::Map();
      for (const auto& kv : y) {
        if (!kv.first.IsScalar()) {
          throw ConfigError(origin + ":" + std::to_string(kv.first.Mark().line + 1) +
                            ": map keys must be plain names");
        }
        std::string key = kv.first.Scalar();
        RequireUtf8(key, "key", kv.first.Mark(), origin);
        if (n.Has(key)) {
          throw ConfigError(origin + ":" + std::to_string(kv.first.Mark().line + 1) +
                            ": duplicate key '" + key + "'");
        }
        n.Set(key, FromYaml(kv.second, origin, budget));
      }
      break;
  }
  if (!y.Mark().is_null()) n.set_origin(origin + ":" + std::to_string(y.Mark().line + 1));
  return n;
}

}  // namespace

ConfigNode ParseYaml(const std::string& text, const std::string& origin) {
  YAML::Node y;
  try {
    y = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ": malformed YAML: " + e.msg);
  }
  YamlBudget budget;
  ConfigNode n = FromYaml(y, origin, budget);
  n.SetPaths("");
  n.SetOriginIfEmpty(origin);
  return n;
}

ConfigNode LoadYamlFile(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IoError(file + ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError(file + ": read error");
  ConfigNode n = ParseYaml(ss.str(), file);
  if (!n.IsMap() && !n.IsNull()) {
    throw ConfigError(file + ": the top level of a config must be a map, got " + n.KindName());
  }
  if (n.IsNull()) n = ConfigNode::Map();
  return n;
}

void MergeInto(ConfigNode& base, const ConfigNode& overlay) {
  if (base.IsMap() && overlay.IsMap()) {
    for (const auto& [k, v] : overlay.entries()) {
      ConfigNode* existing = base.Find(k);
      // An overlay that switches an implementation replaces the whole block: the old
      // implementation's keys would not fit the new one's schema.
      bool impl_changed = existing != nullptr && existing->IsMap() && v.IsMap() &&
                          v.Has("impl") && existing->Has("impl") &&
                          !(v.At("impl") == existing->At("impl"));
      if (existing != nullptr && !impl_changed) {
        MergeInto(*existing, v);
      } else {
        base.Set(k, v);
      }
    }
    base.SetPaths(base.path());
    return;
  }
  std::string path = base.path();
  base = overlay;
  base.SetPaths(path);
}

namespace {

void ResetOrigin(ConfigNode& n, const std::string& origin) {
  n.set_origin(origin);
  for (auto& [k, v] : n.entries()) ResetOrigin(v, origin);
  for (auto& v : n.items()) ResetOrigin(v, origin);
}

// What the schema knows about the node the --set walk stands on: the schema of a map's keys, or
// the parameter whose value a list is (for its elements). Both null off the schema (kAny, or a
// component whose impl is unknown: validation reports that later).
struct WalkSchema {
  const Schema* map = nullptr;
  const Param* list = nullptr;
};

// A component in shorthand ("adam") as the block it stands for ({impl: adam}).
void ExpandShorthand(ConfigNode& n) {
  if (!n.IsScalar()) return;
  const std::string path = n.path();
  ConfigNode block = ConfigNode::Map();
  block.set_origin(n.origin());
  block.Set("impl", n);
  n = std::move(block);
  n.SetPaths(path);
}

const Schema* ComponentSchema(const ConfigNode& block, const std::string& role) {
  const ConfigNode* impl = block.IsMap() ? block.Find("impl") : nullptr;
  if (impl == nullptr || !impl->IsScalar()) return nullptr;
  const ImplInfo* info = RegistryIndex::Find(role, impl->text());
  return info == nullptr ? nullptr : &info->schema;
}

// The schema context below `child`, the value of `p` (null p: off the schema).
WalkSchema ChildSchema(const Param* p, ConfigNode& child) {
  if (p == nullptr) return {};
  switch (p->type()) {
    case ParamType::kSection: return {p->section().get(), nullptr};
    case ParamType::kComponent:
      ExpandShorthand(child);
      return {ComponentSchema(child, p->role()), nullptr};
    case ParamType::kIntList:
    case ParamType::kFloatList:
    case ParamType::kComponentList: return {nullptr, p};
    default: return {};
  }
}

}  // namespace

void ApplySet(ConfigNode& root, std::string_view assignment, const Schema* schema) {
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    throw ConfigError("--set " + std::string(assignment) + ": expected KEY=VALUE, e.g. train.epochs=3");
  }
  std::string key(assignment.substr(0, eq));
  std::string value(assignment.substr(eq + 1));
  ConfigNode parsed = ParseYaml(value.empty() ? "''" : value, "--set " + key);
  ResetOrigin(parsed, "--set " + key);

  // Walk "a.b[2].c", filling in schema defaults (or empty maps) for what the tree lacks.
  ConfigNode* cur = &root;
  ConfigNode* parent = nullptr;  // the map holding `cur` when the last step was a key
  std::string last_key;
  WalkSchema ws{schema, nullptr};
  size_t pos = 0;
  while (pos < key.size()) {
    size_t next = key.find_first_of(".[", pos);
    std::string part = key.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (part.empty()) throw ConfigError("--set " + key + ": empty key segment");
    if (cur->IsNull()) *cur = ConfigNode::Map();
    if (!cur->IsMap()) {
      throw ConfigError("--set " + key + ": '" + cur->path() + "' is " + cur->KindName() +
                        ", not a map");
    }
    const Param* param = ws.map == nullptr ? nullptr : ws.map->Find(part);
    ConfigNode* child = cur->Find(part);
    if (child == nullptr || child->IsNull()) {
      ConfigNode fill;
      if (param != nullptr && param->default_text().has_value()) {
        fill = ParseYaml(*param->default_text(), "default of " + part);
        ResetOrigin(fill, "default");
      }
      child = &cur->Set(part, std::move(fill));
    }
    parent = cur;
    last_key = part;
    ws = ChildSchema(param, *child);
    cur = child;
    pos = next == std::string::npos ? key.size() : next;
    while (pos < key.size() && key[pos] == '[') {
      size_t close = key.find(']', pos);
      if (close == std::string::npos) throw ConfigError("--set " + key + ": missing ']'");
      std::string idx_text = key.substr(pos + 1, close - pos - 1);
      int64_t idx = -1;
      auto [p, ec] = std::from_chars(idx_text.data(), idx_text.data() + idx_text.size(), idx);
      if (ec != std::errc() || p != idx_text.data() + idx_text.size() || idx < 0) {
        throw ConfigError("--set " + key + ": bad list index '" + idx_text + "'");
      }
      if (!cur->IsList() || static_cast<size_t>(idx) >= cur->items().size()) {
        throw ConfigError("--set " + key + ": '" + cur->path() + "' has no element [" +
                          idx_text + "]");
      }
      cur = &cur->items()[idx];
      parent = nullptr;
      if (ws.list != nullptr && ws.list->type() == ParamType::kComponentList) {
        ExpandShorthand(*cur);
        ws = {ComponentSchema(*cur, ws.list->role()), nullptr};
      } else {
        ws = {};
      }
      pos = close + 1;
    }
    if (pos < key.size()) {
      if (key[pos] != '.') throw ConfigError("--set " + key + ": unexpected '" + key[pos] + "'");
      ++pos;
    }
  }

  // "X.impl=NAME" switching X to another implementation: X becomes {impl: NAME}.
  if (parent != nullptr && last_key == "impl" && cur->IsScalar() && !(*cur == parsed)) {
    const std::string path = parent->path();
    const std::string origin = parent->origin();
    *parent = ConfigNode::Map();
    parent->set_origin(origin);
    parent->SetPaths(path);
    parent->Set("impl", parsed);
    return;
  }
  std::string path = cur->path();
  if (parsed.IsMap() && !parsed.Has("impl") && !parsed.Has("preset")) {
    // A map of keys changes those keys of what is there ({preset: NAME}, like {impl: NAME},
    // names a whole component: it replaces).
    if (cur->IsMap()) {
      MergeInto(*cur, parsed);
      cur->SetPaths(path);
      return;
    }
  }
  *cur = parsed;
  cur->SetPaths(path);
}

namespace {

void EmitYaml(const ConfigNode& n, YAML::Emitter& out) {
  switch (n.kind()) {
    case ConfigNode::Kind::kNull: out << YAML::Null; break;
    case ConfigNode::Kind::kScalar:
      if (n.scalar_type() == ScalarType::kString) {
        out << YAML::DoubleQuoted << n.text();
      } else {
        out << n.text();
      }
      break;
    case ConfigNode::Kind::kList: {
      bool flow = true;
      for (const auto& i : n.items()) flow = flow && i.IsScalar();
      if (flow) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& i : n.items()) EmitYaml(i, out);
      out << YAML::EndSeq;
      break;
    }
    case ConfigNode::Kind::kMap:
      out << YAML::BeginMap;
      for (const auto& [k, v] : n.entries()) {
        out << YAML::Key << k << YAML::Value;
        EmitYaml(v, out);
      }
      out << YAML::EndMap;
      break;
  }
}

nlohmann::ordered_json ToJsonValue(const ConfigNode& n) {
  switch (n.kind()) {
    case ConfigNode::Kind::kNull: return nullptr;
    case ConfigNode::Kind::kScalar:
      switch (n.scalar_type()) {
        case ScalarType::kInt: return n.AsInt();
        case ScalarType::kFloat: {
          double d = n.AsDouble();
          if (std::isfinite(d)) return d;
          return n.text();
        }
        case ScalarType::kBool: return n.AsBool();
        default: return n.text();
      }
    case ConfigNode::Kind::kList: {
      auto arr = nlohmann::ordered_json::array();
      for (const auto& i : n.items()) arr.push_back(ToJsonValue(i));
      return arr;
    }
    case ConfigNode::Kind::kMap: {
      auto obj = nlohmann::ordered_json::object();
      for (const auto& [k, v] : n.entries()) obj[k] = ToJsonValue(v);
      return obj;
    }
  }
  return nullptr;
}

}  // namespace

std::string ToYaml(const ConfigNode& node) {
  YAML::Emitter out;
  EmitYaml(node, out);
  return std::string(out.c_str()) + "\n";
}

std::string ToJson(const ConfigNode& node, int indent) { return ToJsonValue(node).dump(indent); }

}  // namespace pim
