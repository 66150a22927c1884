"""The real conf/ composed with Hydra's compose API: every option of every group, and the errors.

The options are read from conf/<group>/*.yaml, so a config added later is covered without
touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from hsv_exp.cli import CONF_DIR  # registers the schema and the hsv.dirname resolver
from hsv_exp.config import Config, run_dirname, to_objects
from hsv_exp.errors import ConfigError

# conf/local holds git-ignored site settings; `optional local: default` loads them in every compose.
GROUPS = sorted(path.name for path in Path(CONF_DIR).iterdir()
                if path.is_dir() and path.name != "local" and any(path.glob("*.yaml")))
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]
# What an option needs on the command line to be complete, as its yaml says.
REQUIRED = {("select", "manual"): ["select.head_layer=3"]}
# Groups whose option name is the `name` that run dirs, W&B tags and results tables show.
NAMED_BY_OPTION = ("model", "task", "metric", "select", "logger")

# Label order of the hub's nyu-mll/glue ClassLabels, and the download script's folder names.
HUB_LABELS = {"cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
              "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"],
              "mnli": ["entailment", "neutral", "contradiction"], "qnli": ["entailment", "not_entailment"],
              "rte": ["entailment", "not_entailment"], "wnli": ["not_entailment", "entailment"], "stsb": []}
GLUE_FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
                "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
MAIN_METRICS = {"cola": "mcc", "mrpc": "f1", "stsb": "pearson"}  # GLUE's headline metric; accuracy otherwise


@pytest.fixture(autouse=True)
def hydra_conf():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def objects(*overrides: str) -> Config:
    return to_objects(compose("config", overrides=list(overrides)))


def test_groups_are_found():
    assert {"model", "task", "metric", "select", "tuning", "logger", "launcher", "hydra", "experiment"} <= set(GROUPS)
    assert len(OPTIONS) >= 30


APPENDED_GROUPS = {"condition"}  # not in config.yaml's defaults list: sweeps add them with +condition=


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
    cfg = to_objects(full)
    assert isinstance(cfg, Config)
    if group in NAMED_BY_OPTION:
        assert getattr(cfg, group).name == option, f"conf/{group}/{option}.yaml sets name={getattr(cfg, group).name}"
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
def test_invalid_combinations_fail_in_to_objects(overrides, names):
    cfg = compose("config", overrides=overrides)  # each value alone is well-typed
    with pytest.raises(ConfigError) as info:
        to_objects(cfg)
    message = str(info.value)
    assert names in message and "\n" not in message  # the CLI prints it as one `error:` line


# ---------------------------------------------------------------- run dir names
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
