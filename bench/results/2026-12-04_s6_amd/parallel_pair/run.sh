#!/bin/bash
# Quiet window (session 6): issue 31 point 2 — a pair of runs, two at once on one CPU each
# (ablations.py --parallel=2) against one after the other on both CPUs (--parallel=1).
set -u
OUT=/work/quiet9_out; mkdir -p $OUT
PIDS=$(pgrep -f "advseg_jax.main --config" | tr '\n' ' ')
kill -STOP $PIDS
echo "$(date -u +%FT%TZ) SIGSTOP $PIDS (quiet9: parallel=1 vs 2, issue 31)" >> /work/runs31/lanes.log
trap 'kill -CONT $PIDS; echo "$(date -u +%FT%TZ) SIGCONT $PIDS" >> /work/runs31/lanes.log' EXIT
cd /work/wt_q8
{ lscpu | grep -E "Model name|^CPU\(s\)|L3"; git rev-parse --short HEAD; date -u +%FT%TZ; uptime; } > $OUT/host.txt
sleep 10
for parallel in 2 1; do
  rm -rf /tmp/pairtest_$parallel
  start=$(date +%s.%N)
  python experiments/ablations.py --config=configs/stanford_cpu.py --sweep=stanford_fig4 --seeds=1 \
    --workdir=/tmp/pairtest_$parallel --parallel=$parallel --config.dataset=stanford_background/fold0 \
    --config.data_dir=/work/tfds30 --config.manual_dir=/work/shared/data/stanford_background \
    --config.num_train_steps=572 --config.compilation_cache_dir= > $OUT/parallel_$parallel.log 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "parallel=$parallel rc=$rc wall_s=$(python -c "print(round($end-$start,1))") $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" >> $OUT/summary.txt
  for arm in classical adversarial; do
    tail -n 1 /tmp/pairtest_$parallel/$arm/seed_0/eval_history.jsonl | cut -c1-200 >> $OUT/parallel_${parallel}_evals.txt
  done
done
{ date -u +%FT%TZ; uptime; } >> $OUT/host.txt
echo done > $OUT/DONE
