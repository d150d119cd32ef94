// Tests of the optimizers' update rules (against hand-computed steps) and the LR schedules.
#include <gtest/gtest.h>

#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/optimizer.h"

namespace pim {
namespace {

std::unique_ptr<Optimizer> MakeOptimizer(const std::string& yaml) {
  return Registry<Optimizer>::CreateFrom(ParseYaml(yaml, "test"));
}

Parameter OneParam(float w, float g) {
  Parameter p{"weight", Tensor(Shape{1}), Tensor(Shape{1})};
  p.value[0] = w;
  p.grad[0] = g;
  return p;
}

TEST(OptimizerTest, SgdMomentumMatchesTheRecurrence) {
  auto opt = MakeOptimizer("{impl: sgd, learning_rate: 0.1, momentum: 0.9, weight_decay: 0.01}");
  Parameter p = OneParam(1.0f, 0.5f);
  opt->Attach({&p});
  double w = 1.0, v = 0.0;
  for (int t = 0; t < 5; ++t) {
    opt->Step(0.1);
    double g = 0.5 + 0.01 * w;
    v = 0.9 * v + g;
    w -= 0.1 * v;
    EXPECT_NEAR(p.value[0], w, 1e-6) << t;
  }
  EXPECT_EQ(opt->State().size(), 1u);
}

TEST(OptimizerTest, NesterovDiffersFromHeavyBall) {
  auto a = MakeOptimizer("{impl: sgd, momentum: 0.9}");
  auto b = MakeOptimizer("{impl: sgd, momentum: 0.9, nesterov: true}");
  Parameter pa = OneParam(1.0f, 1.0f), pb = OneParam(1.0f, 1.0f);
  a->Attach({&pa});
  b->Attach({&pb});
  a->Step(0.1);
  b->Step(0.1);
  EXPECT_FLOAT_EQ(pa.value[0], 0.9f);          // w - lr * g
  EXPECT_FLOAT_EQ(pb.value[0], 1.0f - 0.19f);  // w - lr * (g + mu * v)
}

TEST(OptimizerTest, AdamFirstStepMovesByTheLearningRate) {
  auto opt = MakeOptimizer("{impl: adam, learning_rate: 0.01}");
  Parameter p = OneParam(2.0f, -3.0f);
  opt->Attach({&p});
  opt->Step(0.01);
  // Bias-corrected m/sqrt(v) = g/|g| on the first step.
  EXPECT_NEAR(p.value[0], 2.01f, 1e-6);
  opt->Step(0.01);
  EXPECT_NEAR(p.value[0], 2.02f, 1e-5);
  EXPECT_EQ(opt->State().size(), 3u);  // step, m, v
}

std::unique_ptr<Schedule> MakeSchedule(const std::string& yaml) {
  return Registry<Schedule>::CreateFrom(ParseYaml(yaml, "test"));
}

TEST(ScheduleTest, StepDecaysEveryStepSize) {
  auto s = MakeSchedule("{impl: step, step_size: 2, gamma: 0.5}");
  EXPECT_DOUBLE_EQ(s->Factor(0, 0.9, 10), 1.0);
  EXPECT_DOUBLE_EQ(s->Factor(2, 0.0, 10), 0.5);
  EXPECT_DOUBLE_EQ(s->Factor(5, 0.0, 10), 0.25);
}

TEST(ScheduleTest, CosineStartsAtOneEndsAtMinAndWarmsUp) {
  auto s = MakeSchedule("{impl: cosine, min_factor: 0.1}");
  EXPECT_NEAR(s->Factor(0, 0.0, 4), 1.0, 1e-12);
  EXPECT_NEAR(s->Factor(2, 0.0, 4), 0.55, 1e-12);
  EXPECT_NEAR(s->Factor(3, 0.999999, 4), 0.1, 1e-6);
  auto w = MakeSchedule("{impl: cosine, warmup_epochs: 2}");
  EXPECT_NEAR(w->Factor(1, 0.0, 10), 0.5, 1e-6);
  EXPECT_NEAR(w->Factor(2, 0.0, 10), 1.0, 1e-6);
  EXPECT_DOUBLE_EQ(MakeSchedule("constant")->Factor(7, 0.3, 10), 1.0);
}

}  // namespace
}  // namespace pim
