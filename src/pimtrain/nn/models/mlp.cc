// `mlp` model shorthand: layers: [784, 256, 128, 10] -> linear/relu stack.
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/model.h"

namespace pim {
namespace {

class Mlp final : public Model {
 public:
  explicit Mlp(const ConfigNode& p)
      : node_(p),
        widths_(p.At("layers").AsIntList()),
        activation_(p.GetString("activation")),
        batch_norm_(p.GetBool("batch_norm")),
        dropout_(p.GetDouble("dropout")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::IntList("layers").Range(1, 1 << 24)
              .Doc("widths from input to output, e.g. [784, 256, 128, 10]"));
    s.Add(Param::Enum("activation", {"relu", "none"}).Default("relu")
              .Doc("activation between linear layers"));
    s.Add(Param::Bool("batch_norm").Default(false).Doc("batch_norm after each hidden linear"));
    s.Add(Param::Float("dropout").Default(0.0).Range(0, 0.99).Doc("dropout after hidden layers"));
    return s;
  }

  std::vector<std::unique_ptr<Layer>> MakeLayers(const Shape& input,
                                                 int num_classes) const override {
    const ConfigNode& list = node_.At("layers");
    if (widths_.size() < 2) {
      throw ConfigError(list.Where() + ": an mlp needs at least [inputs, outputs]");
    }
    if (widths_.front() != input.numel()) {
      throw ConfigError(list.items()[0].Where() + ": " + std::to_string(widths_.front()) +
                        " inputs, but the data's samples have " + std::to_string(input.numel()) +
                        " features (shape " + input.ToString() + ")");
    }
    if (widths_.back() != num_classes) {
      throw ConfigError(list.items().back().Where() + ": " + std::to_string(widths_.back()) +
                        " outputs, but the data has " + std::to_string(num_classes) + " classes");
    }
    std::vector<std::unique_ptr<Layer>> out;
    auto add = [&](const std::string& yaml) {
      out.push_back(Registry<Layer>::CreateFrom(ParseYaml(yaml, node_.Where())));
    };
    add("{impl: flatten}");
    for (size_t i = 1; i < widths_.size(); ++i) {
      add("{impl: linear, out_features: " + std::to_string(widths_[i]) + "}");
      if (i + 1 == widths_.size()) break;
      if (batch_norm_) add("{impl: batch_norm}");
      if (activation_ == "relu") add("{impl: relu}");
      if (dropout_ > 0) add("{impl: dropout, p: " + std::to_string(dropout_) + "}");
    }
    return out;
  }

 private:
  ConfigNode node_;
  std::vector<int64_t> widths_;
  std::string activation_;
  bool batch_norm_;
  double dropout_;
};

PIM_REGISTER(Model, Mlp, "mlp", "multi-layer perceptron from a list of widths");

}  // namespace
}  // namespace pim
