// `softmax_cross_entropy` loss: log-softmax + negative log-likelihood, optional label smoothing.
#include <cmath>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/loss.h"

namespace pim {
namespace {

// Per sample with logits z (K classes), label y and smoothing e:
//   log p_k = z_k - max(z) - log sum_j exp(z_j - max(z))        (stable log-softmax)
//   q_k = (1 - e) [k = y] + e / K
//   loss = -sum_k q_k log p_k
//   dloss/dz_k = p_k - q_k, divided by N for the mean over the batch.
// Rows are processed in order and summed in double: no threads, the sizes are tiny (N x K).
class SoftmaxCrossEntropy final : public Loss {
 public:
  explicit SoftmaxCrossEntropy(const ConfigNode& p) : smoothing_(p.GetDouble("label_smoothing")) {
    if (smoothing_ >= 1.0) {
      throw ConfigError(p.At("label_smoothing").Where() + ": " + p.At("label_smoothing").text() +
                        " is outside [0, 1)");
    }
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("label_smoothing")
              .Default(0.0)
              .Range(0, 1)
              .Doc("mass spread uniformly over all classes, in [0, 1)"));
    return s;
  }

  LossResult Compute(const Tensor& logits, const int32_t* labels, Tensor* dlogits) override {
    const ConstMatrixView z = logits.AsMatrix();
    const int64_t n = z.rows, k = z.cols;
    if (dlogits != nullptr) dlogits->Resize(logits.shape());
    const double off = smoothing_ / static_cast<double>(k);
    const double on = 1.0 - smoothing_ + off;
    const double inv_n = 1.0 / static_cast<double>(n);
    LossResult result;
    for (int64_t i = 0; i < n; ++i) {
      const float* row = z.Row(i);
      const int32_t y = labels[i];
      if (y < 0 || y >= k) {
        throw DataError("label " + std::to_string(y) + " of sample " + std::to_string(i) +
                        " is outside [0, " + std::to_string(k) + ")");
      }
      int64_t best = 0;
      for (int64_t j = 1; j < k; ++j) {
        if (row[j] > row[best]) best = j;
      }
      const double zmax = row[best];
      double sum_exp = 0.0, sum_z = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        sum_exp += std::exp(static_cast<double>(row[j]) - zmax);
        sum_z += static_cast<double>(row[j]) - zmax;
      }
      const double log_sum = std::log(sum_exp);
      // -sum_k q_k log p_k = -(on - off) log p_y - off * sum_k log p_k.
      const double log_py = static_cast<double>(row[y]) - zmax - log_sum;
      const double sum_log_p = sum_z - static_cast<double>(k) * log_sum;
      result.loss_sum += -(on - off) * log_py - off * sum_log_p;
      result.correct += best == y ? 1 : 0;
      if (dlogits != nullptr) {
        float* d = dlogits->data() + i * k;
        for (int64_t j = 0; j < k; ++j) {
          const double p = std::exp(static_cast<double>(row[j]) - zmax - log_sum);
          d[j] = static_cast<float>((p - (j == y ? on : off)) * inv_n);
        }
      }
    }
    return result;
  }

 private:
  double smoothing_;
};

PIM_REGISTER(Loss, SoftmaxCrossEntropy, "softmax_cross_entropy",
             "softmax + cross-entropy on logits (mean over the batch), optional label smoothing");

}  // namespace
}  // namespace pim
