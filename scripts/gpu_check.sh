#!/usr/bin/env bash
# The GPU check, run on a GPU machine without network from the repo root, after scripts/gpu_pack.sh
# ran here and .gpu travels with it (device tool: carry [".gpu"]). Writes results/bench/*_cuda.* and
# logs under $OUT (or ./gpu_out). About 5 minutes on one H200.
#   bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled GLUE_DIR="$PWD/.gpu/glue"
# The image has torch, transformers, peft; hydra-core and omegaconf come as carried wheels (antlr4 as an sdist).
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .gpu/whl/* || exit 1
export PYTHONPATH="/tmp/site:$PWD"
MODEL="model.name_or_path=$PWD/.gpu/minilm"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
status=0
# 1. The CUDA-marked tests (tiny models; never run in CI).
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_tuning.py 2>&1 | tee "$OUT/pytest_gpu.log" | tail -3 || status=1
# 2. One bf16 training run on real RTE (precision=auto picks bf16 on a bf16-capable GPU).
python3 -m hsv_exp task=rte "$MODEL" logger=none select=top select.k=2 tuning=full train.epochs=2 \
  hydra.run.dir="$OUT/run_rte" 2>&1 | tail -4 | tee "$OUT/run_rte.log" || status=1
# 3. The speed benchmark in CUDA mode (fp32/bf16 side by side is in precision; this is per-epoch time vs FLOPs).
python3 -m benchmarks.bench --device cuda --model-path "$PWD/.gpu/minilm" --glue-dir "$GLUE_DIR" --out results/bench \
  2>&1 | tail -5 | tee "$OUT/bench.log" || status=1
cp results/bench/bench_cuda.* "$OUT/" 2>/dev/null
exit $status
