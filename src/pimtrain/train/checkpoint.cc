// Checkpoint file format implementation.
#include "pimtrain/train/checkpoint.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"

namespace pim {

namespace {

constexpr char kMagic[8] = {'P', 'I', 'M', 'C', 'K', 'P', 'T', '1'};

void PutU32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t GetU32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(s[at + i])) << (8 * i);
  return v;
}

// A name from the file as errors show it: control bytes as '?', at most 80 bytes.
std::string Shown(const std::string& name) {
  std::string out = name.substr(0, 80);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
  }
  return out;
}

// A stored tensor, validated: its shape, and where its values start in the file.
struct StoredTensor {
  std::string name;
  Shape shape;
  size_t offset = 0;
};

struct Parsed {
  CheckpointInfo info;
  std::vector<StoredTensor> tensors;
};

// Checks everything a reader relies on before any value is used: magic, CRC, header JSON and
// its types, every tensor's shape against its element count and the payload, with no
// arithmetic that could overflow (the CRC catches damage, not a crafted file).
Parsed Parse(const std::string& path, const std::string& bytes) {
  auto bad = [&](const std::string& what) -> DataError {
    return DataError(path + ": not a valid pimtrain checkpoint (" + what + ")");
  };
  if (bytes.size() < sizeof(kMagic) + 8 || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    throw bad("bad magic or too short");
  }
  uint32_t stored_crc = GetU32(bytes, bytes.size() - 4);
  if (Crc32(bytes.data(), bytes.size() - 4) != stored_crc) {
    throw bad("checksum mismatch: the file is corrupt or truncated");
  }
  uint32_t header_len = GetU32(bytes, 8);
  if (12 + static_cast<size_t>(header_len) + 4 > bytes.size()) throw bad("header length");
  Parsed p;
  size_t offset = 12 + static_cast<size_t>(header_len);
  const size_t payload_end = bytes.size() - 4;
  try {
    nlohmann::json h = nlohmann::json::parse(bytes.substr(12, header_len));
    const auto& epochs = h.at("epochs_done");
    if (!epochs.is_number_integer() || epochs.get<int64_t>() < 0) {
      throw bad("header: epochs_done is not a count");
    }
    p.info.epochs_done = epochs.get<int64_t>();
    p.info.metrics_jsonl = h.at("metrics_jsonl").get<std::string>();
    p.info.config_yaml = h.at("config_yaml").get<std::string>();
    const auto& tensors = h.at("tensors");
    if (!tensors.is_array()) throw bad("header: tensors is not a list");
    for (const auto& entry : tensors) {
      StoredTensor t;
      t.name = entry.at("name").get<std::string>();
      const auto& shape = entry.at("shape");
      const auto& numel = entry.at("numel");
      if (!shape.is_array() || shape.size() > static_cast<size_t>(Shape::kMaxRank) ||
          !numel.is_number_integer()) {
        throw bad("tensor " + Shown(t.name) + " has an inconsistent shape");
      }
      // The element count may not exceed what is left of the payload, so neither the product
      // of the dimensions nor the byte count can overflow.
      const uint64_t room = (payload_end - offset) / sizeof(float);
      std::vector<int64_t> dims;
      uint64_t product = 1;
      for (const auto& d : shape) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) {
          throw bad("tensor " + Shown(t.name) + " has an inconsistent shape");
        }
        dims.push_back(d.get<int64_t>());
        const uint64_t u = static_cast<uint64_t>(dims.back());
        product = (u != 0 && product > room / u) ? room + 1 : product * u;
      }
      if (dims.empty()) product = 0;  // as Shape::numel counts a rank-0 shape
      if (product > room) throw bad("payload length");
      if (numel.get<int64_t>() < 0 || static_cast<uint64_t>(numel.get<int64_t>()) != product) {
        throw bad("tensor " + Shown(t.name) + " has an inconsistent shape");
      }
      t.shape = Shape(dims);
      t.offset = offset;
      offset += static_cast<size_t>(product) * sizeof(float);
      p.tensors.push_back(std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("header: ") + e.what());
  }
  if (offset != payload_end) throw bad("payload length");
  return p;
}

}  // namespace

void SaveCheckpoint(const std::string& path, const CheckpointInfo& info, const NamedTensors& t) {
  nlohmann::json h;
  h["format"] = "pimtrain checkpoint";
  h["epochs_done"] = info.epochs_done;
  h["metrics_jsonl"] = info.metrics_jsonl;
  h["config_yaml"] = info.config_yaml;
  h["tensors"] = nlohmann::json::array();
  size_t payload = 0;
  for (const auto& [name, tensor] : t) {
    h["tensors"].push_back({{"name", name},
                            {"shape", tensor->shape().dims()},
                            {"numel", tensor->numel()}});
    payload += static_cast<size_t>(tensor->numel()) * sizeof(float);
  }
  std::string header = h.dump();
  std::string out;
  out.reserve(12 + header.size() + payload + 4);
  out.append(kMagic, 8);
  PutU32(out, static_cast<uint32_t>(header.size()));
  out += header;
  for (const auto& [name, tensor] : t) {
    out.append(reinterpret_cast<const char*>(tensor->data()),
               static_cast<size_t>(tensor->numel()) * sizeof(float));
  }
  PutU32(out, Crc32(out.data(), out.size()));
  WriteFileAtomic(path, out);
}

CheckpointInfo ReadCheckpointInfo(const std::string& path) {
  return Parse(path, ReadFile(path)).info;
}

CheckpointInfo LoadCheckpoint(const std::string& path, const NamedTensors& t,
                              TensorMatch match) {
  std::string bytes = ReadFile(path);
  Parsed p = Parse(path, bytes);
  if (match == TensorMatch::kExact && p.tensors.size() != t.size()) {
    throw DataError(path + ": checkpoint holds " + std::to_string(p.tensors.size()) +
                    " tensors, the configured run has " + std::to_string(t.size()) +
                    " (was it saved from a different config?)");
  }
  std::vector<size_t> offsets;
  for (size_t i = 0; i < t.size(); ++i) {
    const StoredTensor* found = nullptr;
    if (match == TensorMatch::kExact) {
      if (p.tensors[i].name == t[i].first) found = &p.tensors[i];
    } else {
      for (const auto& s : p.tensors)
        if (s.name == t[i].first) found = &s;
    }
    if (found == nullptr) {
      throw DataError(path + ": checkpoint has no tensor " + t[i].first +
                      " (was it saved from a different config?)");
    }
    if (found->shape != t[i].second->shape()) {
      throw DataError(path + ": tensor " + t[i].first + " is " + found->shape.ToString() +
                      " in the checkpoint, " + t[i].second->shape().ToString() +
                      " in the configured model");
    }
    offsets.push_back(found->offset);
  }
  for (size_t i = 0; i < t.size(); ++i) {
    std::memcpy(t[i].second->data(), bytes.data() + offsets[i],
                static_cast<size_t>(t[i].second->numel()) * sizeof(float));
  }
  return p.info;
}

}  // namespace pim
