// The pimtrain command: train, eval, cost, describe.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pimtrain/nn/models/graph.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/io.h"
#include "pimtrain/nn/batch_group.h"
#include "pimtrain/cost/tech.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/sim/figures.h"
#include "pimtrain/sim/network_cost.h"
#include "pimtrain/sim/session.h"
#include "report.h"
#include "sweep.h"

namespace pim {
namespace {

constexpr int kUserErrorExit = 2;

std::string Percent(double f) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100.0 * f);
  return buf;
}

// A one-line progress bar on a terminal (stderr), nothing otherwise.
class Progress {
 public:
  Progress() : tty_(::isatty(STDERR_FILENO) == 1) {}
  void Epoch(int64_t epoch, int64_t epochs) {
    epoch_ = epoch;
    epochs_ = epochs;
  }
  void Update(int64_t step, int64_t steps, double loss, double acc) {
    if (!tty_) return;
    int64_t stride = std::max<int64_t>(1, steps / 100);
    if (step % stride != 0 && step != steps) return;
    constexpr int kWidth = 30;
    int filled = static_cast<int>(kWidth * step / steps);
    std::string bar(filled, '#');
    bar += std::string(kWidth - filled, '.');
    std::fprintf(stderr, "\r  epoch %lld/%lld [%s] %3d%%  loss %.4f  acc %s ",
                 static_cast<long long>(epoch_), static_cast<long long>(epochs_), bar.c_str(),
                 static_cast<int>(100 * step / steps), loss, Percent(acc).c_str());
    std::fflush(stderr);
  }
  void Clear() {
    if (!tty_) return;
    std::fprintf(stderr, "\r%80s\r", "");
    std::fflush(stderr);
  }

 private:
  bool tty_;
  int64_t epoch_ = 0, epochs_ = 0;
};

std::string DefaultRunDir() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof(buf), "runs/%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

int Train(const std::vector<std::string>& configs, const std::vector<std::string>& sets,
          std::string out, const std::string& resume, BatchGroup* group) {
  std::vector<std::string> files = configs;
  bool resuming = !resume.empty();
  if (resuming) {
    if (!out.empty() && out != resume) {
      throw ConfigError("--out and --resume name different directories; a resumed run continues "
                        "in its own directory");
    }
    out = resume;
    // Without a config, continue with the run's own resolved config.
    if (files.empty()) {
      if (!FileExists(resume + "/config.yaml")) {
        throw IoError(resume + "/config.yaml: no such file: the run was killed before it "
                      "started; give its config to resume it (pimtrain train CONFIG --resume " +
                      resume + ")");
      }
      files.push_back(resume + "/config.yaml");
    }
  }
  if (out.empty()) out = DefaultRunDir();
  ConfigNode config = ResolveConfig(files, sets);
  std::string name = config.Has("name") ? config.GetString("name") : "default";
  std::printf("pimtrain: training '%s' -> %s\n", name.c_str(), out.c_str());
  Session session(config, group);
  if (group != nullptr) {
    std::printf("data parallel: each batch split over %d MPI ranks (docs/scaling.md)\n",
                group->size());
  }
  const LoadedData& data = session.data();
  std::printf("data: %s, %lld train / %lld test samples of %s, %d classes\n", data.name.c_str(),
              static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
              data.sample_shape.ToString().c_str(), data.num_classes);
  std::printf("model:\n%s", session.network().Summary().c_str());
  std::fflush(stdout);

  const int64_t epochs = config.At("train").GetInt("epochs");
  Progress progress;
  SessionCallbacks cb;
  int64_t current = 0;
  cb.on_progress = [&](int64_t step, int64_t steps, double loss, double acc) {
    if (step == 1) progress.Epoch(++current, epochs);
    progress.Update(step, steps, loss, acc);
  };
  cb.on_epoch = [&](const EpochMetrics& m) {
    progress.Clear();
    current = m.epoch;
    std::printf("epoch %3lld/%lld  loss %.4f  train %s  test %s  lr %.4g  %.2f s\n",
                static_cast<long long>(m.epoch), static_cast<long long>(epochs), m.train_loss,
                Percent(m.train_accuracy).c_str(), Percent(m.test_accuracy).c_str(),
                m.learning_rate, m.seconds);
    std::fflush(stdout);
  };
  cb.on_info = [&](const std::string& msg) {
    std::printf("%s\n", msg.c_str());
    std::fflush(stdout);
  };
  // Resumed runs continue the epoch numbering from the checkpoint; a run killed before its
  // first checkpoint starts again (Session::Train checks that the config is the run's).
  if (resuming && FileExists(out + "/checkpoint.bin")) {
    current = ReadCheckpointInfo(out + "/checkpoint.bin").epochs_done;
  } else if (resuming) {
    std::fprintf(stderr, "pimtrain: %s has no checkpoint yet (the run stopped before its first "
                 "epoch ended): starting it from the beginning\n", out.c_str());
  }
  TrainSummary s = session.Train(out, resuming, cb);
  std::printf("test accuracy: %s after %lld epochs (%.1f s training, peak memory %.0f MiB)\n",
              Percent(s.test_accuracy).c_str(), static_cast<long long>(s.epochs.size()),
              s.train_seconds, static_cast<double>(s.peak_rss_bytes) / (1 << 20));
  if (s.has_cost) {
    std::printf("\n%s\n%s", s.cost.Headline().c_str(), s.cost.ToTable().c_str());
  }
  std::printf("results: %s/metrics.jsonl, %s/summary.json\n", out.c_str(), out.c_str());
  return 0;
}

// `eval --drift-time T...`: the test accuracy after T seconds of drift (pim.macro.deployment,
// docs/devices.md), mean and spread over `repeats` programmings, with and without global drift
// compensation.
int EvalDrift(const std::vector<std::string>& files, const std::vector<std::string>& sets,
              const std::string& checkpoint, const std::vector<double>& times, int repeats) {
  auto label = [](double t) {
    char buf[64];
    if (t >= 31536000) std::snprintf(buf, sizeof buf, "%g year", t / 31536000);
    else if (t >= 86400) std::snprintf(buf, sizeof buf, "%g day", t / 86400);
    else if (t >= 3600) std::snprintf(buf, sizeof buf, "%g h", t / 3600);
    else std::snprintf(buf, sizeof buf, "%g s", t);
    return std::string(buf);
  };
  // Every time is checked and the first row evaluated before the table's header is printed, so a
  // bad argument or an unreadable checkpoint leaves one error line, not a headed empty table.
  for (double t : times) {
    if (!(t >= 0)) throw ConfigError("--drift-time: " + std::to_string(t) + " is not >= 0 s");
  }
  bool header_printed = false;
  // The table also goes to DIR/drift.json when the checkpoint is a run directory, for the
  // report's accuracy-against-drift-time plot (docs/devices.md).
  nlohmann::ordered_json out;
  out["repeats"] = repeats;
  out["rows"] = nlohmann::ordered_json::array();
  for (double t : times) {
    std::string cells[2];
    nlohmann::ordered_json row;
    row["seconds"] = t;
    for (int comp = 1; comp >= 0; --comp) {
      double s = 0, s2 = 0;
      for (int r = 0; r < repeats; ++r) {
        std::vector<std::string> more = sets;
        char tb[64];
        std::snprintf(tb, sizeof tb, "%.17g", t);
        more.push_back(std::string("pim.macro.deployment.t_inference=") + tb);
        more.push_back("pim.macro.deployment.repetition=" + std::to_string(r));
        more.push_back(std::string("pim.macro.deployment.compensation=") +
                       (comp ? "true" : "false"));
        Session session(ResolveConfig(files, more));
        const double a = session.EvaluateCheckpoint(checkpoint).accuracy;
        s += a;
        s2 += a * a;
      }
      const double m = s / repeats, sd = std::sqrt(std::max(0.0, s2 / repeats - m * m));
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f %% +- %.2f", 100 * m, 100 * sd);
      cells[comp] = buf;
      row[comp ? "compensated" : "uncompensated"] = {{"mean", m}, {"std", sd}};
    }
    if (!header_printed) {
      std::printf("| drift time | accuracy, compensated (mean +- std, %d runs) | uncompensated |\n",
                  repeats);
      std::printf("|---|---|---|\n");
      header_printed = true;
    }
    std::printf("| %s | %s | %s |\n", label(t).c_str(), cells[1].c_str(), cells[0].c_str());
    std::fflush(stdout);
    out["rows"].push_back(row);
  }
  if (std::filesystem::is_directory(checkpoint)) {
    WriteFileAtomic(checkpoint + "/drift.json", out.dump(1) + "\n");
    std::printf("table: %s/drift.json\n", checkpoint.c_str());
  }
  return 0;
}

int Eval(const std::vector<std::string>& configs, const std::vector<std::string>& sets,
         const std::string& checkpoint, BatchGroup* group,
         const std::vector<double>& drift_times, int repeats) {
  std::vector<std::string> files = configs;
  if (files.empty()) {
    throw ConfigError("eval needs a config (the run's DIR/config.yaml works)");
  }
  if (!drift_times.empty()) return EvalDrift(files, sets, checkpoint, drift_times, repeats);
  Session session(ResolveConfig(files, sets), group);
  EvalResult r = session.EvaluateCheckpoint(checkpoint);
  std::printf("test accuracy: %s  (loss %.4f, %lld samples)\n", Percent(r.accuracy).c_str(),
              r.loss, static_cast<long long>(session.data().test.size()));
  return 0;
}

// `pimtrain cost PRESET --network NAME`: one inference of a network from its layer shapes.
int CostNetwork(const ConfigNode& config, const CostModel& model, const std::string& network,
                const std::vector<OperatingPoint>& points, const NetworkSparsity& sp, bool json,
                const std::string& name) {
  std::vector<WeightedLayerShape> layers;
  if (network == "model") {
    // The config's own model, on the data's 28 x 28 x 1 samples (the Fashion-MNIST sets).
    layers = LayerShapesOf(config.At("model"), 1, 28, 28);
  } else {
    layers = BuiltinNetwork(network);
  }
  std::string out = json ? "{\"preset\": \"" + name + "\", \"network\": \"" + network +
                               "\", \"operating_points\": [" : "";
  for (size_t i = 0; i < points.size(); ++i) {
    NetworkCost nc = PriceNetwork(config, model, layers, sp, points[i]);
    if (json) {
      out += (i ? ",\n" : "\n") + std::string("{\"operating_point\": \"") + points[i].name +
             "\", \"figures\": " + nc.ToJson() + "}";
    } else {
      std::printf("%s, network %s (%zu weighted layers, shapes only; input sparsity %.2g, weight "
                  "sparsity %.2g), one inference at %s:\n%s\n",
                  name.c_str(), network.c_str(),
                  static_cast<size_t>(std::count_if(layers.begin(), layers.end(),
                                                    [](const auto& l) { return l.k > 0; })),
                  sp.input, sp.weight,
                  points[i].name.c_str(), nc.ToTable().c_str());
    }
  }
  if (json) std::printf("%s]}\n", out.c_str());
  return 0;
}

int Cost(const std::vector<std::string>& args, const std::vector<std::string>& sets, bool json,
         const std::string& point, const std::string& network, const NetworkSparsity& sp) {
  if (args.empty()) throw ConfigError("cost needs a preset name or a config file");
  std::vector<std::string> files;
  for (const auto& a : args) files.push_back(ResolvePresetOrFile(a));
  ConfigNode config = ResolveConfig(files, sets);
  const ConfigNode* block = config.Find("cost");
  if (block == nullptr || block->IsNull()) {
    throw ConfigError(files.back() + ": no cost: block (pimtrain describe cost_model)");
  }
  std::unique_ptr<CostModel> model = Registry<CostModel>::Create(*block);
  std::vector<OperatingPoint> points;
  if (!point.empty()) {
    points.push_back(model->FindOperatingPoint(point));
  } else {
    points.push_back(model->operating_point());
    for (const auto& p : model->operating_points()) points.push_back(p);
  }
  if (!network.empty()) {
    return CostNetwork(config, *model, network, points, sp,  json,
                       config.Has("name") ? config.GetString("name") : files.back());
  }
  Workload dense;
  dense.input_sparsity = 0;
  std::vector<CostReport> reports;
  for (const auto& p : points) reports.push_back(BenchmarkMacro(config, *model, dense, p));
  std::vector<FigureCheck> checks = CheckExpected(config, *model);
  // A super-pipelined chip: what pipelining and local errors buy, on a slice of its workload.
  std::optional<PipelineComparison> pipes;
  if (model->schedule() == StageSchedule::kSuperPipelined) {
    pipes = ComparePipelines(config, 6000);
  }
  std::string name = config.Has("name") ? config.GetString("name") : files.back();
  if (json) {
    std::string out = "{\n\"preset\": \"" + name + "\",\n\"workload\": \"" +
                      dense.Describe() + "\",\n\"operating_points\": [";
    for (size_t i = 0; i < reports.size(); ++i) {
      out += (i ? ",\n" : "\n") + reports[i].ToJson();
    }
    out += "],\n\"expected\": " + FigureChecksJson(checks);
    if (pipes) {
      out += ",\n\"pipelining\": {\"speedup\": " + std::to_string(pipes->speedup()) +
             ", \"algorithm_speedup\": " + std::to_string(pipes->algorithm_speedup()) +
             ", \"schedule_speedup\": " + std::to_string(pipes->schedule_speedup()) +
             ", \"offchip_traffic_reduction\": " + std::to_string(pipes->traffic_reduction()) +
             ",\n\"backprop_sequential\": " + pipes->backprop_sequential.ToJson() +
             ",\n\"local_sequential\": " + pipes->local_sequential.ToJson() +
             ",\n\"local_super_pipelined\": " + pipes->local_super_pipelined.ToJson() + "}";
    }
    out += "\n}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%s: the chip's arrays filled with one dense workload (%s), priced at each "
              "operating point\n\n", name.c_str(), dense.Describe().c_str());
  for (const auto& r : reports) std::printf("%s\n", r.ToTable().c_str());
  if (!checks.empty()) {
    std::printf("published figures (expected:) vs the model:\n%s",
                FigureChecksTable(checks).c_str());
  }
  if (pipes) {
    const auto& b = pipes->backprop_sequential;
    const auto& q = pipes->local_sequential;
    const auto& l = pipes->local_super_pipelined;
    std::printf("\ntraining 6000 samples of the preset's workload at %s:\n", b.op.name.c_str());
    std::printf("  %-40s %12s %14s %14s\n", "", "latency (s)", "energy (uJ)", "off-chip (Mbit)");
    std::printf("  %-40s %12.4g %14.4g %14.4g\n", "backprop, no pipelining", b.seconds,
                b.energy_pj * 1e-6, b.offchip_bits * 1e-6);
    std::printf("  %-40s %12.4g %14.4g %14.4g\n", "local error prediction, no pipelining",
                q.seconds, q.energy_pj * 1e-6, q.offchip_bits * 1e-6);
    std::printf("  %-40s %12.4g %14.4g %14.4g\n", "local error prediction, super-pipelined",
                l.seconds, l.energy_pj * 1e-6, l.offchip_bits * 1e-6);
    std::printf("  speedup %.2fx = algorithm (local errors) %.2fx x schedule (super-pipeline) "
                "%.2fx; off-chip traffic reduced %.2fx\n",
                pipes->speedup(), pipes->algorithm_speedup(), pipes->schedule_speedup(),
                pipes->traffic_reduction());
  }
  return 0;
}

void DescribeImpl(const ImplInfo& info) {
  std::printf("%s/%s: %s\n", info.role.c_str(), info.name.c_str(), info.description.c_str());
  if (info.schema.params().empty()) {
    std::printf("  (no parameters)\n");
    return;
  }
  for (const auto& p : info.schema.params()) {
    std::string def = p.default_text().has_value() ? *p.default_text()
                      : p.optional()               ? "(optional)"
                                                   : "(required)";
    std::printf("  %-18s %-30s default %-12s%s%s  %s\n", p.name().c_str(),
                p.TypeDescription().c_str(), def.c_str(), p.unit().empty() ? "" : " unit ",
                p.unit().c_str(), p.doc().c_str());
  }
}

void DescribeSchema(const Schema& schema, const std::string& prefix) {
  for (const auto& p : schema.params()) {
    std::string def = p.default_text().has_value() ? *p.default_text()
                      : p.optional()               ? "(optional)"
                                                   : "(required)";
    std::string name = prefix + p.name();
    if (p.type() == ParamType::kSection) {
      std::printf("  %-24s %s\n", (name + ":").c_str(), p.doc().c_str());
      DescribeSchema(*p.section(), name + ".");
      continue;
    }
    std::printf("  %-24s %-28s default %-14s  %s\n", name.c_str(), p.TypeDescription().c_str(),
                def.c_str(), p.doc().c_str());
  }
}

// A macro's declared counters (at its default parameters), or a cost model's pricing of every
// declared counter it knows (docs/cost.md, "Declared counters").
void DescribeCounters(const ImplInfo& info) {
  if (info.role != "macro" && info.role != "cost_model") return;
  ConfigNode block = ConfigNode::Map();
  block.Set("impl", ConfigNode::Scalar(info.name));
  block.SetPaths(info.role);
  try {
    if (info.role == "macro") {
      CounterSet set = Registry<Macro>::CreateFrom(block)->Counters();
      std::printf("  counters (name, unit, stages, meaning; counted by):\n");
      for (const auto& name : set.names()) {
        const CounterInfo* c = CounterTable::Find(name);
        std::printf("    %-24s %-18s %-9s %s (%s)\n", name.c_str(), c->unit.c_str(),
                    c->stages.c_str(), c->meaning.c_str(), c->owner.c_str());
      }
    } else {
      auto model = Registry<CostModel>::CreateFrom(block);
      std::printf("  pricing of the counters (priced: component and rule; ignored: why):\n");
      for (const auto& [name, p] : model->pricing()) {
        const CounterInfo* c = CounterTable::Find(name);
        std::printf("    %-24s %-18s %-8s %s\n", name.c_str(), c ? c->unit.c_str() : "?",
                    p.priced ? "priced" : "ignored", p.how.c_str());
      }
    }
  } catch (const Error& e) {
    std::printf("  (counters need parameters beyond the defaults: %s)\n", e.what());
  }
}

int Describe(const std::string& what) {
  if (what.empty()) {
    std::printf("config file keys:\n");
    DescribeSchema(RootSchema(), "");
    std::printf("\nregistered implementations (pimtrain describe ROLE or ROLE/NAME for details):\n");
    for (const auto& role : RegistryIndex::Roles()) {
      std::printf("%s:\n", role.c_str());
      for (const auto* info : RegistryIndex::Implementations(role)) {
        std::printf("  %-22s %s\n", info->name.c_str(), info->description.c_str());
      }
    }
    return 0;
  }
  if (FileExists(what) && !std::filesystem::is_directory(what)) {
    // A config file: its model as built for its data set (the data is read for its shape).
    Session session(ResolveConfig({what}, {}));
    Network& net = session.network();
    int64_t params = 0;
    for (auto* t : net.Parameters()) params += t->value.numel();
    std::printf("config %s: model for input %s, %lld parameters, %lld forward MACs per "
                "sample\n%s",
                what.c_str(), net.input_shape().ToString().c_str(),
                static_cast<long long>(params),
                static_cast<long long>(net.ForwardMacsPerSample()), net.Summary().c_str());
    return 0;
  }
  size_t slash = what.find('/');
  std::string role = what.substr(0, slash);
  auto roles = RegistryIndex::Roles();
  if (std::find(roles.begin(), roles.end(), role) == roles.end()) {
    throw ConfigError("describe: '" + what + "' is neither a config file nor a role" +
                      DidYouMean(role, roles) + "; roles: " + [&] {
                        std::string s;
                        for (const auto& r : roles) s += (s.empty() ? "" : ", ") + r;
                        return s;
                      }());
  }
  if (slash == std::string::npos) {
    for (const auto* info : RegistryIndex::Implementations(role)) {
      DescribeImpl(*info);
      std::printf("\n");
    }
    return 0;
  }
  std::string name = what.substr(slash + 1);
  const ImplInfo* info = RegistryIndex::Find(role, name);
  if (info == nullptr && role == "model") {
    const auto presets = ModelPresetNames();
    if (std::find(presets.begin(), presets.end(), name) != presets.end()) {
      // A model preset: its graph built at the input it was made for (no data read).
      ModelPreset p = LoadModelPreset(name, "describe");
      Network net = BuildPresetNetwork(name);
      int64_t params = 0;
      for (auto* t : net.Parameters()) params += t->value.numel();
      std::printf("model preset %s (%s): input %s, %d classes, %lld parameters, %lld forward "
                  "MACs per sample\n%s",
                  name.c_str(), p.path.c_str(), p.input.ToString().c_str(), p.classes,
                  static_cast<long long>(params),
                  static_cast<long long>(net.ForwardMacsPerSample()), net.Summary().c_str());
      return 0;
    }
  }
  if (info == nullptr) {
    std::vector<std::string> names;
    for (const auto* i : RegistryIndex::Implementations(role)) names.push_back(i->name);
    throw ConfigError("describe: unknown " + role + " '" + name + "'" + DidYouMean(name, names));
  }
  DescribeImpl(*info);
  DescribeCounters(*info);
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"pimtrain: train and run neural networks on simulated processing-in-memory chips"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "pimtrain 0.1.0");

  std::vector<std::string> configs, sets;
  std::string out, resume, checkpoint, what;

  auto* train = app.add_subcommand("train", "train a model (the default MLP without a config)");
  train->add_option("config", configs, "config files, merged in order")->check(CLI::ExistingFile);
  train->add_option("--set", sets, "override a key: --set train.epochs=3 (repeatable)");
  train->add_option("--out", out, "run directory (default runs/DATE-TIME)");
  train->add_option("--resume", resume, "continue the run in DIR from its last checkpoint");

  auto* eval = app.add_subcommand("eval", "test accuracy of a saved model");
  eval->add_option("config", configs, "config files, merged in order")->check(CLI::ExistingFile);
  eval->add_option("--set", sets, "override a key (repeatable)");
  eval->add_option("--checkpoint", checkpoint, "run directory or checkpoint file")->required();
  std::vector<double> drift_times;
  int drift_repeats = 3;
  eval->add_option("--drift-time", drift_times,
                   "seconds of conductance drift (several: a table; docs/devices.md)");
  eval->add_option("--repeats", drift_repeats, "programmings per drift time (mean and spread)")
      ->check(CLI::Range(1, 1000));

  bool json = false;
  std::string point;
  auto* cost = app.add_subcommand("cost", "a preset's energy, latency and area figures, and its "
                                          "published figures against the model");
  cost->add_option("preset", configs, "preset name (presets/chips/NAME.yaml) or config files");
  cost->add_option("--set", sets, "override a key (repeatable)");
  cost->add_flag("--json", json, "print JSON (every figure with its unit)");
  cost->add_option("--point", point, "only this operating point");
  std::string network;
  NetworkSparsity sparsity;
  cost->add_option("--network", network,
                   "price one inference of a network from its layer shapes (vgg8, vgg16, "
                   "alexnet, cnn, mlp, a model preset such as resnet18 or resnet50, or model: "
                   "the config's own)");
  cost->add_option("--input-sparsity", sparsity.input, "zero fraction of activations (0.5)")
      ->check(CLI::Range(0.0, 0.99));
  cost->add_option("--weight-sparsity", sparsity.weight, "zero fraction of weights (0)")
      ->check(CLI::Range(0.0, 0.99));

  auto* describe = app.add_subcommand("describe", "list implementations and their parameters");
  describe->add_option("what", what, "ROLE, ROLE/NAME (e.g. layer/conv2d, model/resnet20) or a CONFIG file (its model as built)");

  auto sweep = AddSweepCommand(app);  // tools/cli/sweep.cc
  auto report = AddReportCommand(app);  // tools/cli/report.cc

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "pimtrain: error: %s (see pimtrain --help)\n", e.what());
    return kUserErrorExit;
  }

  // Under mpirun, train and eval split every batch over the ranks (docs/scaling.md).
  std::unique_ptr<BatchGroup> group;
  try {
    if (train->parsed() || eval->parsed()) {
      group = StartBatchGroup();
      // Rank 0 speaks for the run (it computes the same numbers as every rank).
      if (group != nullptr && group->rank() != 0 &&
          std::freopen("/dev/null", "w", stdout) == nullptr) {
        group->Abort("cannot silence the output of this rank");
      }
    }
    if (train->parsed()) return Train(configs, sets, out, resume, group.get());
    if (eval->parsed()) return Eval(configs, sets, checkpoint, group.get(), drift_times, drift_repeats);
    if (cost->parsed()) return Cost(configs, sets, json, point, network, sparsity);
    if (describe->parsed()) return Describe(what);
    if (sweep->app->parsed()) return RunSweepCommand(*sweep);
    if (report->app->parsed()) return RunReportCommand(*report);
  } catch (const Error& e) {
    std::fflush(stdout);
    if (group != nullptr) {
      // The other ranks may wait in a collective: end the job. A user error (the config, the
      // data) is the same on every rank, so the others leave rank 0 a moment to report it
      // first (mpirun ends them when it exits); an error of one rank alone is still reported.
      if (group->rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(2));
      group->Abort(e.what());
    }
    std::fprintf(stderr, "pimtrain: error: %s\n", e.what());
    return kUserErrorExit;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr, "pimtrain: error: out of memory\n");
    return kUserErrorExit;
  }
  return 0;
}

}  // namespace
}  // namespace pim

int main(int argc, char** argv) { return pim::Main(argc, argv); }
