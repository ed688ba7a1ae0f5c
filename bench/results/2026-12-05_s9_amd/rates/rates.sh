#!/usr/bin/env bash
# Steady-state steps/s of stanford_cpu fold runs: alone on both cores vs two at once, one core each.
set -u
OUT=/work/rates; rm -rf $OUT /tmp/rate_*; mkdir -p $OUT
cd /work/frozen31
{ lscpu | grep -E "Model name|^CPU\(s\)|L3"; git rev-parse --short HEAD; date -u +%FT%TZ; uptime; } > $OUT/host.txt
launch() {  # name cpus seconds extra...
  name=$1; cpus=$2; secs=$3; shift 3
  timeout $secs taskset -c $cpus python -m advseg_jax.main --config=configs/stanford_cpu.py \
    --workdir=/tmp/rate_$name --config.dataset=stanford_background/fold3 \
    --config.data_dir=/work/runs31/data --config.manual_dir=/work/shared/data/stanford_background \
    --config.seed=7 --config.log_every_steps=25 "$@" > $OUT/$name.log 2>&1
}
launch classical_2cores 0,1 170 --config.lambda_adv=0.0
launch adversarial_2cores 0,1 170
launch classical_1core 0 230 --config.lambda_adv=0.0 & launch adversarial_1core 1 230 & wait
date -u +%FT%TZ >> $OUT/host.txt
for f in $OUT/*.log; do
  python - "$f" >> $OUT/summary.txt <<'PY'
import re, sys, statistics
vals = [(int(s), float(v)) for s, v in re.findall(r"\[(\d+)\] steps_per_sec=([0-9.]+)", open(sys.argv[1]).read())]
steady = [v for s, v in vals if s > 100]
print(sys.argv[1].split("/")[-1], "logged", len(vals), "median steps/s after step 100:", round(statistics.median(steady), 3) if steady else None, "last step", vals[-1][0] if vals else None)
PY
done
echo done >> $OUT/summary.txt
