// Per-layer, per-stage time of training steps: where an epoch goes (a profiling aid for the
// speed work in bench/results_perf.md, not a benchmark with a peer).
//
//   build/<dir>/bench/pimtrain_stage_profile CONFIG.yaml [steps=N] [key=value]...
//
// Builds the run's session (data, network, macros) from the config and `--set`-style overrides,
// then runs N training steps the way `backprop` and the trainer do (FP layer by layer, loss, the
// numeric guard's scans, GC and BP top-down with BP skipped at layer 0, SGD, WU) with a timer
// around each stage of each layer. Prints thread-CPU and wall milliseconds per stage, scaled to
// one epoch of the configured data set and batch. CPU time is the steadier figure on a shared
// machine (the calling thread's only: use threads=1).
#include <time.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/train/numeric_guard.h"

namespace {

double ThreadCpu() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}
double Wall() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pim;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG.yaml [steps=N] [key=value]...\n", argv[0]);
    return 2;
  }
  std::vector<std::string> sets;
  int64_t steps = 300;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("steps=", 0) == 0) {
      steps = std::stoll(a.substr(6));
    } else {
      sets.push_back(a);
    }
  }
  try {
    Session session(ResolveConfig({argv[1]}, sets));
    Network& net = session.network();
    if (net.is_graph()) {  // the loop below walks a stack layer by layer
      throw UnsupportedError(std::string(argv[1]) + ": stage_profile profiles stacks "
                             "(sequential, mlp); the model is a graph");
    }
    const ConfigNode& train = session.config().At("train");
    auto opt = Registry<Optimizer>::Create(train.At("optimizer"));
    opt->Attach(net.Parameters());
    auto loss = Registry<Loss>::Create(train.At("loss"));
    const int64_t batch = train.GetInt("batch_size");
    const Split& data = session.data().train;
    const int64_t per_epoch = (data.size() + batch - 1) / batch;

    std::map<std::string, std::pair<double, double>> acc;  // stage -> (cpu, wall)
    std::vector<std::string> order;
    auto timed = [&](const std::string& name, auto&& fn) {
      const double c0 = ThreadCpu(), w0 = Wall();
      fn();
      const double c1 = ThreadCpu(), w1 = Wall();
      if (acc.find(name) == acc.end()) order.push_back(name);
      acc[name].first += c1 - c0;
      acc[name].second += w1 - w0;
    };
    auto label = [&](const char* stage, int i) {
      return std::string(stage) + " " + std::to_string(i) + " " +
             net.layer(i).Summary().substr(0, 18);
    };
    const std::vector<int64_t> shuffled = EpochOrder(1, 0, data.size());
    const int n = net.size();
    Tensor x;
    std::vector<int32_t> y;
    std::vector<Tensor> acts(n + 1), errs(n + 1);
    const double c_start = ThreadCpu(), w_start = Wall();
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t b = (s % per_epoch) * batch, e = std::min(data.size(), b + batch);
      StepContext ctx;
      ctx.seed = 1;
      ctx.step = s;
      ctx.mode = Mode::kTrain;
      ctx.pool = &DefaultPool();
      timed("gather batch", [&] { GatherBatch(data, shuffled, b, e, x, y); });
      timed("copy input", [&] { acts[0] = x; });  // Network::Forward's copy
      for (int i = 0; i < n; ++i) {
        timed(label("FP", i), [&] { net.layer(i).Forward(acts[i], acts[i + 1], ctx); });
      }
      timed("loss", [&] { loss->Compute(acts[n], y.data(), &errs[n]); });
      timed("numeric scans", [&] {
        for (int i = 1; i <= n; ++i) FirstNonfinite(acts[i].data(), acts[i].numel());
      });
      for (int i = n - 1; i >= 0; --i) {
        timed(label("GC", i), [&] { net.layer(i).ComputeGradient(errs[i + 1], ctx); });
        if (i > 0) {
          timed(label("BP", i), [&] { net.layer(i).PropagateError(errs[i + 1], errs[i], ctx); });
        }
      }
      timed("numeric scans", [&] {
        for (int i = 0; i < n; ++i) {
          if (i > 0) FirstNonfinite(errs[i].data(), errs[i].numel());
          for (Parameter* p : net.layer(i).Parameters()) {
            FirstNonfinite(p->grad.data(), p->grad.numel());
          }
        }
      });
      timed("optimizer", [&] { opt->Step(0.01); });
      for (int i = 0; i < n; ++i) {
        if (net.layer(i).matmul() != nullptr) {
          timed(label("WU", i), [&] { net.layer(i).CommitUpdate(ctx); });
        }
      }
      timed("numeric scans", [&] {
        for (int i = 0; i < n; ++i) {
          for (Parameter* p : net.layer(i).Parameters()) {
            FirstNonfinite(p->value.data(), p->value.numel());
          }
        }
      });
    }
    const double cpu = ThreadCpu() - c_start, wall = Wall() - w_start;
    const double scale = 1e3 * static_cast<double>(per_epoch) / static_cast<double>(steps);
    std::printf("%-34s %9s %9s   ms per epoch (%lld steps of %lld; %lld per epoch)\n", "stage",
                "cpu", "wall", static_cast<long long>(steps), static_cast<long long>(batch),
                static_cast<long long>(per_epoch));
    for (const std::string& k : order) {
      const auto [c, w] = acc[k];
      if (w * scale < 0.5) continue;  // stages below 0.5 ms an epoch
      std::printf("%-34s %9.1f %9.1f\n", k.c_str(), c * scale, w * scale);
    }
    std::printf("%-34s %9.1f %9.1f\n", "total", cpu * scale, wall * scale);
  } catch (const Error& e) {
    std::fprintf(stderr, "pimtrain_stage_profile: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
