// Registry: implementations of each role register by name in their own file; lookup by name.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/schema.h"

namespace pim {

// What `describe` shows for one implementation.
struct ImplInfo {
  std::string role;
  std::string name;
  std::string description;
  Schema schema;
};

// Role-agnostic index of everything registered (for describe, validation, Python).
class RegistryIndex {
 public:
  static void Add(ImplInfo info);
  // nullptr if absent.
  static const ImplInfo* Find(const std::string& role, const std::string& name);
  static std::vector<std::string> Roles();
  static std::vector<const ImplInfo*> Implementations(const std::string& role);

 private:
  static std::map<std::string, std::map<std::string, ImplInfo>>& Table();
};

// Typed registry of one role. `Role::kRoleName` names the role ("layer", "optimizer", ...).
// Factories receive the validated parameter block (defaults filled in).
template <class Role>
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Role>(const ConfigNode& params)>;

  static bool Register(const std::string& name, std::string description, Schema schema,
                       Factory factory) {
    RegistryIndex::Add({Role::kRoleName, name, std::move(description), std::move(schema)});
    Factories()[name] = std::move(factory);
    return true;
  }

  // Creates from a block already validated with ValidateComponent.
  static std::unique_ptr<Role> Create(const ConfigNode& params) {
    std::string name = params.GetString("impl");
    auto it = Factories().find(name);
    PIM_CHECK_MSG(it != Factories().end(), "unvalidated component " + name);
    return it->second(params);
  }

  // Validates then creates.
  static std::unique_ptr<Role> CreateFrom(const ConfigNode& block) {
    return Create(ValidateComponent(block, Role::kRoleName));
  }

 private:
  static std::map<std::string, Factory>& Factories() {
    static std::map<std::string, Factory> factories;
    return factories;
  }
};

}  // namespace pim

// Registers `Impl` (constructible from `const ConfigNode&`, with static `GetSchema()`) as NAME of
// ROLE. `DOC` is the one-line description shown by `pimtrain describe`.
#define PIM_REGISTER(ROLE, IMPL, NAME, DOC)                                              \
  [[maybe_unused]] static const bool kPimRegistered_##IMPL = ::pim::Registry<ROLE>::Register( \
      NAME, DOC, IMPL::GetSchema(),                                                       \
      [](const ::pim::ConfigNode& params) -> std::unique_ptr<ROLE> {                      \
        return std::make_unique<IMPL>(params);                                            \
      })
