// `sequential` model: an explicit list of layer blocks.
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/model.h"

namespace pim {
namespace {

class Sequential final : public Model {
 public:
  explicit Sequential(const ConfigNode& p) : layers_(p.At("layers")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::ComponentList("layers", "layer").Doc("the layers, input to output"));
    return s;
  }

  std::vector<std::unique_ptr<Layer>> MakeLayers(const Shape&, int) const override {
    if (layers_.items().empty()) throw ConfigError(layers_.Where() + ": the model has no layers");
    std::vector<std::unique_ptr<Layer>> out;
    for (const auto& block : layers_.items()) out.push_back(Registry<Layer>::Create(block));
    return out;
  }

 private:
  ConfigNode layers_;
};

PIM_REGISTER(Model, Sequential, "sequential", "layers listed one by one");

}  // namespace
}  // namespace pim
