// Schema validation: types, ranges, defaults, unknown keys with suggestions; the registry index.
#include "pimtrain/base/schema.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"

namespace pim {

const char* ParamTypeName(ParamType t) {
  switch (t) {
    case ParamType::kInt: return "integer";
    case ParamType::kFloat: return "number";
    case ParamType::kBool: return "bool";
    case ParamType::kString: return "string";
    case ParamType::kEnum: return "enum";
    case ParamType::kIntList: return "list of integers";
    case ParamType::kFloatList: return "list of numbers";
    case ParamType::kSection: return "section";
    case ParamType::kComponent: return "component";
    case ParamType::kComponentList: return "list of components";
    case ParamType::kAny: return "any";
  }
  return "?";
}

#define PIM_PARAM_CTOR(FN, TYPE)            \
  Param Param::FN(std::string name) {       \
    Param p;                                \
    p.name_ = std::move(name);              \
    p.type_ = ParamType::TYPE;              \
    return p;                               \
  }
PIM_PARAM_CTOR(Int, kInt)
PIM_PARAM_CTOR(Float, kFloat)
PIM_PARAM_CTOR(Bool, kBool)
PIM_PARAM_CTOR(String, kString)
PIM_PARAM_CTOR(IntList, kIntList)
PIM_PARAM_CTOR(FloatList, kFloatList)
PIM_PARAM_CTOR(Any, kAny)
#undef PIM_PARAM_CTOR

Param Param::Enum(std::string name, std::vector<std::string> choices) {
  Param p;
  p.name_ = std::move(name);
  p.type_ = ParamType::kEnum;
  p.choices_ = std::move(choices);
  return p;
}

Param Param::Section(std::string name, std::shared_ptr<const Schema> schema) {
  Param p;
  p.name_ = std::move(name);
  p.type_ = ParamType::kSection;
  p.section_ = std::move(schema);
  p.default_ = "{}";
  return p;
}

Param Param::Component(std::string name, std::string role) {
  Param p;
  p.name_ = std::move(name);
  p.type_ = ParamType::kComponent;
  p.role_ = std::move(role);
  return p;
}

Param Param::ComponentList(std::string name, std::string role) {
  Param p;
  p.name_ = std::move(name);
  p.type_ = ParamType::kComponentList;
  p.role_ = std::move(role);
  return p;
}

Param& Param::Default(std::string yaml_text) {
  default_ = std::move(yaml_text);
  return *this;
}

Param& Param::Default(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  std::string s = os.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return Default(s);
}

Param& Param::Range(double lo, double hi) {
  lo_ = lo;
  hi_ = hi;
  has_range_ = true;
  return *this;
}

Param& Param::Unit(std::string unit) {
  unit_ = std::move(unit);
  return *this;
}

Param& Param::Doc(std::string description) {
  doc_ = std::move(description);
  return *this;
}

Param& Param::Optional() {
  optional_ = true;
  return *this;
}

namespace {

std::string FormatNumber(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(10);
  os << v;
  return os.str();
}

std::string Join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

}  // namespace

std::string Param::TypeDescription() const {
  std::string s = ParamTypeName(type_);
  if (type_ == ParamType::kEnum) return "one of {" + Join(choices_, ", ") + "}";
  if (type_ == ParamType::kComponent) return role_ + " component";
  if (type_ == ParamType::kComponentList) return "list of " + role_ + " components";
  if (has_range_) s += " in [" + FormatNumber(lo_) + ", " + FormatNumber(hi_) + "]";
  return s;
}

Schema& Schema::Add(Param p) {
  PIM_CHECK_MSG(Find(p.name()) == nullptr, "duplicate schema parameter " + p.name());
  params_.push_back(std::move(p));
  return *this;
}

const Param* Schema::Find(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name() == name) return &p;
  return nullptr;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string DidYouMean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  // Close enough: at most a third of the word's letters wrong (and at least one allowed).
  if (best.empty() || best_d > std::max<size_t>(2, word.size() / 3)) return "";
  return " (did you mean '" + best + "'?)";
}

namespace {

void CheckRange(const Param& p, const ConfigNode& n, double v) {
  if (p.has_range() && (v < p.lo() || v > p.hi())) {
    throw ConfigError(n.Where() + ": " + n.text() + " is outside [" + FormatNumber(p.lo()) +
                      ", " + FormatNumber(p.hi()) + "]" +
                      (p.unit().empty() ? "" : " " + p.unit()));
  }
}

ConfigNode ValidateValue(const Param& p, const ConfigNode& n) {
  ConfigNode out = n;
  auto need_scalar = [&](const char* what) {
    if (!n.IsScalar()) {
      throw ConfigError(n.Where() + ": expected " + what + ", got " + n.KindName());
    }
  };
  switch (p.type()) {
    case ParamType::kInt:
      need_scalar("an integer");
      CheckRange(p, n, static_cast<double>(n.AsInt()));
      out = ConfigNode::Scalar(std::to_string(n.AsInt()), ScalarType::kInt);
      break;
    case ParamType::kFloat:
      need_scalar("a number");
      CheckRange(p, n, n.AsDouble());
      out.set_scalar_type(ScalarType::kFloat);
      break;
    case ParamType::kBool:
      need_scalar("true or false");
      out = ConfigNode::Scalar(n.AsBool() ? "true" : "false", ScalarType::kBool);
      break;
    case ParamType::kString:
      need_scalar("a string");
      out.set_scalar_type(ScalarType::kString);
      break;
    case ParamType::kEnum: {
      need_scalar("a string");
      const auto& c = p.choices();
      if (std::find(c.begin(), c.end(), n.text()) == c.end()) {
        throw ConfigError(n.Where() + ": '" + n.text() + "' is not one of {" + Join(c, ", ") + "}" +
                          DidYouMean(n.text(), c));
      }
      out.set_scalar_type(ScalarType::kString);
      break;
    }
    case ParamType::kIntList:
    case ParamType::kFloatList: {
      if (!n.IsList()) {
        throw ConfigError(n.Where() + ": expected " + ParamTypeName(p.type()) + ", got " +
                          n.KindName());
      }
      out = ConfigNode::List();
      for (const auto& item : n.items()) {
        if (p.type() == ParamType::kIntList) {
          CheckRange(p, item, static_cast<double>(item.AsInt()));
          out.Append(ConfigNode::Scalar(std::to_string(item.AsInt()), ScalarType::kInt));
        } else {
          CheckRange(p, item, item.AsDouble());
          ConfigNode v = item;
          v.set_scalar_type(ScalarType::kFloat);
          out.Append(v);
        }
      }
      break;
    }
    case ParamType::kSection:
      if (n.IsNull()) {
        out = p.section()->Validate(ConfigNode::Map());
      } else {
        out = p.section()->Validate(n);
      }
      break;
    case ParamType::kComponent:
      if (n.IsMap() && !n.Has("impl") && !n.Has("preset") && p.default_text().has_value()) {
        // Keys without an impl change the default component ({learning_rate: 0.01} under
        // train.optimizer is the default SGD with that rate), as a --set of each key would.
        ConfigNode block = ParseYaml(*p.default_text(), "default of " + p.name());
        block.SetOriginIfEmpty("default");
        if (block.IsScalar()) block = ParseYaml("{impl: " + *p.default_text() + "}", "default");
        block.SetPaths(n.path());
        MergeInto(block, n);
        block.set_origin(n.origin());
        out = ValidateComponent(block, p.role());
      } else {
        out = ValidateComponent(n, p.role());
      }
      break;
    case ParamType::kComponentList: {
      if (!n.IsList()) {
        throw ConfigError(n.Where() + ": expected a list of " + p.role() + " components, got " +
                          n.KindName());
      }
      out = ConfigNode::List();
      for (const auto& item : n.items()) out.Append(ValidateComponent(item, p.role()));
      break;
    }
    case ParamType::kAny: break;
  }
  out.set_origin(n.origin());
  return out;
}

}  // namespace

ConfigNode Schema::Validate(const ConfigNode& node, bool allow_impl) const {
  if (!node.IsMap()) {
    throw ConfigError(node.Where() + ": expected a map, got " + node.KindName());
  }
  std::vector<std::string> names;
  for (const auto& p : params_) names.push_back(p.name());
  for (const auto& [k, v] : node.entries()) {
    if (allow_impl && k == "impl") continue;
    if (Find(k) == nullptr) {
      std::string where = node.path().empty() ? k : node.path() + "." + k;
      std::string origin = v.origin().empty() ? "" : v.origin() + ": ";
      throw ConfigError(origin + "unknown key '" + where + "'" + DidYouMean(k, names) +
                        (names.empty() ? "; this block takes no keys"
                                       : "; known keys: " + Join(names, ", ")));
    }
  }
  ConfigNode out = ConfigNode::Map();
  out.set_origin(node.origin());
  out.SetPaths(node.path());
  if (allow_impl && node.Has("impl")) out.Set("impl", node.At("impl"));
  for (const auto& p : params_) {
    const ConfigNode* given = node.Find(p.name());
    if (given != nullptr && !given->IsNull()) {
      ConfigNode child = *given;
      out.Set(p.name(), ValidateValue(p, child));
      continue;
    }
    if (p.default_text().has_value()) {
      ConfigNode def = ParseYaml(*p.default_text(), "default of " + p.name());
      def.set_origin("default");
      def.SetPaths(node.path().empty() ? p.name() : node.path() + "." + p.name());
      // Null default text ("~") means "no value": keep it as null.
      if (def.IsNull()) {
        out.Set(p.name(), def);
      } else {
        out.Set(p.name(), ValidateValue(p, def));
      }
      continue;
    }
    if (p.optional()) continue;
    std::string where = node.path().empty() ? p.name() : node.path() + "." + p.name();
    throw ConfigError(node.Where() + ": missing required key '" + where + "' (" +
                      p.TypeDescription() + (p.doc().empty() ? "" : ": " + p.doc()) + ")");
  }
  out.SetPaths(node.path());
  return out;
}

ConfigNode ValidateComponent(const ConfigNode& node, const std::string& role) {
  ConfigNode block = node;
  if (node.IsScalar()) {  // shorthand: `optimizer: adam`
    block = ConfigNode::Map();
    block.set_origin(node.origin());
    block.SetPaths(node.path());
    block.Set("impl", node);
  }
  if (!block.IsMap()) {
    throw ConfigError(node.Where() + ": expected a " + role + " block like {impl: NAME, ...}, got " +
                      node.KindName());
  }
  const ConfigNode* impl = block.Find("impl");
  std::vector<std::string> names;
  for (const auto* info : RegistryIndex::Implementations(role)) names.push_back(info->name);
  if (impl == nullptr) {
    throw ConfigError(block.Where() + ": missing 'impl' (the " + role + " to use; one of {" +
                      Join(names, ", ") + "})");
  }
  const ImplInfo* info = RegistryIndex::Find(role, impl->AsString());
  if (info == nullptr) {
    throw ConfigError(impl->Where() + ": unknown " + role + " '" + impl->text() + "'" +
                      DidYouMean(impl->text(), names) + "; known: " + Join(names, ", "));
  }
  ConfigNode out = info->schema.Validate(block, /*allow_impl=*/true);
  out.Find("impl")->set_scalar_type(ScalarType::kString);
  return out;
}

std::map<std::string, std::map<std::string, ImplInfo>>& RegistryIndex::Table() {
  static std::map<std::string, std::map<std::string, ImplInfo>> table;
  return table;
}

void RegistryIndex::Add(ImplInfo info) {
  auto& role = Table()[info.role];
  PIM_CHECK_MSG(role.find(info.name) == role.end(),
                "duplicate registration " + info.role + "/" + info.name);
  std::string name = info.name;
  role.emplace(std::move(name), std::move(info));
}

const ImplInfo* RegistryIndex::Find(const std::string& role, const std::string& name) {
  auto r = Table().find(role);
  if (r == Table().end()) return nullptr;
  auto i = r->second.find(name);
  return i == r->second.end() ? nullptr : &i->second;
}

std::vector<std::string> RegistryIndex::Roles() {
  std::vector<std::string> out;
  for (const auto& [k, v] : Table()) out.push_back(k);
  return out;
}

std::vector<const ImplInfo*> RegistryIndex::Implementations(const std::string& role) {
  std::vector<const ImplInfo*> out;
  auto r = Table().find(role);
  if (r == Table().end()) return out;
  for (const auto& [k, v] : r->second) out.push_back(&v);
  return out;
}

}  // namespace pim
