#!/bin/bash
# Run from the repository root: bash bench/pimqat_seeds.sh (PIMTRAIN=binary, WORK=run directory;
# about 5 minutes per seed on 2 cores). Results: bench/results_analog.md, session 4.
# Session 4: PIM-QAT at a 4-bit ADC, differential cells, 3 seeds: the session-3 setting (1 fine-tune
# epoch, deployment calibrated on a 256-sample batch) plus two variants applied to every seed:
# deployment calibrated on 1024 samples, and 2 fine-tune epochs (the peer too).
B=${PIMTRAIN:-build/release/pimtrain}
P=presets/chips/pimqat.yaml
acc() { /usr/bin/python3 -c "import json;print('%.2f'%(100*json.load(open('$1/summary.json'))['test_accuracy']))"; }
for seed in 1 2 3; do
  W=${WORK:-/tmp/pimqat_seeds}/s$seed; mkdir -p $W
  BASE="--set seed=$seed --set threads=2 --set train.checkpoint=true --set data.train_limit=10000 --set pim.macro.weight_encoding=differential --set pim.macro.adc.bits=4"
  dep() { echo "--set train.epochs=1 --set train.algorithm.mode=calibrate --set data.train_limit=$1 --set train.batch_size=$1"; }
  ft() { echo "--set train.epochs=$1 --set train.algorithm.init_from=$W/qat --set train.optimizer.learning_rate=0.002"; }
  $B train $P --out $W/qat $BASE --set train.epochs=3 --set train.algorithm.adc_in_loop=false >/dev/null; echo "seed $seed digital QAT: $(acc $W/qat)"
  for e in 1 2; do
    $B train $P --out $W/peer$e $BASE $(ft $e) --set train.algorithm.adc_in_loop=false >/dev/null; echo "seed $seed peer ft $e ep: $(acc $W/peer$e)"
    $B train $P --out $W/ft$e $BASE $(ft $e) --set train.algorithm.calibrate_every=20 >/dev/null; echo "seed $seed pimqat ft $e ep own: $(acc $W/ft$e)"
    for cb in 256 1024; do
      $B train $P --out $W/dep${e}_$cb $BASE $(dep $cb) --set train.algorithm.init_from=$W/ft$e >/dev/null; echo "seed $seed pimqat ft $e ep deployed cal $cb: $(acc $W/dep${e}_$cb)"
    done
  done
  for cb in 256 1024; do
    $B train $P --out $W/naive_$cb $BASE $(dep $cb) --set train.algorithm.init_from=$W/qat >/dev/null; echo "seed $seed naive cal $cb: $(acc $W/naive_$cb)"
  done
done
echo done
