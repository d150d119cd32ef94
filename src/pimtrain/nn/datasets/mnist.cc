// The IDX-format image data sets: Fashion-MNIST and MNIST (same files, different defaults).
#include <string>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/datasets/adapt.h"
#include "pimtrain/nn/datasets/idx.h"

namespace pim {
namespace {

constexpr int kIdxClasses = 10;

// Reads train-{images,labels} and t10k-{images,labels} (IDX, raw or gzip) from options.dir.
class IdxDataset : public Dataset {
 public:
  IdxDataset(const ConfigNode& params, std::string name, std::string hint)
      : options_(ImageDatasetOptions::FromParams(params)),
        adapt_(ImageAdaptation::FromParams(params)),
        where_(params.Where()),
        name_(std::move(name)),
        hint_(std::move(hint)) {}

  LoadedData Load() override {
    // Find all four files before reading any, so a missing one fails fast.
    const std::string train_images = Find("train-images-idx3-ubyte");
    const std::string train_labels = Find("train-labels-idx1-ubyte");
    const std::string test_images = Find("t10k-images-idx3-ubyte");
    const std::string test_labels = Find("t10k-labels-idx1-ubyte");
    ByteImages train = ReadIdxPair(train_images, train_labels, kIdxClasses, options_.train_limit);
    ByteImages test = ReadIdxPair(test_images, test_labels, kIdxClasses, options_.test_limit);
    if (test.sample_shape != train.sample_shape) {
      throw DataError(test_images + ": images are " + test.sample_shape.ToString() + " but " +
                      train_images + " holds " + train.sample_shape.ToString());
    }
    AdaptImages(train, adapt_, where_);  // e.g. 32x32x3 for CIFAR-shaped models
    AdaptImages(test, adapt_, where_);
    LoadedData out;
    out.name = name_;
    out.num_classes = kIdxClasses;
    ConvertSplits(train, test, options_.normalize, out);
    return out;
  }

 private:
  std::string Find(const std::string& name) const {
    return FindDataFile(options_.dir, name, hint_);
  }

  ImageDatasetOptions options_;
  ImageAdaptation adapt_;
  std::string where_;
  std::string name_;
  std::string hint_;
};

class FashionMnist final : public IdxDataset {
 public:
  explicit FashionMnist(const ConfigNode& params)
      : IdxDataset(params, "fashion_mnist",
                   "install the Debian package dataset-fashion-mnist or set data.dir") {}

  static Schema GetSchema() {
    Schema s;
    AddImageDatasetParams(s, "/usr/share/datasets/fashion-mnist");
    AddImageAdaptationParams(s);
    return s;
  }
};

class Mnist final : public IdxDataset {
 public:
  explicit Mnist(const ConfigNode& params)
      : IdxDataset(params, "mnist", "set data.dir to a directory holding the MNIST IDX files") {}

  static Schema GetSchema() {
    Schema s;
    AddImageDatasetParams(s, "/usr/share/datasets/mnist");
    AddImageAdaptationParams(s);
    return s;
  }
};

PIM_REGISTER(Dataset, FashionMnist, "fashion_mnist",
             "Zalando's Fashion-MNIST: 28x28 grey clothing images, 10 classes (IDX files)");
PIM_REGISTER(Dataset, Mnist, "mnist", "LeCun's MNIST: 28x28 grey handwritten digits (IDX files)");

}  // namespace
}  // namespace pim
