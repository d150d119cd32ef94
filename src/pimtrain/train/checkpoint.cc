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

struct Parsed {
  CheckpointInfo info;
  nlohmann::json tensors;
  size_t payload_offset = 0;
};

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
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.substr(12, header_len));
    p.info.epochs_done = h.at("epochs_done").get<int64_t>();
    p.info.metrics_jsonl = h.at("metrics_jsonl").get<std::string>();
    p.info.config_yaml = h.at("config_yaml").get<std::string>();
    p.tensors = h.at("tensors");
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("header: ") + e.what());
  }
  p.payload_offset = 12 + header_len;
  size_t total = 0;
  for (const auto& t : p.tensors) total += t.at("numel").get<size_t>() * sizeof(float);
  if (p.payload_offset + total + 4 != bytes.size()) throw bad("payload length");
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
  // Offsets of every stored tensor, by name.
  struct Stored {
    Shape shape;
    size_t offset;
  };
  std::vector<std::pair<std::string, Stored>> stored;
  size_t off = p.payload_offset;
  for (size_t i = 0; i < p.tensors.size(); ++i) {
    const auto& entry = p.tensors[i];
    std::string name = entry.at("name").get<std::string>();
    auto dims = entry.at("shape").get<std::vector<int64_t>>();
    if (dims.size() > static_cast<size_t>(Shape::kMaxRank) ||
        Shape(dims).numel() != entry.at("numel").get<int64_t>()) {
      throw DataError(path + ": tensor " + name + " has an inconsistent shape");
    }
    stored.push_back({name, {Shape(dims), off}});
    off += static_cast<size_t>(Shape(dims).numel()) * sizeof(float);
  }
  std::vector<size_t> offsets;
  for (size_t i = 0; i < t.size(); ++i) {
    const Stored* found = nullptr;
    if (match == TensorMatch::kExact) {
      if (stored[i].first == t[i].first) found = &stored[i].second;
    } else {
      for (const auto& [name, s] : stored)
        if (name == t[i].first) found = &s;
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
