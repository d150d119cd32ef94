// IDX file reader (the MNIST family's format) and the byte-image helpers that the image data sets
// share: finding files, taking the first N samples, and normalizing bytes into float splits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/tensor.h"

namespace pim {

// One IDX array of unsigned bytes (type code 0x08), the only element type the MNIST family uses.
struct IdxArray {
  std::vector<int64_t> dims;  // as in the header, outermost first
  std::vector<uint8_t> data;  // the payload, exactly the product of dims bytes
};

// Reads an IDX file, raw or gzip. `expected_ndim` (1 for labels, 3 for images) is checked against
// the header. Throws IoError if the file cannot be read and DataError (one line naming the file)
// if the magic, dimension count or payload length is wrong; it never reads past the data.
IdxArray ReadIdx(const std::string& path, int expected_ndim);
// The first `limit` items (along dims[0]) of an IDX file alone, inflating no more of a gzip file
// than those (limit <= 0 or >= dims[0]: the whole file, as ReadIdx). dims stay the file's; the
// file's size is checked against its header as ReadIdx checks it (for gzip by the trailer's
// size, and on any mismatch the whole file is read for ReadIdx's error).
IdxArray ReadIdxPrefix(const std::string& path, int expected_ndim, int64_t limit);

// Bytes as stored on disk, channels last: what every image data set reads before conversion.
struct ByteImages {
  Shape sample_shape;           // (H, W, C)
  std::vector<uint8_t> pixels;  // size() * H * W * C, channels last
  std::vector<int32_t> labels;  // in [0, num_classes)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // Keeps the first `limit` samples; 0 keeps all.
  void Truncate(int64_t limit);
};

// Reads a pair of IDX files, images (N, H, W) and labels (N), checking that the counts match and
// every label is below `num_classes`; keeps the first `limit` samples (0 = all).
ByteImages ReadIdxPair(const std::string& images_path, const std::string& labels_path,
                       int num_classes, int64_t limit);

enum class Normalization {
  kStandard,  // (x / 255 - mean) / std, per channel, statistics of the training images
  kUnit,      // x / 255
  kNone,      // raw 0..255
};

// The parameters every byte-image data set shares (dir, train_limit, test_limit, normalize).
struct ImageDatasetOptions {
  std::string dir;
  int64_t train_limit = 0;
  int64_t test_limit = 0;
  Normalization normalize = Normalization::kStandard;

  static ImageDatasetOptions FromParams(const ConfigNode& params);
};

// Adds dir (defaulting to `default_dir`), train_limit, test_limit and normalize to `schema`.
void AddImageDatasetParams(Schema& schema, const std::string& default_dir);

// `dir`/`name`.gz if it exists (preferred), else `dir`/`name`. IoError with `hint` if `dir` is not
// a directory or neither file is there.
std::string FindDataFile(const std::string& dir, const std::string& name, const std::string& hint);

// Converts both splits to float tensors (N, H, W, C). Standard normalization uses one mean and
// std per channel, computed exactly (from byte histograms) over the training images given.
void ConvertSplits(const ByteImages& train, const ByteImages& test, Normalization normalize,
                   LoadedData& out);

}  // namespace pim
