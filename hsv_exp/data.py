"""GLUE / custom data: reading, label ids, stratified subsamples, tokenization, collation.

Sources, in order: a local GLUE folder in the download script's layout
(`<glue_dir>/<RTE>/{train,dev}.tsv`), then the Hugging Face hub (`nyu-mll/glue`).
Label ids equal the hub's (RTE: entailment=0, not_entailment=1).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hsv_exp.config import TaskConfig
from hsv_exp.errors import DataError

csv.field_size_limit(1 << 24)

# Local GLUE files name some columns differently from the hub; CoLA has no header at all.
LOCAL_COLUMNS: dict[str, dict[str, str]] = {
    "mrpc": {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"},
    "stsb": {"label": "score"},
    "qqp": {"label": "is_duplicate"},
    "mnli": {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"},
}
HEADERLESS = {"cola": {"sentence": 3, "label": 1}}  # column positions; CoLA test.tsv does have a header
HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


@dataclass
class Split:
    name: str
    texts: list[tuple[str, ...]]  # one tuple of 1 or 2 strings per example
    labels: np.ndarray  # int64 class ids, or float32 scores for regression
    source: str  # where it came from, for messages
    # The names of the label ids (task.label_names, or for task=custom without them the inferred
    # ones: load the other splits with `with_label_names(task, train_split)`); empty for regression.
    label_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> "Split":
        return Split(self.name, [self.texts[i] for i in indices], self.labels[indices], self.source, self.label_names)


# ---------------------------------------------------------------- reading
def _read_rows(path: Path, task: TaskConfig, delimiter: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for every data row; raises DataError naming file:line."""
    headerless = HEADERLESS.get(task.name) if delimiter == "\t" else None
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as handle:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        header = None if headerless else next(reader, None)
        if header is None and not headerless:
            raise DataError(f"{path}: the file is empty")
        for line_number, fields in enumerate(reader, start=1 if headerless else 2):
            if not fields:
                continue
            if headerless:
                if len(fields) <= max(headerless.values()):
                    raise DataError(f"{path}:{line_number}: expected at least {max(headerless.values()) + 1} tab-separated columns, got {len(fields)}")
                rows.append((line_number, {name: fields[index] for name, index in headerless.items()}))
            else:
                if len(fields) != len(header):
                    raise DataError(f"{path}:{line_number}: expected {len(header)} columns like the header, got {len(fields)}")
                rows.append((line_number, dict(zip(header, fields))))
    return rows


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, str]]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_number}: expected a JSON object per line")
            rows.append((line_number, record))
    return rows


def _label_id(value, task: TaskConfig, where: str):
    if task.is_regression:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label '{value}' is not a number") from None
    text = str(value).strip()
    if text in task.label_names:
        return task.label_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(task.label_names):
        return int(text)
    raise DataError(f"{where}: label '{text}' is not one of the task's labels {task.label_names}")


def _rows_to_split(name: str, rows, task: TaskConfig, path: Path, columns: dict[str, str]) -> Split:
    if not rows:
        raise DataError(f"{path}: split '{name}' has no examples")
    text_columns = [columns.get(field, field) for field in task.text_fields]
    label_column = columns.get(task.label_field, task.label_field)
    texts, labels = [], []
    for line_number, row in rows:
        where = f"{path}:{line_number}"
        missing = [column for column in [*text_columns, label_column] if column not in row]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing}; found {sorted(row)}")
        texts.append(tuple(str(row[column]) for column in text_columns))
        labels.append(_label_id(row[label_column], task, where))
    dtype = np.float32 if task.is_regression else np.int64
    return Split(name, texts, np.asarray(labels, dtype=dtype), str(path), list(task.label_names))


def _infer_label_names(rows, task: TaskConfig) -> list[str]:
    """task=custom without label_names: the sorted distinct training labels."""
    return sorted({str(row[task.label_field]).strip() for _, row in rows if task.label_field in row})


def with_label_names(task: TaskConfig, split: Split) -> TaskConfig:
    """`task` with the label names `split` was read with (inferred ones for task=custom); the
    config object passed in is not changed."""
    if task.is_regression or task.label_names == split.label_names:
        return task
    return dataclasses.replace(task, label_names=list(split.label_names))


def load_custom(task: TaskConfig, split: str) -> Split:
    if not task.files.get(split):
        raise DataError(f"task=custom has no file for split '{split}': set task.files.{split}=/path/to/file")
    path = Path(task.files[split]).expanduser()
    if not path.is_file():
        raise DataError(f"task.files.{split}: no such file {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _read_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        rows = _read_rows(path, task, "," if suffix == ".csv" else "\t")
    else:
        raise DataError(f"{path}: unknown format '{suffix}' (use .csv, .tsv or .jsonl)")
    if not task.is_regression and not task.label_names:
        task = dataclasses.replace(task, label_names=_infer_label_names(rows, task))
    return _rows_to_split(split, rows, task, path, {})


def local_glue_file(task: TaskConfig, split: str) -> Path | None:
    if not task.glue_dir:
        return None
    folder = Path(task.glue_dir).expanduser() / task.glue_folder
    path = folder / f"{split}.tsv"
    if path.is_file():
        return path
    if Path(task.glue_dir).expanduser().is_dir():
        raise DataError(f"GLUE dir {task.glue_dir} has no {task.glue_folder}/{split}.tsv for task {task.name}")
    raise DataError(f"GLUE dir {task.glue_dir} does not exist (GLUE_DIR or task.glue_dir)")


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_hub(task: TaskConfig, split: str) -> Split:
    if not hub_reachable():
        raise DataError(
            f"task {task.name}: no local data and the Hugging Face hub is unreachable; "
            f"point GLUE_DIR (or task.glue_dir) at a folder with {task.glue_folder or task.name}/{split}.tsv"
        )
    import datasets  # slow import; only needed on this path

    hub_split = HUB_SPLITS.get(split, split)
    try:
        dataset = datasets.load_dataset(task.hub_dataset, task.hub_config or task.name, split=hub_split)
    except Exception as exc:
        raise DataError(f"cannot load {task.hub_dataset}/{task.hub_config or task.name} split {hub_split}: {str(exc).splitlines()[0]}") from exc
    rows = [(index + 1, record) for index, record in enumerate(dataset)]
    return _rows_to_split(split, rows, task, Path(f"hub:{task.hub_dataset}/{task.name}/{hub_split}"), {})


def load_split(task: TaskConfig, split: str) -> Split:
    if task.name == "custom":
        return load_custom(task, split)
    path = local_glue_file(task, split)
    if path is not None:
        rows = _read_rows(path, task, "\t")
        return _rows_to_split(split, rows, task, path, LOCAL_COLUMNS.get(task.name, {}))
    return load_hub(task, split)


# ---------------------------------------------------------------- subsampling
def class_ids(labels: np.ndarray, task: TaskConfig) -> np.ndarray:
    """Class per example for the scan and for stratification. Regression scores are binned
    (task.regression_classes=round) or, with `distinct`, numbered by their rank among the distinct
    scores of `labels` (class_scores names them)."""
    if task.is_regression and task.regression_classes == "distinct":
        return np.unique(labels, return_inverse=True)[1].astype(np.int64).reshape(-1)
    if task.is_regression:
        return np.round(labels / task.regression_bin_width).astype(np.int64)
    return labels.astype(np.int64)


def class_scores(labels: np.ndarray, task: TaskConfig, class_values: np.ndarray) -> np.ndarray:
    """The score each regression class id of `class_ids(labels, task)` stands for."""
    if task.regression_classes == "distinct":
        return np.unique(labels)[class_values]
    return class_values * task.regression_bin_width


def stratified_subsample(classes: np.ndarray, size: int | None, seed: int, majority_fraction: float | None = None) -> np.ndarray:
    """Sorted indices of a seeded subsample that keeps class proportions.

    majority_fraction (binary-style imbalance): the most frequent class makes up this share of
    the subsample and the other classes share the rest in their natural proportions.
    """
    rng = np.random.default_rng(seed)
    values, counts = np.unique(classes, return_counts=True)
    total = len(classes) if size is None else min(size, len(classes))
    if majority_fraction is not None:
        if not 0 < majority_fraction < 1:
            raise DataError(f"majority_fraction must be in (0, 1), got {majority_fraction}")
        majority = values[np.argmax(counts)]
        rest = counts[values != majority]
        if rest.sum() > 0:
            # Shrink the subsample until both sides fit; otherwise the majority class is capped at its
            # size and the split comes out less skewed than asked (50/50 data, 0.9 -> 50/10, not 90/10).
            fits = min(counts.max() / majority_fraction, rest.sum() / (1 - majority_fraction))
            total = min(total, int(fits + 1e-9))
        wanted = {majority: majority_fraction * total}
        for value, count in zip(values[values != majority], rest):
            wanted[value] = (1 - majority_fraction) * total * count / rest.sum()
    else:
        wanted = {value: total * count / len(classes) for value, count in zip(values, counts)}
    chosen = []
    for value in values:
        members = np.flatnonzero(classes == value)
        take = min(len(members), max(1, int(round(wanted[value]))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------- tokenization and batches
@dataclass
class Encoded:
    """Tokenized split: one list of token ids etc. per example (unpadded)."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer, split: Split, max_length: int) -> Encoded:
    columns = list(zip(*split.texts))
    encoded = tokenizer(*columns, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask") if key in encoded]
    features = [{key: encoded[key][index] for key in keys} for index in range(len(split))]
    return Encoded(features, split.labels)


class Collator:
    """Dynamic padding to the longest sequence in the batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[tuple[dict[str, list[int]], float | int, int]]) -> dict[str, torch.Tensor]:
        features, labels, indices = zip(*batch)
        length = max(len(feature["input_ids"]) for feature in features)
        pad_values = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
        out = {}
        for key in features[0]:
            out[key] = torch.tensor([feature[key] + [pad_values[key]] * (length - len(feature[key])) for feature in features])
        out["labels"] = torch.tensor(np.asarray(labels))
        out["index"] = torch.tensor(indices)
        return out


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, encoded: Encoded):
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, index: int):
        return self.encoded.features[index], self.encoded.labels[index], index


def length_order(encoded: Encoded) -> np.ndarray:
    """Example indices from shortest to longest (stable): batches cut from it pad least."""
    return np.argsort([len(feature["input_ids"]) for feature in encoded.features], kind="stable")


def loader(encoded: Encoded, batch_size: int, pad_token_id: int, shuffle: bool = False, seed: int = 0,
           by_length: bool = False) -> torch.utils.data.DataLoader:
    """Batches in example order, a seeded shuffle, or by length (least padding; batches carry
    `index`, so order-free consumers such as the variability scan lose nothing)."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    sampler = length_order(encoded).tolist() if by_length else None
    return torch.utils.data.DataLoader(
        EncodedDataset(encoded), batch_size=batch_size, shuffle=shuffle, generator=generator, sampler=sampler,
        collate_fn=Collator(pad_token_id)
    )
