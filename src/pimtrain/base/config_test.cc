// Tests of ConfigNode, YAML parsing, merging, --set overrides and schema validation messages.
#include <gtest/gtest.h>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/schema.h"

namespace pim {
namespace {

// Expects `fn` to throw ConfigError whose message contains every fragment.
template <class Fn>
void ExpectConfigError(Fn fn, std::initializer_list<const char*> fragments) {
  try {
    fn();
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
    for (const char* f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << msg;
  }
}

TEST(ConfigTest, ParsesNestedYamlWithPathsAndOrigins) {
  ConfigNode n = ParseYaml("a:\n  b: [1, 2, 3]\n  c: {d: x}\n", "f.yaml");
  EXPECT_EQ(n.At("a").At("b").AsIntList(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(n.At("a").At("c").At("d").path(), "a.c.d");
  EXPECT_EQ(n.At("a").At("b").items()[2].path(), "a.b[2]");
  EXPECT_EQ(n.At("a").At("c").At("d").origin(), "f.yaml:3");
}

TEST(ConfigTest, MalformedYamlNamesFileAndLine) {
  ExpectConfigError([] { ParseYaml("a: [1, 2\nb: 3\n", "bad.yaml"); }, {"bad.yaml:", "malformed"});
}

TEST(ConfigTest, DuplicateKeyIsAnError) {
  ExpectConfigError([] { ParseYaml("a: 1\na: 2\n", "dup.yaml"); }, {"dup.yaml:2", "duplicate", "'a'"});
}

TEST(ConfigTest, MergeOverridesLeavesAndKeepsSiblings) {
  ConfigNode base = ParseYaml("train: {epochs: 5, batch_size: 64}\nseed: 1\n", "a");
  MergeInto(base, ParseYaml("train: {epochs: 2}\n", "b"));
  EXPECT_EQ(base.At("train").GetInt("epochs"), 2);
  EXPECT_EQ(base.At("train").GetInt("batch_size"), 64);
  EXPECT_EQ(base.GetInt("seed"), 1);
}

TEST(ConfigTest, MergeWithDifferentImplReplacesTheBlock) {
  ConfigNode base = ParseYaml("opt: {impl: sgd, momentum: 0.9}\n", "a");
  MergeInto(base, ParseYaml("opt: {impl: adam}\n", "b"));
  EXPECT_FALSE(base.At("opt").Has("momentum"));
}

TEST(ConfigTest, SetOverridesNestedKeysAndListElements) {
  ConfigNode n = ParseYaml("model: {layers: [{k: 1}, {k: 2}]}\n", "a");
  ApplySet(n, "model.layers[1].k=7");
  ApplySet(n, "train.epochs=3");
  ApplySet(n, "model.widths=[1, 2]");
  EXPECT_EQ(n.At("model").At("layers").items()[1].GetInt("k"), 7);
  EXPECT_EQ(n.At("train").GetInt("epochs"), 3);
  EXPECT_EQ(n.At("model").At("widths").AsIntList(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(n.At("train").At("epochs").origin(), "--set train.epochs");
}

TEST(ConfigTest, SetRejectsBadSyntax) {
  ConfigNode n = ParseYaml("a: {b: [1]}\n", "a");
  ExpectConfigError([&] { ApplySet(n, "novalue"); }, {"KEY=VALUE"});
  ExpectConfigError([&] { ApplySet(n, "a.b[5]=1"); }, {"no element [5]"});
  ExpectConfigError([&] { ApplySet(n, "a.b[x]=1"); }, {"bad list index"});
}

TEST(ConfigTest, TypedGettersRejectWrongTypes) {
  ConfigNode n = ParseYaml("a: hello\nb: 1.5\nc: [1]\n", "t.yaml");
  ExpectConfigError([&] { n.At("a").AsInt(); }, {"t.yaml:1: a", "expected an integer", "'hello'"});
  ExpectConfigError([&] { n.At("b").AsInt(); }, {"expected an integer"});
  ExpectConfigError([&] { n.At("c").AsDouble(); }, {"expected a number", "a list"});
  EXPECT_EQ(ParseYaml("x: 1e3", "t").At("x").AsInt(), 1000);
}

TEST(ConfigTest, JsonKeepsValidatedTypes) {
  Schema s;
  s.Add(Param::Int("n").Default(3));
  s.Add(Param::Float("f").Default(0.5));
  s.Add(Param::Bool("b").Default(true));
  s.Add(Param::String("s").Default("'007'"));
  ConfigNode v = s.Validate(ConfigNode::Map());
  EXPECT_EQ(ToJson(v), R"({"n":3,"f":0.5,"b":true,"s":"007"})");
}

// A tiny role to exercise component validation.
struct Widget {
  static constexpr const char* kRoleName = "test_widget";
  virtual ~Widget() = default;
};
struct Gear : Widget {
  explicit Gear(const ConfigNode&) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("teeth").Default(12).Range(4, 64).Doc("number of teeth"));
    s.Add(Param::Enum("metal", {"steel", "brass"}).Default("steel"));
    return s;
  }
};
PIM_REGISTER(Widget, Gear, "gear", "a test gear");

Schema HostSchema() {
  Schema s;
  s.Add(Param::Component("widget", "test_widget").Default("{impl: gear}"));
  s.Add(Param::ComponentList("parts", "test_widget").Default("[]"));
  s.Add(Param::Float("rate").Default(0.1).Range(0, 1).Unit("1/s"));
  s.Add(Param::Int("count").Optional());
  return s;
}

TEST(SchemaTest, FillsDefaultsRecursively) {
  ConfigNode v = HostSchema().Validate(ConfigNode::Map());
  EXPECT_EQ(v.At("widget").GetInt("teeth"), 12);
  EXPECT_EQ(v.At("widget").GetString("metal"), "steel");
  EXPECT_DOUBLE_EQ(v.GetDouble("rate"), 0.1);
  EXPECT_FALSE(v.Has("count"));
}

TEST(SchemaTest, UnknownKeySuggestsTheClosestName) {
  ExpectConfigError([] { HostSchema().Validate(ParseYaml("raet: 0.2\n", "h.yaml")); },
                    {"h.yaml:1", "unknown key 'raet'", "did you mean 'rate'"});
  ExpectConfigError(
      [] { HostSchema().Validate(ParseYaml("widget: {impl: gear, teth: 5}\n", "h.yaml")); },
      {"unknown key 'widget.teth'", "did you mean 'teeth'"});
}

TEST(SchemaTest, OutOfRangeNamesFullPathAndRange) {
  ExpectConfigError(
      [] { HostSchema().Validate(ParseYaml("parts: [{impl: gear}, {impl: gear, teeth: 99}]\n", "h.yaml")); },
      {"parts[1].teeth", "99 is outside [4, 64]"});
  ExpectConfigError([] { HostSchema().Validate(ParseYaml("rate: 2\n", "h.yaml")); },
                    {"rate", "outside [0, 1] 1/s"});
}

TEST(SchemaTest, WrongTypeAndBadEnumAreNamed) {
  ExpectConfigError([] { HostSchema().Validate(ParseYaml("rate: fast\n", "h.yaml")); },
                    {"rate", "expected a number", "'fast'"});
  ExpectConfigError(
      [] { HostSchema().Validate(ParseYaml("widget: {impl: gear, metal: bras}\n", "h.yaml")); },
      {"widget.metal", "not one of {steel, brass}", "did you mean 'brass'"});
}

TEST(SchemaTest, UnknownImplementationSuggestsAName) {
  ExpectConfigError([] { HostSchema().Validate(ParseYaml("widget: {impl: geer}\n", "h.yaml")); },
                    {"unknown test_widget 'geer'", "did you mean 'gear'"});
}

TEST(SchemaTest, KeysWithoutImplChangeTheDefaultComponent) {
  ConfigNode v = HostSchema().Validate(ParseYaml("widget: {teeth: 5}\n", "h.yaml"));
  EXPECT_EQ(v.At("widget").GetString("impl"), "gear");
  EXPECT_EQ(v.At("widget").GetInt("teeth"), 5);
  // Without a default there is no component to change: the impl is needed.
  ExpectConfigError([] { HostSchema().Validate(ParseYaml("parts: [{teeth: 5}]\n", "h.yaml")); },
                    {"missing 'impl'"});
}

TEST(SchemaTest, ShorthandComponentIsAccepted) {
  ConfigNode v = HostSchema().Validate(ParseYaml("widget: gear\n", "h.yaml"));
  EXPECT_EQ(v.At("widget").GetString("impl"), "gear");
  EXPECT_EQ(v.At("widget").GetInt("teeth"), 12);
}

TEST(SchemaTest, EditDistanceAndSuggestions) {
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(DidYouMean("epocs", {"epochs", "seed"}), " (did you mean 'epochs'?)");
  EXPECT_EQ(DidYouMean("zzzzzz", {"epochs", "seed"}), "");
}

}  // namespace
}  // namespace pim
