"""The real conf/ composed with Hydra's compose API: every option of every group, and the errors.

The options are read from conf/<group>/*.yaml, so a config added later is covered without
touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from hsv_exp.cli import CONF_DIR  # registers the schema and the hsv.dirname resolver
from hsv_exp.config import Config, overrides_of_dirname, run_dirname, to_config
from hsv_exp.errors import ConfigError

# conf/local holds git-ignored site settings; `optional local: default` loads them in every compose.
GROUPS = sorted(path.name for path in Path(CONF_DIR).iterdir()
                if path.is_dir() and path.name != "local" and any(path.glob("*.yaml")))
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]
# What an option needs on the command line to be complete, as its yaml says.
REQUIRED = {("select", "manual"): ["select.head_layer=3"]}
# Groups whose option name is the `name` that run dirs, W&B tags and results tables show.
NAMED_BY_OPTION = ("model", "task", "metric", "select", "logger")
# Variants of another option (their defaults list names it) keep its name: sst2_8k is SST-2, subsampled.
VARIANT_OF = {("task", "sst2_8k"): "sst2"}

# Label order of the hub's nyu-mll/glue ClassLabels, and the download script's folder names.
HUB_LABELS = {"cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
              "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
              "mnli": ["entailment", "neutral", "contradiction"], "qnli": ["entailment", "not_entailment"],
              "rte": ["entailment", "not_entailment"], "wnli": ["not_entailment", "entailment"], "stsb": []}
GLUE_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
                "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
MAIN_METRICS = {"cola": "mcc", "mrpc": "f1", "stsb": "pearson"}  # GLUE's headline metric; accuracy otherwise


pytestmark = pytest.mark.usefixtures("hydra_conf")  # conftest.py


def objects(*overrides: str) -> Config:
    return to_config(compose("config", overrides=list(overrides)))


def test_groups_are_found():
    assert {"model", "task", "metric", "select", "tuning", "logger", "launcher", "hydra", "experiment"} <= set(GROUPS)
    assert len(OPTIONS) >= 30


APPENDED_GROUPS = {"condition", "size", "strategy"}  # not in config.yaml's defaults list: sweeps add them with +condition= etc.


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{group}={option}" for group, option in OPTIONS])
def test_every_option_composes_and_converts(group, option):
    plus = "+" if group in APPENDED_GROUPS else ""
    overrides = [f"{plus}{group}={option}", *REQUIRED.get((group, option), [])]

    # With Hydra's own config: the run/sweep dirs and the launcher must resolve, and the launcher
    # class must import (a missing plugin otherwise shows only when a sweep is launched).
    full = compose("config", overrides=overrides, return_hydra_config=True)
    assert full.hydra.job.name == "hsv_exp"
    for node in (full.hydra.run, full.hydra.sweep, full.hydra.launcher):
        OmegaConf.to_container(node, resolve=True)
    assert not full.hydra.run.dir.startswith("/")  # relative to the launch dir unless overridden
    get_class(full.hydra.launcher._target_)
    if group in full.hydra.runtime.choices:
        assert full.hydra.runtime.choices[group] == option

    with open_dict(full):
        del full["hydra"]  # what cli.execute sees: the job config alone
    cfg = to_config(full)
    assert isinstance(cfg, Config)
    if group in NAMED_BY_OPTION:
        expected = VARIANT_OF.get((group, option), option)
        assert getattr(cfg, group).name == expected, f"conf/{group}/{option}.yaml sets name={getattr(cfg, group).name}"
    if group == "experiment":
        assert cfg.model.name == "tiny" and cfg.logger.name == "none"  # smoke runs stay seconds long and offline


@pytest.mark.parametrize("name", sorted(HUB_LABELS))
def test_glue_tasks_match_the_hub_and_the_download_script(name):
    task = objects(f"task={name}").task
    assert task.label_names == HUB_LABELS[name]  # ids equal the hub's, so runs compare across sources
    assert task.glue_folder == GLUE_FOLDERS[name]
    assert task.main_metric == MAIN_METRICS.get(name, "accuracy")
    assert task.is_regression == (name == "stsb") and task.num_labels == (1 if name == "stsb" else len(HUB_LABELS[name]))


def test_custom_task_files_from_the_command_line():
    cfg = objects("task=custom", "task.files.train=/data/train.csv", "task.files.dev=/data/dev.jsonl", "task.label_names=[a,b]")
    assert cfg.task.files == {"train": "/data/train.csv", "dev": "/data/dev.jsonl"}
    assert cfg.task.num_labels == 2
    assert objects("task=custom").task.label_names == []  # inferred from the training file later


def test_defaults():
    cfg = objects()
    assert (cfg.model.name, cfg.task.name, cfg.metric.name, cfg.select.name, cfg.tuning.name) == ("minilm", "rte", "variability", "variability", "full")
    assert cfg.task.train_split == "train" and cfg.task.eval_splits == ["dev"]


def test_glue_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    assert objects().task.glue_dir is None
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    assert objects().task.glue_dir == str(tmp_path)
    assert objects("task.glue_dir=null").task.glue_dir is None


# ---------------------------------------------------------------- errors
def test_typo_in_a_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match=r"train\.lrr"):
        compose("config", overrides=["train.lrr=1"])


def test_wrong_type_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match=r"train\.epochs=two"):
        compose("config", overrides=["train.epochs=two"])


def test_unknown_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException, match="task/foo") as info:
        compose("config", overrides=["task=foo"])
    assert "rte" in str(info.value)


@pytest.mark.parametrize("overrides, names", [
    (["select.k=0"], "select.k"),
    (["metric.name=foo"], "metric.name"),
    (["metric.pooling=max"], "metric.pooling"),
    (["train.device=tpu"], "train.device"),
    (["train.warmup_ratio=1"], "train.warmup_ratio"),
    (["train.precision=fp8"], "train.precision"),
    (["scan.precision=fp16"], "scan.precision"),
    (["tuning.name=nope"], "tuning.name"),
    (["task.main_metric=f1"], "task.main_metric"),
    (["task.text_fields=[a,b,c]"], "task.text_fields"),
    (["task=stsb", "task.label_names=[low,high]"], "task.label_names"),
    (["select=manual"], "select.head_layer"),
    (["select.rule=median"], "select.rule"),
    (["model=tiny", "model.tokenizer=null"], "model.tokenizer"),
    (["stage=eval"], "stage"),
    (["model.name=???"], "model.name"),
], ids=lambda value: ",".join(value) if isinstance(value, list) else None)
def test_invalid_combinations_fail_in_to_config(overrides, names):
    cfg = compose("config", overrides=overrides)  # each value alone is well-typed
    with pytest.raises(ConfigError) as info:
        to_config(cfg)
    message = str(info.value)
    assert names in message and "\n" not in message  # the CLI prints it as one `error:` line


# Every value check of the schema: (overrides, the one line to_config raises). Each value is
# well-typed, so only __post_init__ can refuse it, in the launching process, before any work.
BAD_VALUES = [
    (["tuning=lora", "tuning.lora_dropout=1.5"], "tuning.lora_dropout must be in [0, 1), got 1.5"),
    (["tuning=lora", "tuning.lora_dropout=-0.1"], "tuning.lora_dropout must be in [0, 1), got -0.1"),
    (["tuning=lora", "tuning.lora_r=0"], "tuning.lora_r must be >= 1, got 0"),
    (["tuning=lora", "tuning.lora_alpha=0"], "tuning.lora_alpha must be > 0, got 0"),
    (["tuning=lora", "tuning.lora_target_modules=[]"], "tuning.lora_target_modules must name at least one module (null = the architecture's default)"),
    (["tuning=adapter", "tuning.bottleneck=0"], "tuning.bottleneck must be >= 1, got 0"),
    (["tuning=pfeiffer", "tuning.bottleneck=-4"], "tuning.bottleneck must be >= 1, got -4"),
    (["tuning=scaled_pa", "tuning.scale=-1"], "tuning.scale must be > 0, got -1.0"),
    (["tuning=parallel_adapter", "tuning.scale=0"], "tuning.scale must be > 0, got 0.0"),
    (["tuning=mam", "tuning.scale=0"], "tuning.scale must be > 0, got 0.0"),
    (["tuning=prefix", "tuning.prefix_length=0"], "tuning.prefix_length must be >= 1, got 0"),
    (["tuning=mam", "tuning.prefix_length=0"], "tuning.prefix_length must be >= 1, got 0"),
    (["tuning=prefix", "tuning.prefix_hidden=-1"], "tuning.prefix_hidden must be >= 0, got -1"),
    (["tuning=adapter", "tuning.lr=0"], "tuning.lr must be > 0, got 0.0"),
    (["tuning=full", "tuning.lr=-1e-4"], "tuning.lr must be > 0, got -0.0001"),
    (["train.lr=0"], "train.lr must be > 0, got 0.0"),
    (["train.head_lr=-1"], "train.head_lr must be > 0, got -1.0"),
    (["train.epochs=0"], "train.epochs must be >= 1, got 0"),
    (["train.batch_size=0"], "train.batch_size must be >= 1, got 0"),
    (["train.eval_batch_size=0"], "train.eval_batch_size must be >= 1, got 0"),
    (["train.num_threads=0"], "train.num_threads must be >= 1, got 0"),
    (["train.max_length=1"], "train.max_length must be >= 2, got 1"),
    (["train.max_grad_norm=0"], "train.max_grad_norm must be > 0, got 0.0"),
    (["train.weight_decay=-0.01"], "train.weight_decay must be >= 0, got -0.01"),
    (["train.cache_memory_budget_mb=-1"], "train.cache_memory_budget_mb must be >= 0, got -1"),
    (["train.log_every_steps=-1"], "train.log_every_steps must be >= 0, got -1"),
    (["train.dropout=1"], "train.dropout must be in [0, 1), got 1.0"),
    (["train.dropout=-0.5"], "train.dropout must be in [0, 1), got -0.5"),
    (["train.warmup_ratio=-0.1"], "train.warmup_ratio must be in [0, 1), got -0.1"),
    (["train.cache_frozen=gpu"], "train.cache_frozen must be auto|memory|disk|off, got gpu"),
    (["select=variability", "select.rule=tolerance", "select.tolerance=-0.05"], "select.tolerance must be >= 0, got -0.05"),
    (["select=manual"], "select=manual needs select.head_layer"),
    (["select=manual", "select.head_layer=0"], "select.head_layer must be >= 1, got 0"),
    (["select.k=-1"], "select.k must be >= 0 (0 = the head alone: tuning=probe|linear_probe), got -1"),
    (["select.k=0"], "select.k=0 (an empty window) trains only the head: use tuning=probe or tuning=linear_probe, not tuning=full"),
    (["tuning=probe", "select.k=1"], "tuning=probe trains only the head: it needs select.k=0, got select.k=1"),
    (["tuning=linear_probe", "select=all"], "tuning=linear_probe trains only the head: select=all does not apply"),
    (["tuning=probe", "head_init=lpft"], "tuning=probe trains only the head: head_init=lpft does not apply"),
    (["tuning=linear_probe", "regularizer=mvcr"], "tuning=linear_probe trains only the head: regularizer=mvcr needs a tuned window"),
    (["tuning=full", "+condition=probe"], "select.k=0 (an empty window) trains only the head: use tuning=probe or tuning=linear_probe, not tuning=full"),
    (["metric.pooling=max"], "metric.pooling must be mean or cls, got max"),
    (["task=rte", "task.max_train_examples=1"], "task.max_train_examples must be >= the number of classes (2), got 1"),
    (["task=mnli", "task.max_train_examples=2"], "task.max_train_examples must be >= the number of classes (3), got 2"),
    (["task=stsb", "task.max_train_examples=0"], "task.max_train_examples must be >= the number of classes (1), got 0"),
    (["task.max_eval_examples=0"], "task.max_eval_examples must be >= 1, got 0"),
    (["task.eval_splits=[]"], "task.eval_splits must name at least one split"),
    (["task.metrics=[accuracy,bleu]"], "task.metrics: unknown ['bleu'], known: accuracy, f1, mcc, pearson, spearmanr"),
    (["task=stsb", "task.regression_bin_width=0"], "task.regression_bin_width must be > 0"),
    (["scan.max_examples=0"], "scan.max_examples must be >= 1, got 0"),
    (["scan.batch_size=0"], "scan.batch_size must be >= 1, got 0"),
    (["scan.majority_fraction=1"], "scan.majority_fraction must be in (0, 1) (null = natural class frequencies), got 1.0"),
    (["scan.majority_fraction=0"], "scan.majority_fraction must be in (0, 1) (null = natural class frequencies), got 0.0"),
    (["model.dtype=float8"], "model.dtype must be float32|float16|bfloat16, got float8"),
    (["logger.mode=sometimes"], "logger.mode must be auto|online|offline|disabled, got sometimes"),
    (["logger.name=mlflow"], "logger.name must be none or wandb, got mlflow"),
    (["regularizer=mvcr", "train.epochs=4", "regularizer.warmup_epochs=4"],
     "regularizer=mvcr takes 4 AE-only epochs of the 4 it trains (train.epochs, less head_init's), leaving none for "
     "fine-tuning: raise train.epochs or lower regularizer.warmup_epochs"),
    (["regularizer=mvcr", "train.epochs=10", "head_init=lpft", "head_init.epochs=4", "regularizer.warmup_epochs=6"],
     "regularizer=mvcr takes 6 AE-only epochs of the 6 it trains (train.epochs, less head_init's), leaving none for "
     "fine-tuning: raise train.epochs or lower regularizer.warmup_epochs"),
    (["regularizer=mvcr", "regularizer.warmup_fraction=1"], "regularizer.warmup_fraction must be in [0, 1), got 1.0"),
]


@pytest.mark.parametrize("overrides, line", BAD_VALUES, ids=[",".join(overrides) for overrides, _ in BAD_VALUES])
def test_every_bad_value_fails_in_the_schema_with_one_line(overrides, line):
    cfg = compose("config", overrides=overrides)
    with pytest.raises(ConfigError) as info:
        to_config(cfg)
    assert str(info.value) == line


@pytest.mark.parametrize("overrides", [
    ["tuning=full", "tuning.lora_r=0", "tuning.bottleneck=0", "tuning.scale=-1", "tuning.prefix_length=0"],
    ["tuning=lora", "tuning.scale=-1"],  # LoRA has no adapter scale
    ["tuning=adapter", "tuning.lora_dropout=1.5"],
    ["task=custom", "task.max_train_examples=1"],  # classes unknown until the file is read
    ["regularizer.warmup_epochs=9", "train.epochs=1"],  # regularizer=none has no AE-only epochs
    ["scan.majority_fraction=0.9", "train.warmup_ratio=0", "train.dropout=0", "train.log_every_steps=0", "train.cache_memory_budget_mb=0"],
], ids=lambda overrides: ",".join(overrides))
def test_options_a_method_or_task_does_not_read_are_not_checked(overrides):
    to_config(compose("config", overrides=overrides))


# ---------------------------------------------------------------- run dir names
def test_head_only_methods_set_the_empty_window():
    for overrides in (["tuning=probe"], ["tuning=linear_probe"], ["+condition=probe"], ["tuning=linear_probe", "+condition=probe"]):
        cfg = objects(*overrides)
        assert cfg.select.k == 0 and cfg.tuning.name in ("probe", "linear_probe"), overrides
    assert objects("+condition=probe").select.name == "variability"
    probe = objects("tuning=probe")
    assert probe.tuning.lr is None and probe.train.head_lr == 2e-2  # only the head trains, at head_lr


def test_run_dirname():
    assert run_dirname("") == "default"
    assert run_dirname("select.k=3,task=rte") == "select.k=3,task=rte"
    assert "/" not in run_dirname("task.files.train=/data/a.csv")
    long = "x" * 300
    name = run_dirname(long)
    assert len(name) == 173 and name.startswith("x" * 160 + "-")
    assert run_dirname(long) == name  # stable, so a relaunch finds the same dir
    assert run_dirname(long + "y") != name  # distinct configs with the same prefix stay apart
    assert len(run_dirname("y" * 180)) == 180  # at the limit: kept as is


def test_a_sweep_job_dirname_reads_back_into_its_overrides():
    name = run_dirname("+condition=vartol_k2,+size=n100,seed=1,task=rte,train.lr=2e-05")
    assert overrides_of_dirname(name) == {"+condition": "vartol_k2", "+size": "n100", "seed": "1", "task": "rte", "train.lr": "2e-05"}


def test_run_dir_names_the_overrides_that_change_the_result():
    def run_dir(*overrides):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.run.dir

    assert run_dir() == "outputs/default"
    named = run_dir("task=rte", "select.k=3", "model=tiny")
    assert named == "outputs/model=tiny,select.k=3,task=rte"
    assert run_dir("select.k=3", "model=tiny", "task=rte") == named  # order does not matter
    # logging and device settings do not change what is computed: same dir, so it resumes/skips
    assert run_dir("task=rte", "select.k=3", "model=tiny", "logger=none", "train.device=cpu", "train.num_threads=2") == named


def test_sweep_dir_is_the_study():
    cfg = compose("config", overrides=["study=table2", "seed=1"], return_hydra_config=True)
    assert cfg.hydra.sweep.dir == "multirun/table2" and cfg.hydra.sweep.subdir == "seed=1"


def test_sweep_dir_without_a_study():
    cfg = compose("config", return_hydra_config=True)
    assert cfg.hydra.sweep.dir == "multirun/sweep"


def test_run_dir_names_leave_out_exactly_the_keys_the_fingerprint_leaves_out():
    from hsv_exp.config import NOT_SEMANTIC, keys_marked

    exclude = set(yaml.safe_load((Path(CONF_DIR) / "hydra/default.yaml").read_text())["job"]["config"]["override_dirname"]["exclude_keys"])
    not_semantic = set(keys_marked(NOT_SEMANTIC))
    assert not_semantic - exclude == set()  # e.g. `tags`: not in the fingerprint, so not in the dir name either
    hydra_only = {"launcher"}
    extra = {key for key in exclude - not_semantic - hydra_only
             if not key.startswith("hydra.") and not any(key.startswith(parent + ".") for parent in not_semantic)}
    assert extra == set()  # an excluded key the fingerprint keeps would give two configs one run dir


def test_compose_gives_the_config_the_cli_would_run():
    """hsv_exp.cli.compose, which scripts and benchmarks use, composes conf/ as `python -m hsv_exp` does."""
    from hsv_exp.cli import compose

    cfg = compose(["task=sst2_8k", "train.epochs=7", "tuning=lora"])
    assert (cfg.task.name, cfg.task.max_train_examples, cfg.train.epochs, cfg.tuning.name) == ("sst2", 8000, 7, "lora")
    assert compose([]).task.name == "rte"  # again, from a clean Hydra state
    with pytest.raises(Exception, match="epochs"):
        compose(["train.epochs=two"])
