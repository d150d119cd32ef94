// Graph models: named nodes with inputs, residual and self-attention blocks, named model presets
// (presets/models), and the per-layer shapes of a built network (for cost-only estimates).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/nn/model.h"

namespace pim {

// The graph a `graph` model block ({impl: graph, nodes: [...]}, already validated) describes.
// ConfigError naming the node for unknown inputs, duplicate names and bad block keys.
ModelGraph ExpandGraph(const ConfigNode& nodes);

// A named model preset, presets/models/NAME.yaml: the model block and the input it was made for.
struct ModelPreset {
  std::string name, path;
  ConfigNode model;  // the block under `model:` ({impl: graph, ...})
  Shape input;       // (H, W, C) from the preset's `input:`
  int classes = 0;   // from `classes:`
};
// Loads presets/models/NAME.yaml (IoError naming the known presets when there is none).
ModelPreset LoadModelPreset(const std::string& name, const std::string& where);
// The names of presets/models/*.yaml, sorted.
std::vector<std::string> ModelPresetNames();
// Replaces a `model: {preset: NAME}` block of a merged (unvalidated) root config by the preset's
// model block; leaves any other model block alone.
void ExpandModelPreset(ConfigNode& root);
// A preset's network, built for its own input shape and classes (no data needed).
Network BuildPresetNetwork(const std::string& name, uint64_t seed = 1);

// One weighted product of a built network, from layer shapes alone.
struct LayerShape {
  int node = 0;
  std::string name;             // node name
  std::string summary;          // the layer's one-line summary
  Shape output;                 // per-sample output shape
  int64_t weight_rows = 0;      // reduction dimension (macro rows); 0 for layers without weights
  int64_t weight_cols = 0;      // outputs (macro columns)
  int64_t vectors_per_sample = 0;  // input vectors per sample (output pixels, tokens; 1 for FC)
  int64_t macs_per_sample = 0;  // forward multiply-accumulates per sample
};
// Every node of `net`, in node order (weighted ones have weight_rows > 0).
std::vector<LayerShape> LayerShapes(Network& net);

}  // namespace pim
