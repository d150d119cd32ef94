// Trainer implementation.
#include "pimtrain/train/trainer.h"

#include <array>
#include <chrono>
#include <cmath>
#include <sstream>
#include <string_view>
#include <nlohmann/json.hpp>

#include "pimtrain/kernels/gemm.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {

namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A layer's counts and operand sparsity summed over the ranks of a data-parallel run (integers:
// any order gives the same sums). The weights' sparsity is the same on every rank and kept.
void SumOverRanks(BatchGroup& group, std::array<ActionCounts, kNumStages>* counts,
                  SparsityStats* sp) {
  std::string mine = "sparsity " + std::to_string(sp->input_elements) + " " +
                     std::to_string(sp->input_zeros) + " " + std::to_string(sp->error_elements) +
                     " " + std::to_string(sp->error_zeros) + "\n";
  for (int s = 0; s < kNumStages; ++s) {
    for (const auto& [name, n] : (*counts)[s].counts()) {
      mine += std::to_string(s) + " " + name + " " + std::to_string(n) + "\n";
    }
  }
  mine += "end\n";
  const std::string all = group.AllGather(mine);
  for (auto& c : *counts) c.Clear();
  sp->input_elements = sp->input_zeros = sp->error_elements = sp->error_zeros = 0;
  std::istringstream in(all);
  for (std::string word; in >> word;) {
    if (word == "end") continue;
    if (word == "sparsity") {
      int64_t a, b, c, d;
      in >> a >> b >> c >> d;
      sp->input_elements += a;
      sp->input_zeros += b;
      sp->error_elements += c;
      sp->error_zeros += d;
      continue;
    }
    std::string name;
    int64_t n = 0;
    in >> name >> n;
    (*counts)[std::stoi(word)].Add(name, n);
  }
}
}  // namespace

std::string EpochMetrics::ToJsonLine() const {
  nlohmann::ordered_json j;
  j["epoch"] = epoch;
  j["train_loss"] = train_loss;
  j["train_accuracy"] = train_accuracy;
  j["test_loss"] = test_loss;
  j["test_accuracy"] = test_accuracy;
  j["learning_rate"] = learning_rate;
  j["seconds"] = seconds;
  j["eval_seconds"] = eval_seconds;
  if (skipped_steps > 0) j["skipped_steps"] = skipped_steps;
  if (!hardware_json.empty()) {
    j["layers"] = nlohmann::ordered_json::parse(hardware_json);
    // The epoch's saturation events summed over the layers (per layer in layers[].saturation).
    auto saturation = nlohmann::ordered_json::object();
    for (const auto& l : j["layers"]) {
      if (!l.contains("saturation")) continue;
      for (const auto& [name, n] : l["saturation"].items()) {
        saturation[name] = saturation.value(name, int64_t{0}) + n.get<int64_t>();
      }
    }
    j["saturation"] = saturation;
    // The epoch's device pulses and verify reads summed over the layers (per layer in
    // layers[].device), only when a layer writes its devices by pulses.
    auto device = nlohmann::ordered_json::object();
    for (const auto& l : j["layers"]) {
      if (!l.contains("device")) continue;
      for (const auto& [name, n] : l["device"].items()) {
        device[name] = device.value(name, int64_t{0}) + n.get<int64_t>();
      }
    }
    if (!device.empty()) j["device"] = device;
  }
  if (!cost_json.empty()) j["cost"] = nlohmann::ordered_json::parse(cost_json);
  return j.dump();
}

Trainer::Trainer(Network& net, Optimizer& opt, Schedule& schedule, Loss& loss,
                 TrainingAlgorithm& algorithm, const LoadedData& data, TrainerOptions options)
    : net_(net),
      opt_(opt),
      schedule_(schedule),
      loss_(loss),
      algorithm_(algorithm),
      data_(data),
      options_(options) {
  if (options_.group != nullptr && options_.group->size() > 1) {
    data_parallel_ = std::make_unique<DataParallel>(*options_.group);
  }
  // A set-up cost of the run, not of its first epoch (EpochMetrics::seconds).
  kernels::fast::WarmUpGemm(&DefaultPool());
}

int64_t Trainer::steps_per_epoch() const {
  return (data_.train.size() + options_.batch_size - 1) / options_.batch_size;
}

EpochMetrics Trainer::RunEpoch(int64_t epoch, const ProgressFn& progress) {
  const int64_t n = data_.train.size();
  const int64_t steps = steps_per_epoch();
  std::vector<int64_t> order = EpochOrder(options_.seed, epoch, n);
  double loss_sum = 0;
  int64_t correct = 0, seen = 0, skipped = 0;
  std::string last_fault;
  double lr = 0;
  double start = Now();
  for (int64_t s = 0; s < steps; ++s) {
    int64_t b = s * options_.batch_size;
    int64_t e = std::min(n, b + options_.batch_size);
    GatherBatch(data_.train, order, b, e, batch_x_, batch_y_);
    StepContext ctx;
    ctx.seed = options_.seed;
    ctx.step = epoch * steps + s;
    ctx.epoch = epoch;
    ctx.mode = Mode::kTrain;
    ctx.pool = &DefaultPool();
    lr = opt_.base_learning_rate() *
         schedule_.Factor(epoch, static_cast<double>(s) / steps, options_.epochs);
    StepResult r;
    bool before_update = true;  // a fault the algorithm raised before its WU can be skipped
    try {
      r = data_parallel_ != nullptr
              ? data_parallel_->TrainStep(net_, batch_x_, batch_y_.data(), loss_, opt_, lr, ctx)
              : algorithm_.TrainStep(net_, batch_x_, batch_y_.data(), loss_, opt_, lr, ctx);
      before_update = false;
      // Whatever the algorithm checked itself, the loss and the state it leaves must be finite.
      CheckLossFinite(r.loss_sum, ctx);
      CheckStateFinite(net_, ctx);
    } catch (const NonfiniteFound& found) {
      SkipOrStop(found.fault(), before_update, ctx);  // throws NumericError to stop
      ++skipped;
      last_fault = found.fault().Describe();
      continue;
    }
    last_finite_loss_ = r.loss_sum / static_cast<double>(std::max<int64_t>(1, e - b));
    last_finite_step_ = ctx.step;
    loss_sum += r.loss_sum;
    correct += r.correct;
    seen += e - b;
    if (progress) {
      const double shown = static_cast<double>(std::max<int64_t>(1, seen));
      progress(s + 1, steps, loss_sum / shown, static_cast<double>(correct) / shown);
    }
  }
  if (skipped > 0 && skipped == steps) {
    throw NumericError("every step of epoch " + std::to_string(epoch + 1) +
                       " hit a non-finite value and was skipped (the last: " + last_fault +
                       "); the run cannot make progress");
  }
  EpochMetrics m;
  m.epoch = epoch + 1;
  m.seconds = Now() - start;
  m.train_loss = loss_sum / std::max<int64_t>(1, seen);
  m.train_accuracy = static_cast<double>(correct) / std::max<int64_t>(1, seen);
  m.learning_rate = lr;
  m.skipped_steps = skipped;
  m.samples = seen;
  m.hardware_json = TakeHardwareJson(&m.hardware);
  double eval_start = Now();
  EvalResult ev = Evaluate(data_.test);
  TakeHardwareJson();  // inference on the test set is not part of the training cost
  m.eval_seconds = Now() - eval_start;
  m.test_loss = ev.loss;
  m.test_accuracy = ev.accuracy;
  return m;
}

void Trainer::SkipOrStop(const NonfiniteFault& found, bool before_update,
                         const StepContext& ctx) {
  NonfiniteFault fault = found;
  fault.last_finite_loss = last_finite_loss_;
  fault.last_finite_step = last_finite_step_;
  if (!options_.skip_nonfinite_steps) {
    throw NumericError(fault.Describe() + "; stopping: " + fault.Advice() +
                       " (or set train.on_nonfinite: skip_step to skip such steps)");
  }
  if (!before_update) {
    throw NumericError(fault.Describe() +
                       "; the step cannot be skipped: the weights were already updated");
  }
  // The skipped step must leave no trace: parameters are untouched before WU, but layer state
  // written in FP (batch-norm running statistics) may already hold the bad value.
  try {
    CheckStateFinite(net_, ctx);
  } catch (const NonfiniteFound& state) {
    throw NumericError(fault.Describe() + "; the step cannot be skipped: " +
                       state.fault().Describe());
  }
}

EvalResult Trainer::Evaluate(const Split& split) {
  const int64_t n = split.size();
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  double loss_sum = 0;
  int64_t correct = 0;
  Tensor x;
  std::vector<int32_t> y;
  for (int64_t b = 0; b < n; b += options_.eval_batch_size) {
    int64_t e = std::min(n, b + options_.eval_batch_size);
    GatherBatch(split, order, b, e, x, y);
    StepContext ctx;
    ctx.seed = options_.seed;
    ctx.mode = Mode::kEval;
    ctx.pool = &DefaultPool();
    const Tensor& logits =
        data_parallel_ != nullptr ? data_parallel_->Forward(net_, x, ctx) : net_.Forward(x, ctx);
    LossResult r = loss_.Compute(logits, y.data(), nullptr);
    last_finite_loss_ = r.loss_sum / static_cast<double>(std::max<int64_t>(1, e - b));
    last_finite_step_ = ctx.step;
    loss_sum += r.loss_sum;
    correct += r.correct;
  }
  EvalResult out;
  out.loss = loss_sum / std::max<int64_t>(1, n);
  out.accuracy = static_cast<double>(correct) / std::max<int64_t>(1, n);
  return out;
}

std::string Trainer::TakeHardwareJson(std::vector<LayerHardware>* hardware) {
  auto layers = nlohmann::ordered_json::array();
  auto fraction = [](int64_t zeros, int64_t total) {
    return total > 0 ? static_cast<double>(zeros) / static_cast<double>(total) : 0.0;
  };
  for (int i = 0; i < net_.size(); ++i) {
    StagedMatmul* m = net_.layer(i).matmul();
    if (m == nullptr || !m->on_macro()) continue;
    SparsityStats sp = m->TakeSparsity();
    auto counts = m->TakeCounts();
    if (data_parallel_ != nullptr) SumOverRanks(data_parallel_->group(), &counts, &sp);
    nlohmann::ordered_json l;
    l["layer"] = i;
    l["summary"] = net_.layer(i).Summary();
    l["input_zero_fraction"] = fraction(sp.input_zeros, sp.input_elements);
    l["error_zero_fraction"] = fraction(sp.error_zeros, sp.error_elements);
    l["weight_zero_fraction"] = fraction(sp.weight_zeros, sp.weight_elements);
    // Cells holding weight bits over cells of the arrays the layer's mapping occupies (the
    // layout of the last programming).
    l["array_utilization"] = m->occupancy().utilization();
    auto actions = nlohmann::ordered_json::object();
    for (int s = 0; s < kNumStages; ++s) {
      auto stage = nlohmann::ordered_json::object();
      for (const auto& [name, n] : counts[s].counts()) stage[name] = n;
      actions[StageName(static_cast<Stage>(s))] = stage;
    }
    l["actions"] = actions;
    // Saturation events, summed over the stages: counts named *_clipped (e.g. adc_clipped, an
    // ADC code clipped to full scale), *_saturated or *_saturations (e.g. alignment_saturations,
    // a pre-aligned mantissa held at the datapath's largest magnitude).
    auto saturation = nlohmann::ordered_json::object();
    for (int s = 0; s < kNumStages; ++s) {
      for (const auto& [name, n] : counts[s].counts()) {
        const std::string_view key = name;  // (clang 14 cannot capture a structured binding)
        auto ends_with = [key](std::string_view suffix) {
          return key.size() >= suffix.size() && key.substr(key.size() - suffix.size()) == suffix;
        };
        if (ends_with("_clipped") || ends_with("_saturated") || ends_with("_saturations")) {
          saturation[name] = saturation.value(name, int64_t{0}) + n;
        }
      }
    }
    if (!saturation.empty()) l["saturation"] = saturation;
    // Analog device writes of the epoch (docs/devices.md): pulses and write-verify reads, with
    // the cells they reached and the pulse periods, summed over the stages (all are WU's).
    auto device = nlohmann::ordered_json::object();
    for (const char* name : {"device_pulses", "device_verify_reads", "device_cells_pulsed",
                             "device_pulse_slots"}) {
      int64_t total = 0;
      bool seen = false;
      for (int s = 0; s < kNumStages; ++s) {
        if (counts[s].counts().count(name) == 0) continue;
        total += counts[s].Get(name);
        seen = true;
      }
      if (seen) device[std::string(name).substr(7)] = total;
    }
    if (!device.empty()) {
      for (const char* name : {"pulses", "verify_reads"}) {
        if (!device.contains(name)) device[name] = 0;
      }
      l["device"] = device;
    }
    layers.push_back(l);
    if (hardware != nullptr) {
      LayerHardware h;
      h.layer = i;
      h.summary = net_.layer(i).Summary();
      h.hw = m->macro()->HardwareParams();
      // Weight-stationary: the layer computes on the arrays its weights occupy.
      if (double cells = CellsPerArray(h.hw); cells > 0 && m->occupancy().cells_allocated > 0) {
        h.hw["arrays_used"] =
            std::ceil(static_cast<double>(m->occupancy().cells_allocated) / cells);
        h.hw["cells_used"] = static_cast<double>(m->occupancy().cells_used);
      }
      h.counts = std::move(counts);
      hardware->push_back(std::move(h));
    }
  }
  return layers.empty() ? "" : layers.dump();
}

NamedTensors Trainer::StateTensors() {
  NamedTensors out;
  for (int i = 0; i < net_.size(); ++i) {
    std::string prefix = "layers." + std::to_string(i) + ".";
    for (auto* p : net_.layer(i).Parameters()) out.emplace_back(prefix + p->name, &p->value);
    for (auto& [name, t] : net_.layer(i).Buffers()) out.emplace_back(prefix + name, t);
  }
  auto state = opt_.State();
  for (size_t i = 0; i < state.size(); ++i) {
    out.emplace_back("optimizer." + std::to_string(i), state[i]);
  }
  for (auto& t : algorithm_.StateTensors()) out.emplace_back("algorithm." + t.first, t.second);
  return out;
}

}  // namespace pim
