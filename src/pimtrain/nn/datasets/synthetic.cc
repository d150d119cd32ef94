// A generated classification set (class prototypes plus Gaussian noise) for tests and demos.
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/dataset.h"

namespace pim {
namespace {

// Stream tags, so prototypes, labels and noise never share random numbers.
constexpr uint64_t kPrototypeTag = 0x9207;
constexpr uint64_t kLabelTag = 0x1ABE1;
constexpr uint64_t kNoiseTag = 0x4015E;
// Refuse sets that would not fit in memory (4 GiB of floats) with a config error, not bad_alloc.
constexpr int64_t kMaxElements = int64_t{1} << 30;

// Sample i of a split: label ~ uniform over classes; x = prototype[label] + noise * N(0, 1).
// Prototypes are N(0, 1) per element, one per class, keyed by (seed, class): the classes are far
// apart relative to the default noise, so a small MLP or CNN learns them well above chance.
// Everything is a pure function of the parameters (counter-based generator).
class Synthetic final : public Dataset {
 public:
  explicit Synthetic(const ConfigNode& p)
      : train_size_(p.GetInt("train_size")),
        test_size_(p.GetInt("test_size")),
        sample_shape_{p.GetInt("height"), p.GetInt("width"), p.GetInt("channels")},
        classes_(static_cast<int>(p.GetInt("classes"))),
        noise_(static_cast<float>(p.GetDouble("noise"))),
        seed_(static_cast<uint64_t>(p.GetInt("seed"))) {
    // Each factor is range-checked by the schema, so this product cannot overflow int64.
    if ((train_size_ + test_size_) * sample_shape_.numel() > kMaxElements) {
      throw ConfigError(p.Where() + ": (train_size + test_size) * height * width * channels = " +
                        std::to_string((train_size_ + test_size_) * sample_shape_.numel()) +
                        " values is more than the " + std::to_string(kMaxElements) + " allowed");
    }
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("train_size").Default(512).Range(0, 1e7).Doc("training samples"));
    s.Add(Param::Int("test_size").Default(256).Range(0, 1e7).Doc("test samples"));
    s.Add(Param::Int("height").Default(8).Range(1, 1024).Doc("image height"));
    s.Add(Param::Int("width").Default(8).Range(1, 1024).Doc("image width"));
    s.Add(Param::Int("channels").Default(1).Range(1, 64).Doc("image channels"));
    s.Add(Param::Int("classes").Default(10).Range(2, 1000).Doc("number of classes"));
    s.Add(Param::Float("noise").Default(0.5).Range(0, 100).Doc(
        "std of the Gaussian noise added to each class prototype (whose std is 1)"));
    s.Add(Param::Int("seed").Default(7).Range(0, 9.0e15).Doc(
        "seeds the prototypes, labels and noise (independent of the run's seed)"));
    return s;
  }

  LoadedData Load() override {
    const int64_t d = sample_shape_.numel();
    std::vector<float> prototypes(static_cast<size_t>(classes_ * d));
    for (int k = 0; k < classes_; ++k) {
      CounterRng rng(MixKey(seed_, static_cast<uint64_t>(k), kPrototypeTag));
      for (int64_t j = 0; j < d; ++j) prototypes[k * d + j] = rng.Normal(static_cast<uint64_t>(j));
    }
    LoadedData out;
    out.name = "synthetic";
    out.sample_shape = sample_shape_;
    out.num_classes = classes_;
    out.train = MakeSplit(0, train_size_, prototypes);
    out.test = MakeSplit(1, test_size_, prototypes);
    return out;
  }

 private:
  Split MakeSplit(uint64_t split_id, int64_t n, const std::vector<float>& prototypes) const {
    const int64_t d = sample_shape_.numel();
    const CounterRng label_rng(MixKey(seed_, split_id, kLabelTag));
    const CounterRng noise_rng(MixKey(seed_, split_id, kNoiseTag));
    Split split;
    split.labels.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      split.labels[i] = static_cast<int32_t>(label_rng.Below(static_cast<uint64_t>(i), classes_));
    }
    split.images.Resize(sample_shape_.WithBatch(n));
    float* x = split.images.data();
    DefaultPool().ParallelFor(n, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* proto = prototypes.data() + split.labels[i] * d;
        for (int64_t j = 0; j < d; ++j) {
          const uint64_t counter = static_cast<uint64_t>(i * d + j);
          x[i * d + j] = proto[j] + noise_ * noise_rng.Normal(counter);
        }
      }
    });
    return split;
  }

  int64_t train_size_;
  int64_t test_size_;
  Shape sample_shape_;
  int classes_;
  float noise_;
  uint64_t seed_;
};

PIM_REGISTER(Dataset, Synthetic, "synthetic",
             "generated images: a random prototype per class plus Gaussian noise (for tests)");

}  // namespace
}  // namespace pim
