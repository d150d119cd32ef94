// Per-layer, per-stage time of training steps: where an epoch goes (a profiling aid for the
// speed work in bench/results_perf.md, not a benchmark with a peer).
//
//   build/<dir>/bench/pimtrain_stage_profile CONFIG.yaml [steps=N] [key=value]...
//
// Builds the run's session (data, network, macros) from the config and `--set`-style overrides,
// then runs N training steps the way `backprop` and the trainer do (FP node by node, loss, the
// numeric guard's scans, GC and BP top-down, SGD, WU) with a timer around each stage of each
// node (graph models: fan-out errors summed as Network does), then a table per layer kind.
// Prints thread-CPU and wall milliseconds per stage, scaled to one epoch of the configured data
// set and batch. CPU time is the steadier figure on a shared machine (the calling thread's
// only: use threads=1).
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
    // Buffers indexed as Network's: acts[i + 1] / errs[i + 1] are node i's output and its
    // error; a node read by several consumers gets one error per (consumer, slot), summed in
    // consumer order (Network::GatherError).
    std::vector<Tensor> acts(n + 1), errs(n + 1);
    std::vector<std::vector<std::pair<int, int>>> consumers(n);
    std::vector<std::vector<Tensor>> edge(n);
    for (int i = 0; i < n; ++i) {
      edge[i].resize(net.node_inputs(i).size());
      for (size_t k = 0; k < net.node_inputs(i).size(); ++k) {
        const int j = net.node_inputs(i)[k];
        if (j >= 0) consumers[j].emplace_back(i, static_cast<int>(k));
      }
    }
    Tensor sink;
    auto slot = [&](int i, size_t k) -> Tensor* {
      const int j = net.node_inputs(i)[k];
      if (j < 0) return &sink;
      return consumers[j].size() == 1 ? &errs[j + 1] : &edge[i][k];
    };
    // Per layer kind ("conv2d", "batch_norm", ...) and stage, summed over the nodes.
    std::map<std::string, std::pair<double, double>> by_kind;
    auto kind_timed = [&](const char* stage, int i, auto&& fn) {
      const std::string name = label(stage, i);
      const double c0 = ThreadCpu(), w0 = Wall();
      timed(name, fn);
      const std::string summary = net.layer(i).Summary();
      auto& k = by_kind[std::string(stage) + " " + summary.substr(0, summary.find(' '))];
      k.first += ThreadCpu() - c0;
      k.second += Wall() - w0;
    };
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
        kind_timed("FP", i, [&] {
          const auto& in = net.node_inputs(i);
          if (in.size() == 1 && net.layer(i).num_inputs() == 1) {
            net.layer(i).Forward(acts[in[0] + 1], acts[i + 1], ctx);
            return;
          }
          std::vector<const Tensor*> xs;
          for (int j : in) xs.push_back(&acts[j + 1]);
          net.layer(i).ForwardInputs(xs, acts[i + 1], ctx);
        });
        // backprop scans each node's output right after its FP, while it is in cache.
        timed("numeric scans", [&] { FirstNonfinite(acts[i + 1].data(), acts[i + 1].numel()); });
      }
      timed("loss", [&] { loss->Compute(acts[n], y.data(), &errs[n]); });
      for (int i = n - 1; i >= 0; --i) {
        if (consumers[i].size() > 1) {
          timed("graph fan-out sums", [&] {
            errs[i + 1].Resize(acts[i + 1].shape());
            std::vector<const float*> parts;
            for (const auto& [c, k] : consumers[i]) parts.push_back(edge[c][k].data());
            float* o = errs[i + 1].data();
            const int64_t len = errs[i + 1].numel();
            for (int64_t t = 0; t < len; ++t) o[t] = parts[0][t] + parts[1][t];
            for (size_t p = 2; p < parts.size(); ++p) {
              for (int64_t t = 0; t < len; ++t) o[t] += parts[p][t];
            }
          });
        }
        kind_timed("GC", i, [&] { net.layer(i).ComputeGradient(errs[i + 1], ctx); });
        if (net.PropagatesError(i)) {
          kind_timed("BP", i, [&] {
            const auto& in = net.node_inputs(i);
            if (in.size() == 1 && net.layer(i).num_inputs() == 1) {
              net.layer(i).PropagateError(errs[i + 1], *slot(i, 0), ctx);
              return;
            }
            std::vector<Tensor*> dxs;
            for (size_t k = 0; k < in.size(); ++k) dxs.push_back(slot(i, k));
            net.layer(i).PropagateErrorInputs(errs[i + 1], dxs, ctx);
          });
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
          kind_timed("WU", i, [&] { net.layer(i).CommitUpdate(ctx); });
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
    std::printf("\nby layer kind and stage (summed over the nodes)\n");
    for (const auto& [k, t] : by_kind) {
      if (t.second * scale < 0.5) continue;
      std::printf("%-34s %9.1f %9.1f\n", k.c_str(), t.first * scale, t.second * scale);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "pimtrain_stage_profile: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
