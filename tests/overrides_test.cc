// --set, Python sets= and sweep axes change one key of the resolved config, defaults included:
// every key of every role's default component, and of every implementation `describe` lists.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/sim/sweep.h"
#include "test_util.h"

namespace pim {
namespace {

ConfigNode Resolve(const std::vector<std::string>& sets) {
  ConfigNode merged = ConfigNode::Map();
  for (const auto& s : sets) ApplySet(merged, s, &RootSchema());
  return ValidateRoot(merged);
}

// The node at "a.b.c" of a resolved config (nullptr when absent).
const ConfigNode* At(const ConfigNode& root, const std::string& dotted) {
  const ConfigNode* n = &root;
  std::stringstream ss(dotted);
  for (std::string part; std::getline(ss, part, '.');) {
    if (n == nullptr || !n->IsMap()) return nullptr;
    n = n->Find(part);
  }
  return n;
}

std::string Num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

// A valid value of scalar parameter `p` that differs from its default ("" when there is none
// this test can make: a free-form key, or a range with one point).
std::string ChangedValue(const Param& p, const ConfigNode* current) {
  const std::string def = current != nullptr && current->IsScalar()
                              ? current->text()
                              : p.default_text().value_or("~");
  const bool has_def = def != "~" && !def.empty();
  switch (p.type()) {
    case ParamType::kInt: {
      const double lo = p.has_range() ? p.lo() : -1e9, hi = p.has_range() ? p.hi() : 1e9;
      const int64_t d = has_def ? ParseYaml(def, "d").AsInt() : static_cast<int64_t>(std::max(lo, 1.0));
      if (!has_def && d >= lo && d <= hi) return std::to_string(d);
      if (d + 1 <= hi) return std::to_string(d + 1);
      if (d - 1 >= lo) return std::to_string(d - 1);
      return "";
    }
    case ParamType::kFloat: {
      const double lo = p.has_range() ? p.lo() : -1e9, hi = p.has_range() ? p.hi() : 1e9;
      const double d = has_def ? ParseYaml(def, "d").AsDouble() : NAN;
      for (double c : {d * 0.5, d * 1.5, d + 0.25, d - 0.25, 0.5, (std::isfinite(lo) ? lo : 0.0),
                       0.375 * (std::isfinite(lo) ? lo : 0.0) + 0.625 * (std::isfinite(hi) ? hi : 1.0)}) {
        if (std::isfinite(c) && c >= lo && c <= hi && !(has_def && c == d)) return Num(c);
      }
      return "";
    }
    case ParamType::kBool: return has_def && ParseYaml(def, "d").AsBool() ? "false" : "true";
    case ParamType::kEnum:
      for (const auto& c : p.choices()) {
        if (!has_def || c != def) return c;
      }
      return "";
    case ParamType::kString: return "probe-value";
    default: return "";
  }
}

struct Probe {
  std::string key;    // "train.optimizer.learning_rate" or "model.layers[1]"
  std::string value;  // YAML text
};

// Every key of `schema` (recursing into sections and default components) that can be changed
// on its own, at `prefix`.
// `resolved` is the resolved config's map at `prefix` (what the probes change).
void CollectProbes(const Schema& schema, const std::string& prefix, const ConfigNode& resolved,
                   std::vector<Probe>& out) {
  for (const auto& p : schema.params()) {
    const std::string key = prefix + p.name();
    const ConfigNode* current = resolved.IsMap() ? resolved.Find(p.name()) : nullptr;
    switch (p.type()) {
      case ParamType::kSection:
        ASSERT_NE(current, nullptr) << key;
        // An optional section that is off by default (`Default("~")`, e.g. an analog macro's
        // io or deployment block): setting a key inside switches the whole block on, so its
        // other keys appear too; like a component without a default, nothing to probe alone.
        if (current->IsNull()) break;
        CollectProbes(*p.section(), key + ".", *current, out);
        break;
      case ParamType::kComponent: {
        if (current == nullptr || current->IsNull()) break;  // no default: nothing inside
        const ImplInfo* info = RegistryIndex::Find(p.role(), current->GetString("impl"));
        ASSERT_NE(info, nullptr) << key;
        CollectProbes(info->schema, key + ".", *current, out);
        break;
      }
      case ParamType::kIntList:
      case ParamType::kFloatList: {
        if (current == nullptr || !current->IsList() || current->items().empty()) break;
        const ConfigNode& def = *current;
        // One element of the default list, as "model.layers[1]=512" would.
        const size_t last = def.items().size() - 1;
        const double v = def.items()[last].AsDouble();
        double c = v + 1;
        if (p.has_range() && c > p.hi()) c = v - 1;
        if (p.type() == ParamType::kFloatList) c = v * 0.5 + (p.has_range() ? 0.5 * p.lo() : 0);
        if (p.has_range() && (c < p.lo() || c > p.hi())) break;
        out.push_back({key + "[" + std::to_string(last) + "]",
                       p.type() == ParamType::kIntList ? std::to_string(static_cast<int64_t>(c))
                                                       : Num(c)});
        break;
      }
      default: {
        std::string v = ChangedValue(p, current);
        if (!v.empty()) out.push_back({key, v});
      }
    }
  }
}

// `changed` differs from `base` at exactly `key` (a dotted path, maybe ending in [i]), where it
// holds `value`.
void ExpectOnlyKeyChanged(const ConfigNode& base, const ConfigNode& changed, const Probe& probe,
                          const std::string& context) {
  std::string key = probe.key;
  const size_t bracket = key.find('[');
  const std::string map_key = bracket == std::string::npos ? key : key.substr(0, bracket);
  EXPECT_EQ(FirstDifference(base, changed, {map_key}), "") << context << probe.key;
  EXPECT_EQ(FirstDifference(changed, base, {map_key}), "") << context << probe.key;
  const ConfigNode* n = At(changed, map_key);
  ASSERT_NE(n, nullptr) << context << probe.key;
  if (bracket != std::string::npos) {
    const size_t idx = std::stoul(key.substr(bracket + 1));
    ASSERT_TRUE(n->IsList());
    ASSERT_LT(idx, n->items().size());
    const ConfigNode* b = At(base, map_key);
    ASSERT_EQ(b->items().size(), n->items().size()) << context << probe.key;
    for (size_t i = 0; i < n->items().size(); ++i) {
      if (i == idx) {
        EXPECT_EQ(n->items()[i].AsDouble(), ParseYaml(probe.value, "v").AsDouble());
      } else {
        EXPECT_EQ(n->items()[i].text(), b->items()[i].text()) << context << probe.key;
      }
    }
    return;
  }
  const ConfigNode want = ParseYaml(probe.value, "v");
  if (n->scalar_type() == ScalarType::kFloat || n->scalar_type() == ScalarType::kInt) {
    EXPECT_EQ(n->AsDouble(), want.AsDouble()) << context << probe.key;
  } else if (n->scalar_type() == ScalarType::kBool) {
    EXPECT_EQ(n->AsBool(), want.AsBool()) << context << probe.key;
  } else {
    EXPECT_EQ(n->text(), want.text()) << context << probe.key;
  }
}

// The root's default components, by the key they sit at.
std::vector<std::pair<std::string, const Param*>> RootComponents() {
  std::vector<std::pair<std::string, const Param*>> out;
  for (const auto& p : RootSchema().params()) {
    if (p.type() == ParamType::kComponent) out.push_back({p.name(), &p});
    if (p.type() == ParamType::kSection) {
      for (const auto& q : p.section()->params()) {
        if (q.type() == ParamType::kComponent) out.push_back({p.name() + "." + q.name(), &q});
      }
    }
  }
  return out;
}

TEST(OverridesTest, TheIssuesExamplesChangeOneKeyOfTheDefaultComponent) {
  const ConfigNode base = Resolve({});
  ConfigNode c = Resolve({"train.optimizer.learning_rate=0.01"});
  EXPECT_EQ(c.At("train").At("optimizer").GetString("impl"), "sgd");
  EXPECT_DOUBLE_EQ(c.At("train").At("optimizer").GetDouble("learning_rate"), 0.01);
  EXPECT_DOUBLE_EQ(c.At("train").At("optimizer").GetDouble("momentum"), 0.9);  // the root default
  c = Resolve({"model.layers=[784, 512, 10]"});
  EXPECT_EQ(c.At("model").GetString("impl"), "mlp");
  EXPECT_EQ(c.At("model").At("layers").AsIntList(), (std::vector<int64_t>{784, 512, 10}));
  c = Resolve({"model.layers[1]=512"});
  EXPECT_EQ(c.At("model").At("layers").AsIntList(), (std::vector<int64_t>{784, 512, 128, 10}));
  EXPECT_EQ(FirstDifference(base, c, {"model.layers"}), "");
}

TEST(OverridesTest, EveryKeyOfEveryDefaultComponentChangesAlone) {
  const ConfigNode base = Resolve({});
  std::vector<Probe> probes;
  CollectProbes(RootSchema(), "", base, probes);
  // Each role's default component is covered.
  for (const auto& [key, param] : RootComponents()) {
    if (!param->default_text().has_value()) continue;
    bool covered = false;
    for (const auto& pr : probes) covered = covered || pr.key.rfind(key + ".", 0) == 0;
    const ConfigNode def = ParseYaml(*param->default_text(), "d");
    const std::string impl = def.IsScalar() ? def.text() : def.GetString("impl");
    if (!RegistryIndex::Find(param->role(), impl)->schema.params().empty()) {
      EXPECT_TRUE(covered) << key << " (" << param->role() << "/" << impl << ")";
    }
  }
  for (const char* must : {"train.optimizer.learning_rate", "model.layers[3]", "data.train_limit",
                           "train.epochs", "limits.max_memory_bytes"}) {
    bool found = false;
    for (const auto& pr : probes) found = found || pr.key == must;
    EXPECT_TRUE(found) << must;
  }
  ASSERT_GT(probes.size(), 20u);
  for (const auto& pr : probes) {
    SCOPED_TRACE(pr.key + "=" + pr.value);
    ConfigNode c;
    try {
      c = Resolve({pr.key + "=" + pr.value});
    } catch (const Error& e) {
      ADD_FAILURE() << e.what();
      continue;
    }
    ExpectOnlyKeyChanged(base, c, pr, "");
  }
}

TEST(OverridesTest, EveryKeyOfEveryImplementationChangesAloneAfterAnExplicitReplacement) {
  int tried = 0;
  for (const auto& [key, param] : RootComponents()) {
    for (const ImplInfo* info : RegistryIndex::Implementations(param->role())) {
      const std::string replace = key + "={impl: " + info->name + "}";
      ConfigNode base;
      try {
        base = Resolve({replace});
      } catch (const Error&) {
        continue;  // needs keys without defaults (a cost model's technology, a model's layers)
      }
      // Replacement is whole: only the new implementation's keys.
      for (const auto& [k, v] : At(base, key)->entries()) {
        EXPECT_TRUE(k == "impl" || info->schema.Find(k) != nullptr) << replace << ": " << k;
      }
      std::vector<Probe> probes;
      CollectProbes(info->schema, key + ".", *At(base, key), probes);
      for (const auto& pr : probes) {
        SCOPED_TRACE(replace + " " + pr.key + "=" + pr.value);
        ConfigNode c;
        try {
          c = Resolve({replace, pr.key + "=" + pr.value});
        } catch (const Error& e) {
          ADD_FAILURE() << e.what();
          continue;
        }
        ExpectOnlyKeyChanged(base, c, pr, "");
        ++tried;
      }
    }
  }
  EXPECT_GT(tried, 100);
}

TEST(OverridesTest, ReplacingAComponentIsExplicitAndDropsTheOldKeys) {
  ConfigNode c = Resolve({"train.optimizer.momentum=0.5", "train.optimizer={impl: adam}"});
  EXPECT_EQ(c.At("train").At("optimizer").GetString("impl"), "adam");
  EXPECT_FALSE(c.At("train").At("optimizer").Has("momentum"));
  // The shorthand replaces too; and switching `impl` replaces the block (the old keys would
  // not fit the new implementation's schema).
  EXPECT_EQ(Resolve({"train.optimizer=adam"}).At("train").At("optimizer"),
            Resolve({"train.optimizer={impl: adam}"}).At("train").At("optimizer"));
  EXPECT_EQ(Resolve({"train.optimizer.impl=adam"}).At("train").At("optimizer"),
            Resolve({"train.optimizer={impl: adam}"}).At("train").At("optimizer"));
  // Keys set after the switch apply to the new implementation.
  c = Resolve({"train.optimizer.impl=adam", "train.optimizer.learning_rate=0.002"});
  EXPECT_DOUBLE_EQ(c.At("train").At("optimizer").GetDouble("learning_rate"), 0.002);
  // A map without impl changes only its keys.
  c = Resolve({"train.optimizer={learning_rate: 0.01}"});
  EXPECT_EQ(c.At("train").At("optimizer").GetString("impl"), "sgd");
  EXPECT_DOUBLE_EQ(c.At("train").At("optimizer").GetDouble("momentum"), 0.9);
  c = Resolve({"train={epochs: 2}"});
  EXPECT_EQ(c.At("train").At("optimizer"), Resolve({}).At("train").At("optimizer"));
}

TEST(OverridesTest, AModelPresetReplacesTheDefaultModel) {
  // {preset: NAME} names a whole model, like {impl: NAME}: it must not merge into the default
  // mlp's keys.
  ConfigNode c = Resolve({"model={preset: vit_tiny}"});
  EXPECT_FALSE(c.At("model").Has("layers"));
  EXPECT_EQ(c.At("model"), Resolve({"model.impl=mlp", "model={preset: vit_tiny}"}).At("model"));
}

TEST(OverridesTest, AFileBlockWithoutImplChangesTheDefaultComponent) {
  ConfigNode c = testing::ResolveYaml("train: {optimizer: {learning_rate: 0.01}}\n", "f.yaml");
  EXPECT_EQ(c.At("train").At("optimizer").GetString("impl"), "sgd");
  EXPECT_DOUBLE_EQ(c.At("train").At("optimizer").GetDouble("momentum"), 0.9);
  // A file that names the impl gets that implementation's own defaults.
  c = testing::ResolveYaml("train: {optimizer: {impl: sgd, learning_rate: 0.01}}\n", "f.yaml");
  EXPECT_DOUBLE_EQ(c.At("train").At("optimizer").GetDouble("momentum"), 0.0);
  // A component without a default still needs its impl.
  try {
    Resolve({"pim.macro.adc_bits=4"});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("pim.macro: missing 'impl'"), std::string::npos)
        << e.what();
  }
}

TEST(OverridesTest, SetsIntoDefaultsKeepTheirErrorsOneLineWithTheKey) {
  for (const char* bad : {"train.optimizer.learning_rat=0.1", "model.layers[9]=3",
                          "train.optimizer.learning_rate=abc"}) {
    try {
      Resolve({bad});
      ADD_FAILURE() << bad;
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string(bad).substr(0, 15)), std::string::npos) << msg;
    }
  }
}

TEST(OverridesTest, SweepAxesChangeOneKeyOfTheDefaults) {
  testing::TempDir dir;
  const std::string sweep = dir.File("sweep.yaml");
  WriteFileAtomic(sweep, "out: " + dir.File("out") +
                             "\ngrid:\n  train.optimizer.learning_rate: [0.01, 0.02]\n"
                             "  model.layers[1]: [32, 64]\n");
  {
    SweepSpec spec = LoadSweep(sweep);
    ASSERT_EQ(spec.points.size(), 4u);
    const ConfigNode& opt = spec.points[3].resolved.At("train").At("optimizer");
    EXPECT_EQ(opt.GetString("impl"), "sgd");
    EXPECT_DOUBLE_EQ(opt.GetDouble("learning_rate"), 0.02);
    EXPECT_DOUBLE_EQ(opt.GetDouble("momentum"), 0.9);
    EXPECT_EQ(spec.points[3].resolved.At("model").At("layers").AsIntList(),
              (std::vector<int64_t>{784, 64, 128, 10}));
  }
}

TEST(OverridesTest, TheCliTrainsTheDefaultRunWithAKeyOfADefaultComponentChanged) {
  testing::TempDir dir;
  testing::WriteTinyMnist(dir.path(), 60, 30, 28, /*gzip=*/false);
  const std::string cmd = std::string(PIMTRAIN_CLI) + " train --set data.dir=" + dir.path() +
                          " --set train.optimizer.learning_rate=0.01 --set model.layers[1]=16" +
                          " --set model.layers[2]=8 --set train.epochs=1 --out " +
                          dir.File("run");
  testing::CommandResult r = testing::RunCommand(cmd);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string yaml = ReadFile(dir.File("run/config.yaml"));
  ConfigNode saved = ValidateRoot(ParseYaml(yaml, "config.yaml"));
  EXPECT_DOUBLE_EQ(saved.At("train").At("optimizer").GetDouble("learning_rate"), 0.01);
  EXPECT_EQ(saved.At("model").At("layers").AsIntList(), (std::vector<int64_t>{784, 16, 8, 10}));
}

}  // namespace
}  // namespace pim
