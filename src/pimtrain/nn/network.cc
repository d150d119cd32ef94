// Network: builds a layer list and runs the forward pass through it.
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/model.h"

namespace pim {

Network::Network(std::vector<std::unique_ptr<Layer>> layers, const Shape& input, uint64_t seed)
    : layers_(std::move(layers)) {
  Shape s = input;
  for (size_t i = 0; i < layers_.size(); ++i) {
    s = layers_[i]->Build(s, MixKey(seed, 0x1A7E, i));
  }
  output_shape_ = s;
  // A layer's input error is used only by the parameterized layers below it (through the chain
  // of errors); below the first of them nothing reads it.
  bool params_below = false;
  for (auto& layer : layers_) {
    layer->set_input_error_needed(params_below);
    params_below = params_below || !layer->Parameters().empty();
  }
  acts_.resize(layers_.size() + 1);
  errs_.resize(layers_.size() + 1);
}

const Tensor& Network::Forward(const Tensor& x, const StepContext& ctx) {
  acts_[0] = x;
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->Forward(acts_[i], acts_[i + 1], ctx);
  return acts_.back();
}

std::vector<Parameter*> Network::Parameters() {
  std::vector<Parameter*> out;
  for (auto& l : layers_)
    for (auto* p : l->Parameters()) out.push_back(p);
  return out;
}

std::string Network::Summary() const {
  std::string s;
  for (size_t i = 0; i < layers_.size(); ++i) {
    s += "  [" + std::to_string(i) + "] " + layers_[i]->Summary() + "\n";
  }
  return s;
}

int64_t Network::ForwardMacsPerSample() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l->ForwardMacsPerSample();
  return n;
}

}  // namespace pim
