// IDX reader and the shared byte-image helpers: strict header checks, exact normalization.
#include "pimtrain/nn/datasets/idx.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <system_error>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/parallel.h"

namespace pim {
namespace {

// IDX type code for unsigned bytes; MNIST, Fashion-MNIST, EMNIST and KMNIST all use it.
constexpr uint8_t kUnsignedByte = 0x08;

std::string Hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08X", v);
  return buf;
}

std::string DimsToString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

uint32_t ReadBigEndian32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

}  // namespace

IdxArray ReadIdx(const std::string& path, int expected_ndim) {
  std::vector<uint8_t> bytes = ReadFileMaybeGzip(path);
  const size_t size = bytes.size();
  const uint32_t expected_magic = (kUnsignedByte << 8) | static_cast<uint32_t>(expected_ndim);
  if (size < 4) {
    throw DataError(path + ": " + std::to_string(size) + " bytes, too short for an IDX header");
  }
  const uint32_t magic = ReadBigEndian32(bytes.data());
  if (bytes[0] != 0 || bytes[1] != 0 || bytes[2] != kUnsignedByte) {
    throw DataError(path + ": bad magic " + Hex32(magic) + ", expected " + Hex32(expected_magic) +
                    " (an unsigned-byte IDX file with " + std::to_string(expected_ndim) +
                    " dimensions)");
  }
  const int ndim = bytes[3];
  if (ndim != expected_ndim) {
    throw DataError(path + ": IDX file has " + std::to_string(ndim) + " dimensions, expected " +
                    std::to_string(expected_ndim) + " (magic " + Hex32(magic) + ")");
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndim);
  if (size < header) {
    throw DataError(path + ": truncated IDX header: " + std::to_string(size) + " bytes, " +
                    std::to_string(ndim) + " dimensions need " + std::to_string(header));
  }
  IdxArray out;
  uint64_t expected_payload = 1;
  bool overflow = false;
  for (int d = 0; d < ndim; ++d) {
    const uint32_t dim = ReadBigEndian32(bytes.data() + 4 + 4 * d);
    out.dims.push_back(dim);
    // Each dim is below 2^32, so only the running product can overflow.
    overflow = overflow || __builtin_mul_overflow(expected_payload, dim, &expected_payload);
  }
  const uint64_t payload = size - header;
  if (overflow || payload != expected_payload) {
    std::string need = overflow ? "more than 2^64" : std::to_string(expected_payload);
    std::string why = payload < expected_payload || overflow
                          ? "truncated"
                          : std::to_string(payload - expected_payload) + " trailing bytes";
    throw DataError(path + ": payload is " + std::to_string(payload) + " bytes but dimensions " +
                    DimsToString(out.dims) + " need " + need + " (" + why + ")");
  }
  // Drop the header in place rather than copying the (up to 47 MB) payload.
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  out.data = std::move(bytes);
  return out;
}

IdxArray ReadIdxPrefix(const std::string& path, int expected_ndim, int64_t limit) {
  if (limit <= 0) return ReadIdx(path, expected_ndim);
  const size_t header = 4 + 4 * static_cast<size_t>(expected_ndim);
  uint64_t total = 0;
  const std::vector<uint8_t> head = ReadFilePrefixMaybeGzip(path, header, &total);
  if (head.size() < header || head[0] != 0 || head[1] != 0 || head[2] != kUnsignedByte ||
      head[3] != expected_ndim) {
    return ReadIdx(path, expected_ndim);  // its error
  }
  IdxArray out;
  uint64_t item = 1;
  for (int d = 0; d < expected_ndim; ++d) {
    out.dims.push_back(ReadBigEndian32(head.data() + 4 + 4 * d));
    if (d > 0) item *= static_cast<uint64_t>(out.dims.back());
  }
  const uint64_t count = static_cast<uint64_t>(out.dims[0]);
  // The whole file when the limit takes it all, or when the sizes disagree (ReadIdx's error;
  // the trailer holds the size mod 2^32).
  if (static_cast<uint64_t>(limit) >= count || item == 0 ||
      count > (uint64_t{1} << 40) / std::max<uint64_t>(item, 1) ||
      (total != ((header + count * item) & 0xFFFFFFFFull) && total != header + count * item)) {
    return ReadIdx(path, expected_ndim);
  }
  const size_t want = header + static_cast<size_t>(limit) * static_cast<size_t>(item);
  std::vector<uint8_t> bytes = ReadFilePrefixMaybeGzip(path, want, &total);
  if (bytes.size() != want) return ReadIdx(path, expected_ndim);
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  out.data = std::move(bytes);
  return out;
}

void ByteImages::Truncate(int64_t limit) {
  if (limit <= 0 || limit >= size()) return;
  labels.resize(static_cast<size_t>(limit));
  pixels.resize(static_cast<size_t>(limit * sample_shape.numel()));
  labels.shrink_to_fit();
  pixels.shrink_to_fit();
}

ByteImages ReadIdxPair(const std::string& images_path, const std::string& labels_path,
                       int num_classes, int64_t limit) {
  // Only the first `limit` images and labels are inflated (the rest is never used).
  IdxArray images = ReadIdxPrefix(images_path, 3, limit);
  IdxArray labels = ReadIdxPrefix(labels_path, 1, limit);
  if (images.dims[0] > 0 && (images.dims[1] == 0 || images.dims[2] == 0)) {
    throw DataError(images_path + ": images of " + std::to_string(images.dims[1]) + " x " +
                    std::to_string(images.dims[2]) + " pixels");
  }
  if (images.dims[0] != labels.dims[0]) {
    throw DataError(images_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                    labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
  }
  ByteImages out;
  out.sample_shape = Shape{images.dims[1], images.dims[2], 1};
  out.labels.resize(labels.data.size());
  for (size_t i = 0; i < labels.data.size(); ++i) {
    const int label = labels.data[i];
    if (label >= num_classes) {
      throw DataError(labels_path + ": label " + std::to_string(label) + " at index " +
                      std::to_string(i) + " is outside [0, " + std::to_string(num_classes) + ")");
    }
    out.labels[i] = label;
  }
  out.pixels = std::move(images.data);
  out.Truncate(limit);
  return out;
}

ImageDatasetOptions ImageDatasetOptions::FromParams(const ConfigNode& params) {
  ImageDatasetOptions o;
  o.dir = params.GetString("dir");
  o.train_limit = params.GetInt("train_limit");
  o.test_limit = params.GetInt("test_limit");
  const std::string n = params.GetString("normalize");
  o.normalize = n == "unit"   ? Normalization::kUnit
                : n == "none" ? Normalization::kNone
                              : Normalization::kStandard;
  return o;
}

void AddImageDatasetParams(Schema& schema, const std::string& default_dir) {
  schema.Add(Param::String("dir").Default(default_dir).Doc("directory holding the data files"));
  schema.Add(Param::Int("train_limit")
                 .Default(0)
                 .Range(0, 2147483647.0)
                 .Doc("use only the first N training samples (0 = all)"));
  schema.Add(Param::Int("test_limit")
                 .Default(0)
                 .Range(0, 2147483647.0)
                 .Doc("use only the first N test samples (0 = all)"));
  schema.Add(Param::Enum("normalize", {"standard", "unit", "none"})
                 .Default("standard")
                 .Doc("standard: (x/255 - mean)/std per channel over the training images; "
                      "unit: x/255; none: raw 0..255"));
}

std::string FindDataFile(const std::string& dir, const std::string& name, const std::string& hint) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw IoError(dir + ": data directory not found (" + hint + ")");
  }
  const std::string raw = dir + "/" + name;
  for (const std::string& candidate : {raw + ".gz", raw}) {
    if (fs::is_regular_file(candidate, ec)) return candidate;
  }
  throw IoError(raw + "[.gz]: file not found (" + hint + ")");
}

namespace {

// Per-channel byte histograms, hist[c * 256 + v]. They give the exact (integer) sums behind the
// mean and std, so the statistics do not depend on summation order or thread count.
std::vector<uint64_t> ChannelHistograms(const ByteImages& bytes) {
  const int64_t channels = bytes.sample_shape[2];
  const int64_t pixels = static_cast<int64_t>(bytes.pixels.size()) / channels;
  const uint8_t* p = bytes.pixels.data();
  std::vector<uint64_t> hist(static_cast<size_t>(channels) * 256, 0);
  std::mutex mu;
  DefaultPool().ParallelFor(pixels, int64_t{1} << 18, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> local(hist.size(), 0);
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t c = 0; c < channels; ++c) ++local[c * 256 + p[i * channels + c]];
    }
    std::lock_guard<std::mutex> lock(mu);
    for (size_t k = 0; k < hist.size(); ++k) hist[k] += local[k];
  });
  return hist;
}

// Float value of each byte, per channel: lut[c * 256 + v]. A table makes the conversion one
// lookup per pixel and guarantees that equal bytes map to bit-identical floats.
std::vector<float> NormalizationTable(const ByteImages& train, Normalization normalize) {
  const int64_t channels = train.sample_shape[2];
  std::vector<uint64_t> hist;
  if (normalize == Normalization::kStandard) hist = ChannelHistograms(train);
  std::vector<float> lut(static_cast<size_t>(channels) * 256);
  for (int64_t c = 0; c < channels; ++c) {
    double mean = 0.0, stddev = 1.0;
    if (normalize == Normalization::kStandard) {
      uint64_t n = 0, sum = 0, sum_sq = 0;
      for (uint64_t v = 0; v < 256; ++v) {
        const uint64_t count = hist[c * 256 + v];
        n += count;
        sum += v * count;
        sum_sq += v * v * count;
      }
      if (n > 0) {
        // Var = (n * sum_sq - sum^2) / n^2, in 128 bits so that it is exact before the divide.
        unsigned __int128 num =
            static_cast<unsigned __int128>(n) * sum_sq - static_cast<unsigned __int128>(sum) * sum;
        double var = static_cast<double>(num) / (static_cast<double>(n) * static_cast<double>(n));
        mean = static_cast<double>(sum) / static_cast<double>(n) / 255.0;
        stddev = std::sqrt(var) / 255.0;
      }
      // A constant channel carries no information; map it to 0 instead of dividing by 0.
      if (!(stddev > 1e-12)) stddev = 1.0;
    }
    for (int v = 0; v < 256; ++v) {
      double x = normalize == Normalization::kNone ? v : (v / 255.0 - mean) / stddev;
      lut[static_cast<size_t>(c) * 256 + v] = static_cast<float>(x);
    }
  }
  return lut;
}

Split ToSplit(const ByteImages& bytes, const std::vector<float>& lut) {
  Split split;
  split.labels = bytes.labels;
  split.images.Resize(bytes.sample_shape.WithBatch(bytes.size()));
  const int64_t channels = bytes.sample_shape[2];
  const int64_t pixels = static_cast<int64_t>(bytes.pixels.size()) / channels;
  const uint8_t* in = bytes.pixels.data();
  float* out = split.images.data();
  // Each output element depends on one input byte only, so chunking cannot change results.
  DefaultPool().ParallelFor(pixels, int64_t{1} << 18, [&](int64_t begin, int64_t end) {
    if (channels == 1) {
      for (int64_t i = begin; i < end; ++i) out[i] = lut[in[i]];
      return;
    }
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t c = 0; c < channels; ++c) {
        out[i * channels + c] = lut[c * 256 + in[i * channels + c]];
      }
    }
  });
  return split;
}

}  // namespace

void ConvertSplits(const ByteImages& train, const ByteImages& test, Normalization normalize,
                   LoadedData& out) {
  PIM_CHECK_MSG(train.sample_shape == test.sample_shape,
                train.sample_shape.ToString() + " vs " + test.sample_shape.ToString());
  const std::vector<float> lut = NormalizationTable(train, normalize);
  out.train = ToSplit(train, lut);
  out.test = ToSplit(test, lut);
  out.sample_shape = train.sample_shape;
}

}  // namespace pim
