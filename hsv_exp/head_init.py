"""Head initialisation before fine-tuning: a random head, LP-FT, or EH-FT.

EH-FT (Yang et al., EMNLP 2022, code THUDM/Efficient-Head-Finetuning) trains the classification
head in a first stage jointly with a parameter-efficient method on the frozen backbone, throws the
PET parameters away, and then fine-tunes from the ORIGINAL pretrained backbone with that head.
LP-FT (Kumar et al. 2022) is the same with a head-only first stage.

- Stage 1 runs on the truncated model (head on the selected layer) through `train.train`, in its
  own dir `run_dir/head_init/` (checkpoint, frozen cache), so SIGTERM inside stage 1 resumes there.
  When it completes, `run_dir/head_init/head_init.pt` (the head's state, the stage-1 history,
  time and compute) is written atomically; a resumed run finds it and skips stage 1.
- The PET method sits on the window (`head_init.pet_layers=window`, default: the layers below it
  are frozen, so stage 1 runs over the frozen cache and is cheap) or on every kept layer
  (`kept`: the authors' placement on the whole, here truncated, model).
- Stage 2 is a fresh `build_model(selection)` (the pretrained weights bit for bit, no PET module),
  the stage-1 head loaded into it, then `tuning=`; `train.train` builds a fresh optimizer and
  schedule and checkpoints to `run_dir/checkpoint/` (never the stage-1 one).
- Budget (the authors', `finetune_roberta.py:285-288`): stage 1 takes `head_init.epochs`, or
  `round(fraction * train.epochs)` (at least 1; default a tenth), stage 2 the rest of train.epochs.
- Stage-1 lr defaults are the authors' (`scripts/finetune.sh:117-128`): head only 1e-3,
  BitFit/LoRA 5e-4, prefix 5e-3. BitFit trains every bias of the PET layers (attention, attention
  output, FFN, LayerNorm), LoRA r 8, alpha 16 on Q, K, V, O; prefix tuning as P-tuning v2 (17
  direct prefixes per layer, no reparametrisation MLP: their `--prefix_len 17`). Prefix tuning
  cannot work on DeBERTa-v2 (hsv_exp.tuning.prefix refuses it, before any training).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hsv_exp import checkpoint as ckpt
from hsv_exp.compute import accounting, injected_params
from hsv_exp.config import TaskConfig, TrainConfig, TuningConfig
from hsv_exp.run_dir import STAGE1_DIR, clean_checkpoint
from hsv_exp.strategy_config import HeadInitConfig, stage_epochs
from hsv_exp.data import Encoded
from hsv_exp.errors import HsvError
from hsv_exp.frozen_cache import has_frozen_prefix
from hsv_exp.selection import Selection
from hsv_exp.train import TrainResult, train
from hsv_exp.tuning import METHODS

log = logging.getLogger("hsv_exp")

# model_type -> LoRA targets Q, K, V, O (the authors' LoRAMixin adapts all four; tuning=lora defaults to Q, V).
LORA_QKVO = {
    "bert": ["query", "key", "value", "attention.output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense"],
    "mpnet": ["q", "k", "v", "o"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "attention.output.dense"],
}
STAGE = STAGE1_DIR  # the stage-1 dir in the run dir, and the `stage` mark of its history records
RESULT_FILE = "head_init.pt"




def pet_config(cfg: HeadInitConfig, model_type: str) -> TuningConfig | None:
    """The stage-1 PET method as a TuningConfig (None for LP-FT: the head alone trains)."""
    if cfg.name == "lpft":
        return None
    if cfg.method == "bitfit":  # every bias, LayerNorm biases included; no LayerNorm gains
        return TuningConfig(name="bitfit", train_layer_norm=False)
    if cfg.method == "lora":  # the authors' --lora-dropout defaults to None: no dropout
        return TuningConfig(name="lora", lora_r=8, lora_alpha=16, lora_dropout=0.0, train_layer_norm=False,
                            lora_target_modules=LORA_QKVO.get(model_type))
    return TuningConfig(name="prefix", prefix_length=17, prefix_hidden=0, train_layer_norm=False)


def stage1_selection(cfg: HeadInitConfig, selection: Selection) -> Selection:
    """The layers stage 1's PET method sits on: the window, or every kept layer (`kept`)."""
    if cfg.name == "ehft" and cfg.pet_layers == "kept":
        return replace(selection, tuned_layers=tuple(range(1, selection.head_layer + 1)))
    return selection


def model_type(model) -> str:
    return getattr(model.backbone.config, "model_type", type(model.backbone).__name__)


def training_flops(model, tuning: TuningConfig | None, train_data: Encoded, epochs: int, cache_frozen: str) -> dict:
    """compute.accounting of one training configuration, plus its total over `epochs` epochs of
    `train_data`: the first epoch runs the frozen prefix (or builds its cache), later ones skip it
    when the frozen cache is on."""
    config = model.backbone.config
    lengths = [len(feature["input_ids"]) for feature in train_data.features]
    flops = accounting(model.selection, config.hidden_size, getattr(config, "intermediate_size", 4 * config.hidden_size),
                       float(np.mean(lengths)), full_layer_weights_train=tuning is not None and tuning.name == "full",
                       injected_params=injected_params(model, tuning.name) if tuning is not None else 0,
                       prefix_keys=tuning.prefix_length if tuning is not None and tuning.name in ("prefix", "mam") else 0)
    tokens = float(sum(lengths))
    cached = has_frozen_prefix(model) and cache_frozen != "off"
    later = flops["train_flops_per_token_cached" if cached else "train_flops_per_token"]
    flops["train_tokens"] = tokens * epochs
    flops["train_flops"] = tokens * (flops["train_flops_per_token"] + (epochs - 1) * later)
    return flops


@dataclass
class HeadInitResult:
    head_state: dict[str, torch.Tensor]  # model.head.state_dict() after stage 1 (CPU tensors)
    history: list[dict]  # stage-1 per-epoch records, each marked {"stage": "head_init"}
    train_time_s: float
    epochs: int
    lr: float
    trainable_params: int  # head + PET parameters of stage 1
    compute: dict  # training_flops() of stage 1: add train_flops / train_time_s to the run's
    settings: dict  # what stage 1 depended on; a stored result with other settings is refused
    reused: bool = False  # True when a completed stage 1 was read back from run_dir/head_init/
    wall_s: float = 0.0  # stage 1's TrainResult.wall_s (train_time_s for a stored result older than it)

    def summary(self) -> dict:
        """metrics.json's `head_init` entry (everything but the tensors)."""
        return {key: value for key, value in asdict(self).items() if key != "head_state"}


def mark(history: list[dict], stage: str) -> list[dict]:
    return [{"stage": stage, **record} for record in history]


def pretrain_head(cfg: HeadInitConfig, build_model: Callable[[Selection], torch.nn.Module], selection: Selection,
                  train_data: Encoded, eval_data: dict[str, Encoded], task: TaskConfig, train_cfg: TrainConfig,
                  seed: int, pad_token_id: int, run_dir: Path | None = None, log_fn=lambda metrics: None,
                  progress: bool = False) -> HeadInitResult:
    """Stage 1: train the head (LP-FT) or the head with a PET method (EH-FT) on a fresh model.

    build_model(selection) must return a fresh LayerClassifier on a deep copy of the pretrained
    backbone at every call, with the backbone frozen and the head trainable (as LayerClassifier
    builds it); torch is seeded with `seed` before the call. train_cfg is the run's; stage 1
    replaces its epochs (stage_epochs), lr (cfg.stage1_lr, head included: head_lr=None).
    The stage-1 model is discarded; only the head's state is returned.
    """
    if not cfg.enabled:
        raise ValueError("pretrain_head needs head_init=lpft or ehft")
    epochs, _ = stage_epochs(cfg, train_cfg.epochs)
    stage_cfg = replace(train_cfg, epochs=epochs, lr=cfg.stage1_lr, head_lr=None)
    stage_selection = stage1_selection(cfg, selection)
    settings = {**asdict(cfg), "epochs": epochs, "lr": stage_cfg.lr, "seed": seed,
                "head_layer": stage_selection.head_layer, "pet_on": list(stage_selection.tuned_layers)}
    stage_dir = run_dir / STAGE if run_dir is not None else None
    stored = ckpt.load(stage_dir / RESULT_FILE) if stage_dir is not None else None
    if stored is not None:
        if stored["settings"] != settings:
            raise HsvError(f"{stage_dir / RESULT_FILE} holds a stage 1 with other settings ({stored['settings']}); delete it")
        log.info("head init: stage 1 already complete in %s, reusing its head", stage_dir)
        return HeadInitResult(**{"wall_s": stored["train_time_s"], **stored, "reused": True})

    torch.manual_seed(seed)
    model = build_model(stage_selection)
    tuning = pet_config(cfg, model_type(model))
    if tuning is not None:
        METHODS[tuning.name](model, tuning)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    log.info("head init %s: stage 1, %d epochs at lr %g, %d trainable params (%s on layers %s)", cfg.name, epochs,
             stage_cfg.lr, trainable, tuning.name if tuning else "head only", list(stage_selection.tuned_layers))
    result = train(model, train_data, eval_data, task, stage_cfg, seed, pad_token_id, run_dir=stage_dir,
                   log=lambda metrics: log_fn({f"{STAGE}/{key}": value for key, value in metrics.items()}),
                   progress=progress)
    outcome = HeadInitResult(
        head_state={name: tensor.detach().cpu().clone() for name, tensor in model.head.state_dict().items()},
        history=mark(result.history, STAGE), train_time_s=result.train_time_s, wall_s=result.wall_s, epochs=epochs,
        lr=stage_cfg.lr,
        trainable_params=trainable, compute=training_flops(model, tuning, train_data, epochs, stage_cfg.cache_frozen),
        settings=settings)
    if stage_dir is not None:
        ckpt.atomic_torch_save({key: value for key, value in asdict(outcome).items() if key != "reused"},
                               stage_dir / RESULT_FILE)
        if not train_cfg.keep_checkpoint:
            clean_checkpoint(stage_dir)
    return outcome


def stage2_model(build_model: Callable[[Selection], torch.nn.Module], selection: Selection, seed: int,
                 head_state: dict[str, torch.Tensor] | None, apply_tuning: Callable[[torch.nn.Module], None]):
    """The model stage 2 trains: fresh pretrained weights, the stage-1 head (None: the random one),
    then `tuning=`. Seeded like run.py's plain path, so head_init=random reproduces it exactly."""
    torch.manual_seed(seed)
    model = build_model(selection)
    if head_state is not None:
        model.head.load_state_dict(copy.deepcopy(head_state))
    apply_tuning(model)
    return model


@dataclass
class HeadInitRun:
    """Both stages: `train` is stage 2's TrainResult (best/last of the final model), `history` both
    stages' per-epoch records marked by stage, `head_init` None for head_init=random."""

    train: TrainResult
    head_init: HeadInitResult | None
    model: torch.nn.Module
    history: list[dict] = field(default_factory=list)

    @property
    def train_time_s(self) -> float:
        """Both stages' optimizer-step time, each summed over the processes that trained it."""
        return self.train.train_time_s + (self.head_init.train_time_s if self.head_init else 0.0)

    @property
    def wall_s(self) -> float:
        """Both stages' wall clock, each summed over the processes that trained it."""
        return self.train.wall_s + (self.head_init.wall_s if self.head_init else 0.0)


def train_with_head_init(cfg: HeadInitConfig, build_model: Callable[[Selection], torch.nn.Module], selection: Selection,
                         apply_tuning: Callable[[torch.nn.Module], None], train_data: Encoded,
                         eval_data: dict[str, Encoded], task: TaskConfig, train_cfg: TrainConfig, seed: int,
                         pad_token_id: int, run_dir: Path | None = None, log_fn=lambda metrics: None,
                         progress: bool = False, train_kwargs: dict | None = None) -> HeadInitRun:
    """Stage 1 (if any), then stage 2 for the rest of train.epochs at train_cfg's lr; resumable in either.
    train_kwargs: more keyword arguments of train.train for stage 2 (precision, regularizer)."""
    head = None
    if cfg.enabled:
        head = pretrain_head(cfg, build_model, selection, train_data, eval_data, task, train_cfg, seed, pad_token_id,
                             run_dir, log_fn, progress)
    _, epochs = stage_epochs(cfg, train_cfg.epochs)
    model = stage2_model(build_model, selection, seed, head.head_state if head else None, apply_tuning)
    result = train(model, train_data, eval_data, task, replace(train_cfg, epochs=epochs), seed, pad_token_id,
                   run_dir=run_dir, log=log_fn, progress=progress, **(train_kwargs or {}))
    history = (head.history if head else []) + mark(result.history, "train")
    return HeadInitRun(train=result, head_init=head, model=model, history=history)


def compute_summary(run: HeadInitRun, tuning: TuningConfig, train_data: Encoded, train_cfg: TrainConfig) -> dict:
    """Training FLOPs and time of both stages, for metrics.json's `compute` (added to run.py's dict).

    train_flops_fraction_total compares both stages with full fine-tuning of the whole model for all
    of train.epochs (the budget the two stages share). A regularizer on stage 2 (MVCR) adds its extra
    FLOPs per token on every stage-2 token, its AE-only epochs priced as joint ones: an upper bound,
    as compute.with_regularizer prices a run without head_init."""
    epochs = len(run.train.history)
    stage2 = training_flops(run.model, tuning, train_data, epochs, train_cfg.cache_frozen)
    if run.train.regularizer:
        stage2 = {**stage2, "train_flops": stage2["train_flops"]
                  + run.train.regularizer["extra_train_flops_per_token"] * stage2["train_tokens"]}
    stage1_flops = run.head_init.compute["train_flops"] if run.head_init else 0.0
    stage1_time = run.head_init.train_time_s if run.head_init else 0.0
    full_ft = stage2["full_ft_train_flops_per_token"] * stage2["train_tokens"] / epochs * train_cfg.epochs
    return {
        "head_init_train_flops": stage1_flops,
        "head_init_train_time_s": stage1_time,
        "stage2_train_flops": stage2["train_flops"],
        "train_flops_total": stage1_flops + stage2["train_flops"],
        "full_ft_train_flops_total": full_ft,
        "train_flops_fraction_total": (stage1_flops + stage2["train_flops"]) / full_ft,
        "train_time_s_total": run.train_time_s,
    }

