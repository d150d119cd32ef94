// Model role (a recipe that makes the layer list) and Network (the built layers + buffers).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pimtrain/nn/layer.h"

namespace pim {

class Model {
 public:
  static constexpr const char* kRoleName = "model";
  virtual ~Model() = default;
  // The layers for samples of `input` shape and `num_classes` outputs. ConfigError if the
  // recipe cannot fit (e.g. an MLP whose first width is not the input size).
  virtual std::vector<std::unique_ptr<Layer>> MakeLayers(const Shape& input,
                                                         int num_classes) const = 0;
};

// A built sequential network and its activation/error buffers.
class Network {
 public:
  // Builds every layer; layer i is initialized from MixKey(seed, i).
  Network(std::vector<std::unique_ptr<Layer>> layers, const Shape& input, uint64_t seed);

  int size() const { return static_cast<int>(layers_.size()); }
  Layer& layer(int i) { return *layers_[i]; }
  const Shape& output_shape() const { return output_shape_; }

  // FP through every layer; returns the logits. activation(i) is layer i's input.
  const Tensor& Forward(const Tensor& x, const StepContext& ctx);
  const Tensor& activation(int i) const { return acts_[i]; }
  Tensor& error(int i) { return errs_[i]; }  // scratch for dL/d(input of layer i)

  std::vector<Parameter*> Parameters();
  std::string Summary() const;
  int64_t ForwardMacsPerSample() const;

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
  Shape output_shape_;
  std::vector<Tensor> acts_;  // acts_[i] = input of layer i; acts_[size] = output
  std::vector<Tensor> errs_;
};

}  // namespace pim
