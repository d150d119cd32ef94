// Session: one resolved config in; a trained model, metrics and a cost report out.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/cost/report.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/loss.h"
#include "pimtrain/nn/model.h"
#include "pimtrain/nn/optimizer.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/trainer.h"

namespace pim {

// The schema of a whole config file (seed, threads, data, model, train, ...).
const Schema& RootSchema();

// Loads the files in order (later ones override earlier ones), applies each "--set k=v", and
// validates the result against RootSchema: defaults filled in, every scalar typed.
ConfigNode ResolveConfig(const std::vector<std::string>& files,
                         const std::vector<std::string>& sets);
// Validates an already merged tree.
ConfigNode ValidateRoot(const ConfigNode& merged);

// The first key where two resolved configs differ ("" if none), ignoring `ignore` keys.
std::string FirstDifference(const ConfigNode& a, const ConfigNode& b,
                            const std::vector<std::string>& ignore);

struct TrainSummary {
  std::vector<EpochMetrics> epochs;
  double test_accuracy = 0;
  double train_seconds = 0;
  int64_t peak_rss_bytes = 0;
  // The cost model's report of the last trained epoch (when the config has a `cost:` block and
  // a layer runs on a macro); empty otherwise.
  bool has_cost = false;
  CostReport cost;
  double cost_energy_pj_all_epochs = 0;  // summed over the epochs trained in this call
  double cost_pricing_seconds = 0;       // wall time spent pricing counts
};

struct SessionCallbacks {
  std::function<void(const EpochMetrics&)> on_epoch;
  ProgressFn on_progress;
  std::function<void(const std::string&)> on_info;  // one-line notices (resumed from ...)
};

class Session {
 public:
  // `resolved` must come from ResolveConfig/ValidateRoot. Loads the data and builds the model.
  // With `group` (mpirun, several ranks) every batch is split over its ranks (docs/scaling.md):
  // the results are those of one process; only rank 0 writes files. UnsupportedError (naming the
  // key) for a run that cannot be split yet.
  explicit Session(ConfigNode resolved, BatchGroup* group = nullptr);
  ~Session();

  const ConfigNode& config() const { return config_; }
  const LoadedData& data() const { return data_; }
  Network& network() { return *net_; }
  Trainer& trainer() { return *trainer_; }
  // The config's cost model (nullptr without a `cost:` block).
  const CostModel* cost_model() const { return cost_.get(); }

  // Trains for train.epochs. With a non-empty `out_dir`, writes config.yaml, metrics.jsonl,
  // checkpoint.bin (each epoch) and summary.json there, each atomically. With `resume`, first
  // restores out_dir/checkpoint.bin (its config must match) and continues after its epoch.
  TrainSummary Train(const std::string& out_dir, bool resume, const SessionCallbacks& cb);

  // Restores the weights from a checkpoint file (or a run directory) and evaluates the test set.
  EvalResult EvaluateCheckpoint(const std::string& path);

 private:
  // Writes out_dir/devices.json (device states of the device-mode layers) if there are any.
  void WriteDeviceState(const std::string& out_dir);
  // Puts the weighted layers on the configured macro (pim.macro) and programs it.
  void AttachMacros();
  // Writes every macro layer's current weights into its array (after attach or a restore).
  // `step` keys the programming's write noise: after a restore, the step of the last weight
  // update, so the arrays read what they read when the checkpoint was written.
  void ProgramMacros(int64_t step = 0);
  // The global step of the last weight update after `epochs_done` epochs (0 when none).
  int64_t LastStep(int64_t epochs_done) const;

  ConfigNode config_;
  LoadedData data_;
  std::unique_ptr<Network> net_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<Schedule> schedule_;
  std::unique_ptr<Loss> loss_;
  std::unique_ptr<TrainingAlgorithm> algorithm_;
  std::unique_ptr<Trainer> trainer_;
  std::unique_ptr<CostModel> cost_;
  bool writes_files_ = true;  // false on the ranks other than 0 of a data-parallel run
};

}  // namespace pim
