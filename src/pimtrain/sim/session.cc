// Session implementation: config resolution, building components, the run directory.
#include "pimtrain/sim/session.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/trainable.h"
#include "pimtrain/device/unit_cell.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/models/graph.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/sim/limits.h"
#include "pimtrain/train/impl/local_error_prediction.h"

namespace pim {

const Schema& RootSchema() {
  static const Schema schema = [] {
    auto train = std::make_shared<Schema>();
    train->Add(Param::Int("epochs").Default(10).Range(0, 100000).Doc("passes over the train set"));
    train->Add(Param::Int("batch_size").Default(64).Range(1, 1 << 20).Unit("samples")
                   .Doc("samples per training step"));
    train->Add(Param::Int("eval_batch_size").Default(1000).Range(1, 1 << 20).Unit("samples")
                   .Doc("samples per evaluation forward pass"));
    train->Add(Param::Component("optimizer", "optimizer")
                   .Default("{impl: sgd, learning_rate: 0.05, momentum: 0.9}")
                   .Doc("weight-update rule (WU stage)"));
    train->Add(Param::Component("schedule", "schedule").Default("{impl: cosine}")
                   .Doc("learning-rate schedule"));
    train->Add(Param::Component("algorithm", "algorithm").Default("{impl: backprop}")
                   .Doc("where each layer's error comes from (backprop, ...)"));
    train->Add(Param::Component("loss", "loss").Default("{impl: softmax_cross_entropy}")
                   .Doc("training loss"));
    train->Add(Param::Bool("checkpoint").Default(true)
                   .Doc("write DIR/checkpoint.bin at each epoch end"));
    train->Add(Param::Enum("on_nonfinite", {"stop", "skip_step"}).Default("stop")
                   .Doc("NaN/Inf in loss, activations, errors, gradients or weights: stop the "
                        "run naming layer, stage and step, or skip that step's update"));

    auto pim = std::make_shared<Schema>();
    pim->Add(Param::Component("macro", "macro").Optional()
                 .Doc("the PIM macro running every weighted layer (absent: exact FP32)"));
    pim->Add(Param::Enum("placement", {"all", "hidden"}).Default("all")
                 .Doc("all weighted layers on the macro, or all but the first and last"));
    pim->Add(Param::Enum("conv_mapping", {"im2col", "channel_wise"}).Default("im2col")
                 .Doc("conv weights on arrays: unrolled kh*kw*c rows packed densely, or one "
                      "kernel position's c rows per array with positions over cycles"));

    Schema s;
    s.Add(Param::String("name").Optional().Doc("a name for the run or preset"));
    s.Add(Param::String("description").Optional().Doc("what this config is for"));
    s.Add(Param::Int("seed").Default(1).Range(0, 9.0e15).Doc("seeds every random choice"));
    s.Add(Param::Int("threads").Default(2).Range(0, 1024)
              .Doc("worker threads (0 = all cores); results do not depend on it"));
    s.Add(Param::Component("data", "dataset").Default("{impl: fashion_mnist}")
              .Doc("the data set"));
    s.Add(Param::Component("model", "model").Default("{impl: mlp, layers: [784, 256, 128, 10]}")
              .Doc("the network"));
    s.Add(Param::Section("train", train).Doc("training settings"));
    s.Add(Param::Section("pim", pim).Doc("which layers run on which PIM macro"));
    s.Add(Param::Section("limits", LimitsSchema()).Doc("refuse runs too big to fit or to finish"));
    s.Add(Param::Component("cost", "cost_model").Optional()
              .Doc("prices the macro's counted actions: energy, latency, area (docs/cost.md)"));
    s.Add(Param::Any("source").Optional().Doc("preset provenance: citation, assumptions"));
    s.Add(Param::Any("expected").Optional().Doc("published figures a preset reproduces"));
    return s;
  }();
  return schema;
}

ConfigNode ValidateRoot(const ConfigNode& merged) {
  ConfigNode root = merged.IsNull() ? ConfigNode::Map() : merged;
  root.SetPaths("");
  ExpandModelPreset(root);  // model: {preset: NAME} -> presets/models/NAME.yaml's model block
  root.SetPaths("");
  return RootSchema().Validate(root);
}

ConfigNode ResolveConfig(const std::vector<std::string>& files,
                         const std::vector<std::string>& sets) {
  ConfigNode merged = ConfigNode::Map();
  for (const auto& f : files) MergeInto(merged, LoadYamlFile(f));
  for (const auto& s : sets) ApplySet(merged, s, &RootSchema());
  return ValidateRoot(merged);
}

std::string FirstDifference(const ConfigNode& a, const ConfigNode& b,
                            const std::vector<std::string>& ignore) {
  if (std::find(ignore.begin(), ignore.end(), a.path()) != ignore.end()) return "";
  if (a.kind() != b.kind()) return a.path().empty() ? "(root)" : a.path();
  if (a.IsScalar()) return a.text() == b.text() ? "" : a.path();
  if (a.IsList()) {
    if (a.items().size() != b.items().size()) return a.path();
    for (size_t i = 0; i < a.items().size(); ++i) {
      std::string d = FirstDifference(a.items()[i], b.items()[i], ignore);
      if (!d.empty()) return d;
    }
    return "";
  }
  if (a.IsMap()) {
    for (const auto& [k, v] : a.entries()) {
      const ConfigNode* other = b.Find(k);
      if (other == nullptr) {
        std::string p = a.path().empty() ? k : a.path() + "." + k;
        if (std::find(ignore.begin(), ignore.end(), p) != ignore.end()) continue;
        return p;
      }
      std::string d = FirstDifference(v, *other, ignore);
      if (!d.empty()) return d;
    }
    for (const auto& [k, v] : b.entries()) {
      std::string p = a.path().empty() ? k : a.path() + "." + k;
      if (a.Find(k) == nullptr && std::find(ignore.begin(), ignore.end(), p) == ignore.end()) {
        return p;
      }
    }
  }
  return "";
}

namespace {

// Refuses (one line, the key) what a data-parallel run over `ranks` cannot split yet, before the
// data or the model are built.
void CheckSplittable(const ConfigNode& config, const LoadedData& data, int ranks) {
  const std::string why = " cannot be split over " + std::to_string(ranks) +
                          " MPI ranks (docs/scaling.md); run it in one process";
  const ConfigNode& train = config.At("train");
  if (train.At("algorithm").GetString("impl") != "backprop") {
    throw UnsupportedError(train.At("algorithm").At("impl").Where() + ": " +
                           train.At("algorithm").GetString("impl") +
                           why + " (data parallelism supports backprop)");
  }
  if (const ConfigNode* m = config.At("pim").Find("macro"); m != nullptr && !m->IsNull()) {
    // Its numbers must not depend on which rows share a call: per-tensor scales come through
    // input_max_abs, rounding is to nearest (stochastic draws are keyed by the row in a call).
    const std::string impl = m->GetString("impl");
    if (impl != "digital_bitserial") {
      throw UnsupportedError(m->At("impl").Where() + ": " + impl + why +
                             " (data parallelism supports digital_bitserial macros)");
    }
    if (m->GetString("rounding") != "nearest") {
      throw UnsupportedError(m->At("rounding").Where() + ": " + m->GetString("rounding") + why +
                             " (stochastic input rounding is keyed by the row within a call)");
    }
    if (!m->GetBool("signed")) {
      throw UnsupportedError(m->At("signed").Where() + ": false" + why +
                             " (unsigned inputs are scaled by their own maximum)");
    }
  }
  // Every batch, the last ones included, needs a sample on every rank.
  const auto check_batches = [&](const char* key, int64_t n, int64_t batch) {
    const int64_t last = n % batch == 0 ? batch : n % batch;
    if (std::min(batch, last) < ranks) {
      throw ConfigError(train.At(key).Where() + ": batches of " + std::to_string(batch) +
                        " over " + std::to_string(n) + " samples leave " +
                        std::to_string(std::min(batch, last)) + " sample(s) for " +
                        std::to_string(ranks) + " MPI ranks; each rank needs at least one");
    }
  };
  check_batches("batch_size", data.train.size(), train.GetInt("batch_size"));
  if (data.test.size() > 0) {
    check_batches("eval_batch_size", data.test.size(), train.GetInt("eval_batch_size"));
  }
}

}  // namespace

Session::Session(ConfigNode resolved, BatchGroup* group) : config_(std::move(resolved)) {
  int threads = static_cast<int>(config_.GetInt("threads"));
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  SetDefaultThreads(threads);

  // Refused before the data is loaded: what the algorithm cannot drive on this macro's device.
  if (const ConfigNode* m = config_.At("pim").Find("macro");
      m != nullptr && !m->IsNull() && m->GetString("impl") == "analog_crossbar") {
    CheckUnitCellAlgorithm(m->At("device"), config_.At("train").At("algorithm"));
  }
  auto dataset = Registry<Dataset>::Create(config_.At("data"));
  data_ = dataset->Load();
  if (data_.train.size() == 0) throw DataError(config_.At("data").Where() + ": no training data");
  CheckResourceLimits(config_, data_);  // before the model is allocated
  const bool split = group != nullptr && group->size() > 1;
  if (split) CheckSplittable(config_, data_, group->size());
  writes_files_ = !split || group->rank() == 0;

  auto model = Registry<Model>::Create(config_.At("model"));
  uint64_t seed = static_cast<uint64_t>(config_.GetInt("seed"));
  net_ = std::make_unique<Network>(model->MakeGraph(data_.sample_shape, data_.num_classes),
                                   data_.sample_shape, seed);
  if (net_->output_shape() != Shape{data_.num_classes}) {
    throw ConfigError(config_.At("model").Where() + ": the model's output shape " +
                      net_->output_shape().ToString() + " does not match the data's " +
                      std::to_string(data_.num_classes) + " classes");
  }
  AttachMacros();
  const ConfigNode& train = config_.At("train");
  opt_ = Registry<Optimizer>::Create(train.At("optimizer"));
  opt_->Attach(net_->Parameters());
  schedule_ = Registry<Schedule>::Create(train.At("schedule"));
  loss_ = Registry<Loss>::Create(train.At("loss"));
  algorithm_ = Registry<TrainingAlgorithm>::Create(train.At("algorithm"));
  algorithm_->Setup(*net_, seed);

  TrainerOptions opts;
  opts.seed = seed;
  opts.epochs = train.GetInt("epochs");
  opts.batch_size = train.GetInt("batch_size");
  opts.eval_batch_size = train.GetInt("eval_batch_size");
  opts.skip_nonfinite_steps = train.GetString("on_nonfinite") == "skip_step";
  opts.group = split ? group : nullptr;
  trainer_ = std::make_unique<Trainer>(*net_, *opt_, *schedule_, *loss_, *algorithm_, data_, opts);
  if (const ConfigNode* cost = config_.Find("cost"); cost != nullptr && !cost->IsNull()) {
    cost_ = Registry<CostModel>::Create(*cost);
    // Every counter a layer on a macro may carry must be priced or ignored by the cost model.
    for (int i = 0; i < net_->size(); ++i) {
      StagedMatmul* m = net_->layer(i).matmul();
      if (m == nullptr || !m->on_macro()) continue;
      const CounterSet macro = m->macro()->Counters();
      cost_->CheckCovers(CounterSet::Union("pim.macro (" + macro.owner() + ")",
                                           {&macro, &StagedMatmulCounters(),
                                            &ErrorPredictionUnitCounters()}),
                         "cost.impl");
      break;  // every layer runs the same macro
    }
  }
}

Session::~Session() = default;

void Session::AttachMacros() {
  const ConfigNode& pim = config_.At("pim");
  const ConfigNode* macro = pim.Find("macro");
  if (macro == nullptr) return;
  std::vector<int> weighted;
  for (int i = 0; i < net_->size(); ++i) {
    if (net_->layer(i).matmul() != nullptr) weighted.push_back(i);
  }
  const bool hidden_only = pim.GetString("placement") == "hidden";
  for (size_t k = 0; k < weighted.size(); ++k) {
    if (hidden_only && (k == 0 || k + 1 == weighted.size())) continue;
    const ConvMapping mapping = pim.GetString("conv_mapping") == "channel_wise"
                                    ? ConvMapping::kChannelWise
                                    : ConvMapping::kIm2col;
    net_->layer(weighted[k]).matmul()->AttachMacro(Registry<Macro>::Create(*macro), weighted[k],
                                                   mapping);
  }
  ProgramMacros();
}

int64_t Session::LastStep(int64_t epochs_done) const {
  return std::max<int64_t>(0, epochs_done * trainer_->steps_per_epoch() - 1);
}

void Session::ProgramMacros(int64_t step) {
  StepContext ctx;
  ctx.seed = static_cast<uint64_t>(config_.GetInt("seed"));
  ctx.step = step;
  ctx.pool = &DefaultPool();
  for (int i = 0; i < net_->size(); ++i) {
    StagedMatmul* m = net_->layer(i).matmul();
    if (m != nullptr && m->on_macro()) {
      net_->layer(i).CommitUpdate(ctx);
      m->TakeCounts();  // the initial programming is set-up, not training
    }
  }
}

namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The process's peak resident memory: VmHWM from /proc, which starts afresh at exec
// (getrusage's ru_maxrss carries over the high-water mark of the process that exec'd us, so a
// run started from a big Python process would report Python's memory).
int64_t PeakRssBytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace

TrainSummary Session::Train(const std::string& out_dir, bool resume, const SessionCallbacks& cb) {
  const ConfigNode& train = config_.At("train");
  const int64_t epochs = train.GetInt("epochs");
  const bool write_checkpoints = train.GetBool("checkpoint") && !out_dir.empty();
  const std::string config_yaml = ToYaml(config_);
  const std::string ckpt_path = out_dir + "/checkpoint.bin";

  TrainSummary summary;
  std::string metrics_jsonl;
  int64_t start_epoch = 0;
  // backprop reprograms every weight exactly each step: a pulsed device's response and the
  // update rule would be silently unused (docs/devices.md, "Training algorithms").
  if (const ConfigNode* m = config_.At("pim").Find("macro");
      cb.on_info && m != nullptr && !m->IsNull() && m->GetString("impl") == "analog_crossbar" &&
      train.At("algorithm").GetString("impl") == "backprop") {
    const std::string dev = m->At("device").GetString("impl"), up = m->At("update").GetString("impl");
    if (dev != "ideal" || up != "ideal") {
      cb.on_info("warning: pim.macro.device " + dev + " / update " + up +
                 ": backprop reprograms each weight exactly every step, so only the device's "
                 "bounds and write noise act, not its pulse response or the update rule; use "
                 "train.algorithm analog_sgd, mixed_precision, tiki_taka or chopped_tiki_taka "
                 "to train through the pulses");
    }
  }
  if (resume && !out_dir.empty() && !FileExists(ckpt_path)) {
    // Killed before its first checkpoint: the run starts again from the beginning (the same
    // seed gives the same run), provided it is the same run.
    const std::string saved_yaml = out_dir + "/config.yaml";
    if (FileExists(saved_yaml)) {
      ConfigNode saved = ValidateRoot(LoadYamlFile(saved_yaml));
      std::string diff =
          FirstDifference(saved, config_, {"threads", "limits", "train.on_nonfinite"});
      if (!diff.empty()) {
        throw ConfigError(saved_yaml + ": cannot resume: the config differs from the run's at '" +
                          diff + "'");
      }
    }
    RemoveStaleTempFiles(out_dir);
    resume = false;
  }
  if (resume) {
    if (out_dir.empty()) throw ConfigError("--resume needs a run directory");
    CheckpointInfo info = ReadCheckpointInfo(ckpt_path);
    ConfigNode saved = ValidateRoot(ParseYaml(info.config_yaml, ckpt_path));
    std::string diff =
        FirstDifference(saved, config_, {"threads", "limits", "train.on_nonfinite"});
    if (!diff.empty()) {
      throw ConfigError(ckpt_path + ": cannot resume: the config differs from the checkpoint's at '" +
                        diff + "'");
    }
    info = LoadCheckpoint(ckpt_path, trainer_->StateTensors());
    ProgramMacros(LastStep(info.epochs_done));
    algorithm_->RestoreState();  // e.g. Tiki-Taka's fast array, after C was programmed
    start_epoch = info.epochs_done;
    metrics_jsonl = info.metrics_jsonl;
    std::istringstream lines(metrics_jsonl);
    try {
      for (std::string line; std::getline(lines, line);) {
        if (line.empty()) continue;
        auto j = nlohmann::json::parse(line);
        EpochMetrics m;
        m.epoch = j.at("epoch");
        m.train_loss = j.at("train_loss");
        m.train_accuracy = j.at("train_accuracy");
        m.test_loss = j.at("test_loss");
        m.test_accuracy = j.at("test_accuracy");
        m.learning_rate = j.at("learning_rate");
        m.seconds = j.at("seconds");
        m.eval_seconds = j.at("eval_seconds");
        summary.epochs.push_back(m);
      }
    } catch (const nlohmann::json::exception& e) {
      // Only a checkpoint written by something else gets here: the CRC matched.
      throw DataError(ckpt_path + ": the checkpoint's metrics are not valid (" + e.what() + ")");
    }
    if (cb.on_info) {
      cb.on_info("resumed from " + ckpt_path + " after epoch " + std::to_string(start_epoch));
    }
    // A run killed inside a write leaves its temp file (never read: the rename did not happen).
    const int stale = writes_files_ ? RemoveStaleTempFiles(out_dir) : 0;
    if (stale > 0 && cb.on_info) {
      cb.on_info("removed " + std::to_string(stale) + " temporary file(s) of the killed run");
    }
  }
  // A run that fails before its first epoch is written (a bad knob found at the first step, a
  // divergence at step 1) leaves nothing behind if this call made its directory: no run
  // directory holding a config.yaml and nothing else, which a later --resume would take for a
  // run killed before its first checkpoint.
  struct RemoveUnlessKept {
    std::string dir;
    ~RemoveUnlessKept() {
      if (dir.empty()) return;
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);  // best effort: the error being thrown is what matters
    }
  } remove_unless_kept;
  if (!out_dir.empty() && writes_files_) {
    std::error_code ec;
    const bool existed = std::filesystem::exists(out_dir, ec);
    MakeDirs(out_dir);
    if (!existed && start_epoch < epochs) remove_unless_kept.dir = out_dir;
    WriteFileAtomic(out_dir + "/config.yaml", config_yaml);
  }

  for (int64_t e = start_epoch; e < epochs; ++e) {
    EpochMetrics m = trainer_->RunEpoch(e, cb.on_progress);
    if (cost_ != nullptr && !m.hardware.empty()) {
      double t0 = NowSeconds();
      RunShape shape{m.samples, train.GetInt("batch_size"), cost_->schedule()};
      shape.replicate_stages = cost_->replicate_stages();
      summary.cost = BuildCostReport(*cost_, m.hardware, cost_->operating_point(), shape);
      summary.has_cost = true;
      summary.cost_energy_pj_all_epochs += summary.cost.energy_pj;
      m.cost_json = summary.cost.CompactJson();
      summary.cost_pricing_seconds += NowSeconds() - t0;
    }
    if (m.skipped_steps > 0 && cb.on_info) {
      cb.on_info("epoch " + std::to_string(m.epoch) + ": skipped " +
                 std::to_string(m.skipped_steps) + " steps with NaN/Inf (train.on_nonfinite)");
    }
    summary.epochs.push_back(m);
    metrics_jsonl += m.ToJsonLine() + "\n";
    if (!out_dir.empty() && writes_files_) {
      WriteFileAtomic(out_dir + "/metrics.jsonl", metrics_jsonl);
      remove_unless_kept.dir.clear();  // an epoch's metrics are on disk: the directory stays
      if (write_checkpoints) {
        SaveCheckpoint(ckpt_path, {e + 1, metrics_jsonl, config_yaml}, trainer_->StateTensors());
      }
    }
    if (cb.on_epoch) cb.on_epoch(m);
  }

  for (const auto& m : summary.epochs) summary.train_seconds += m.seconds;
  summary.test_accuracy =
      summary.epochs.empty() ? trainer_->Evaluate(data_.test).accuracy
                             : summary.epochs.back().test_accuracy;
  summary.peak_rss_bytes = PeakRssBytes();

  if (!out_dir.empty() && writes_files_) {
    nlohmann::ordered_json j;
    j["test_accuracy"] = summary.test_accuracy;
    j["epochs"] = static_cast<int64_t>(summary.epochs.size());
    j["train_seconds"] = summary.train_seconds;
    j["peak_rss_bytes"] = summary.peak_rss_bytes;
    j["parameters"] = [&] {
      int64_t n = 0;
      for (auto* p : net_->Parameters()) n += p->value.numel();
      return n;
    }();
    j["forward_macs_per_sample"] = net_->ForwardMacsPerSample();
    if (net_->is_graph()) {  // the graph: node names, inputs, layers, output shapes
      auto nodes = nlohmann::ordered_json::array();
      for (int i = 0; i < net_->size(); ++i) {
        auto inputs = nlohmann::ordered_json::array();
        for (int in : net_->node_inputs(i)) {
          inputs.push_back(in < 0 ? "input" : net_->node_name(in));
        }
        nodes.push_back({{"name", net_->node_name(i)}, {"inputs", inputs},
                         {"layer", net_->layer(i).Summary()},
                         {"output", net_->node_shape(i).dims()}});
      }
      j["graph"] = nodes;
    }
    // Saturation events of all epochs (resumed ones included), summed from the metrics lines.
    auto saturation = nlohmann::ordered_json::object();
    std::istringstream metric_lines(metrics_jsonl);
    for (std::string line; std::getline(metric_lines, line);) {
      if (line.empty()) continue;
      auto m = nlohmann::ordered_json::parse(line);
      if (!m.contains("saturation") || !m["saturation"].is_object()) continue;
      for (const auto& [name, n] : m["saturation"].items()) {
        if (!n.is_number_integer()) continue;
        saturation[name] = saturation.value(name, int64_t{0}) + n.get<int64_t>();
      }
    }
    if (!saturation.empty()) j["saturation"] = saturation;
    if (summary.has_cost) {
      j["cost"] = nlohmann::ordered_json::parse(summary.cost.ToJson());
      j["cost_energy_all_epochs"] = {{"value", summary.cost_energy_pj_all_epochs},
                                     {"unit", "pJ"}};
      j["cost_pricing_seconds"] = summary.cost_pricing_seconds;
    }
    j["config"] = nlohmann::ordered_json::parse(ToJson(config_));
    WriteFileAtomic(out_dir + "/summary.json", j.dump(2) + "\n");
    WriteDeviceState(out_dir);
  }
  return summary;
}

// DIR/devices.json: each device-mode layer's device states after training (the report's
// conductance-distribution plot, docs/devices.md); not written when no layer has devices.
void Session::WriteDeviceState(const std::string& out_dir) {
  auto layers = nlohmann::ordered_json::array();
  for (int i = 0; i < net_->size(); ++i) {
    StagedMatmul* m = net_->layer(i).matmul();
    if (m == nullptr || !m->on_macro()) continue;
    auto* at = dynamic_cast<AnalogTrainable*>(m->macro());
    if (at == nullptr || !at->device_mode()) continue;
    nlohmann::ordered_json l;
    l["layer"] = i;
    l["summary"] = net_->layer(i).Summary();
    l["device"] = config_.At("pim").At("macro").At("device").GetString("impl");
    l["arrays"] = nlohmann::ordered_json::array();
    l["arrays"].push_back(nlohmann::ordered_json::parse(
        DeviceStateJson(at->weight_array(), "weights (C)")));
    if (const DeviceArray* a = at->fast_array_if_created()) {
      l["arrays"].push_back(nlohmann::ordered_json::parse(DeviceStateJson(*a, "fast array A")));
    }
    layers.push_back(l);
  }
  if (layers.empty()) return;
  nlohmann::ordered_json j;
  j["layers"] = layers;
  WriteFileAtomic(out_dir + "/devices.json", j.dump() + "\n");
}

EvalResult Session::EvaluateCheckpoint(const std::string& path) {
  std::string file = path;
  if (!FileExists(file)) throw IoError(path + ": no such checkpoint file or run directory");
  if (FileExists(path + "/checkpoint.bin")) file = path + "/checkpoint.bin";
  CheckpointInfo info = ReadCheckpointInfo(file);
  ConfigNode saved = ValidateRoot(ParseYaml(info.config_yaml, file));
  std::string diff = FirstDifference(saved.At("model"), config_.At("model"), {});
  if (!diff.empty()) {
    throw ConfigError(file + ": the checkpoint's model differs from the config's at '" + diff +
                      "'");
  }
  NamedTensors model_tensors;
  for (auto& t : trainer_->StateTensors()) {
    if (t.first.rfind("layers.", 0) == 0) model_tensors.push_back(t);
  }
  LoadCheckpoint(file, model_tensors, TensorMatch::kByName);
  // The write noise of the last update's programming (the config's batch size and data give
  // the step; an eval under another batch size reads another draw of the same law).
  ProgramMacros(LastStep(info.epochs_done));
  return trainer_->Evaluate(data_.test);
}

}  // namespace pim
