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
