#!/bin/bash
# Issue 34: is each config's train step the same program as at 7b43d2c (before the loop changes)?
cd "$(git rev-parse --show-toplevel)"
OUT=bench/results/2026-12-04_s6_amd/program_digests
mkdir -p $OUT
{ lscpu | grep -E "Model name|^CPU\(s\)"; git rev-parse --short HEAD; date -u +%FT%TZ; } > $OUT/host.txt
run() { name=$1; shift; nice python bench/side_by_side.py --rev=7b43d2c --digest_only "$@" > $OUT/$name.json 2> $OUT/$name.err; tail -1 $OUT/$name.json >> $OUT/summary.txt; }
: > $OUT/summary.txt
for v in baseline adversarial; do
  run default_$v --config=configs/default.py --variant=$v
  run stanford_cpu_$v --config=configs/stanford_cpu.py --variant=$v
  run stanford_background_b16_$v --config=configs/stanford_background.py --variant=$v --set batch_size=16
  run voc_b1_$v --config=configs/voc.py --variant=$v --set batch_size=1
  run folder_$v --config=configs/folder.py --variant=$v --set num_classes=9 --set num_train_steps=3500
done
run stanford_semi --config=configs/stanford_semi.py --variant=adversarial
run voc_semi_b1 --config=configs/voc_semi.py --variant=adversarial --set batch_size=1
run voc_b16_accumulated --config=configs/voc.py --variant=adversarial --set batch_size=16
date -u +%FT%TZ >> $OUT/host.txt
