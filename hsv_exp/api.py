"""The Python API, for users without Hydra: the metric and the surgery inside their own training code.

    scores = layer_variability(model, tokenizer, texts, labels)    # nu(0..L), as stage=scan computes it
    head, window = select_layers(scores, k=2)                       # as select=variability does
    classifier = prepare(model, head, window, tuning="adapter")     # truncated, partially frozen

Each function wraps the pipeline's own code (hsv_exp.variability, hsv_exp.selection,
hsv_exp.truncation, hsv_exp.classifier, hsv_exp.tuning), so the numbers and the modules are the
ones a `python -m hsv_exp` run uses. `prepare` returns a plain `nn.Module` whose parameters that
require grad are exactly what the method trains: any optimizer, loop or `transformers.Trainer` works.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from hsv_exp import data as data_lib
from hsv_exp import variability
from hsv_exp.backbone import forward_kwargs, num_layers
from hsv_exp.classifier import LayerClassifier
from hsv_exp.config import HEAD_ONLY_METHODS, SelectConfig, TaskConfig, TuningConfig
from hsv_exp import selection as selection_lib
from hsv_exp.truncation import truncate_model
from hsv_exp.tuning import apply_method

TUNING_CONF = Path(__file__).resolve().parent.parent / "conf" / "tuning"  # the methods' settings, as tuning=<name> reads them


def _split(texts: Sequence, labels: Sequence, regression_bin_width: float | None) -> tuple[data_lib.Split, TaskConfig]:
    rows = [(text,) if isinstance(text, str) else tuple(text) for text in texts]
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} texts but {len(labels)} labels")
    if len({len(row) for row in rows}) != 1 or len(rows[0]) not in (1, 2):
        raise ValueError("texts must be all strings or all (text_a, text_b) pairs")
    values = np.asarray(labels)
    regression = regression_bin_width is not None
    if not regression and not np.array_equal(values, np.round(values)):
        raise ValueError("labels must be class ids (ints); for scores pass regression_bin_width (STS-B: 1.0)")
    task = TaskConfig(name="custom", text_fields=["text"] * len(rows[0]), is_regression=regression,
                      regression_bin_width=regression_bin_width or 1.0)
    values = values.astype(np.float32 if regression else np.int64)
    return data_lib.Split("api", rows, values, "hsv_exp.layer_variability"), task


def layer_variability(model, tokenizer, texts: Sequence, labels: Sequence, *, metric: str = "variability",
                      pooling: str = "mean", batch_size: int = 64, max_length: int = 128,
                      regression_bin_width: float | None = None, device: str | torch.device | None = None) -> list[float]:
    """nu (or NC1, metric="nc1") per layer: L+1 values, index 0 = the embedding output.

    `model`: a Hugging Face encoder (AutoModel); `texts`: strings or (text_a, text_b) pairs;
    `labels`: class ids, or scores with `regression_bin_width` (classes = round(score / width), as
    the scan bins task.regression_bin_width). The same numbers as `stage=scan` on the same examples."""
    split, task = _split(texts, labels, regression_bin_width)
    classes = data_lib.class_ids(split.labels, task)
    class_values, dense = np.unique(classes, return_inverse=True)
    dense = torch.as_tensor(dense, dtype=torch.int64)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoded = data_lib.encode(tokenizer, split, max_length)
    batches = data_lib.loader(encoded, batch_size, tokenizer.pad_token_id, by_length=True)
    scores, _ = variability.scan(model.to(device), batches, lambda batch: dense[batch["index"].cpu()], len(class_values),
                                 pooling, metric, device, forward_kwargs(model), progress=False)
    return scores


class Layers(NamedTuple):
    head_layer: int  # 1..L: the classifier reads this layer; the layers above it are removed
    window: tuple[int, ...]  # the tuned layers, ending at the head layer


def select_layers(scores: Sequence[float], rule: str = "argmin", k: int = 2, tolerance: float = 0.05) -> Layers:
    """Head layer and window from `scores` (nu per layer, 0 = embeddings), as select=variability
    picks them: rule="argmin" (lowest nu over layers 1..L) or "tolerance" (the earliest layer within
    (1 + tolerance) of it); rule="top" is the top-k baseline. k=0: the empty window (a probe)."""
    name = "top" if rule == "top" else "variability"
    config = SelectConfig(name=name, k=k, rule="argmin" if rule == "top" else rule, tolerance=tolerance)
    chosen = selection_lib.select_layers(config, len(scores) - 1, [float(score) for score in scores])
    return Layers(chosen.head_layer, chosen.tuned_layers)


def method_config(tuning: str, **options) -> TuningConfig:
    """conf/tuning/<tuning>.yaml (what tuning=<tuning> sets: bitfit's frozen LayerNorms, scaled_pa's
    s = 4, ...) with `options` over it, checked by the schema."""
    node = OmegaConf.load(TUNING_CONF / f"{tuning}.yaml") if (TUNING_CONF / f"{tuning}.yaml").is_file() else {"name": tuning}
    node = node.get("tuning", node)  # the head-only methods' files are global (they also set select.k=0)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TuningConfig), node, {"name": tuning, **options}))


def prepare(model, head_layer: int, window: Sequence[int], tuning: str = "adapter", num_labels: int = 2, *,
            pooling: str = "mean", dropout: float = 0.1, **options) -> LayerClassifier:
    """A `LayerClassifier`: `model` cut to layers 1..head_layer (in place: the layers above leave
    memory; pass a copy to keep the whole model), a pooled linear head on that layer, and tuning
    method `tuning` on `window` (the layers ending at head_layer; () for tuning="probe").
    `options`: the method's settings (bottleneck=, lora_r=, ...; hsv_exp.config.TuningConfig).
    Its `forward(input_ids, attention_mask, special_tokens_mask=None, token_type_ids=None)` returns
    logits (batch, num_labels); pass the tokenizer's special_tokens_mask to pool as the scan does."""
    window = tuple(int(layer) for layer in window)
    total = num_layers(model)
    if not 1 <= head_layer <= total:
        raise ValueError(f"head_layer={head_layer} is outside 1..{total}")
    if window != tuple(range(head_layer - len(window) + 1, head_layer + 1)) or (window and window[0] < 1):
        raise ValueError(f"window={list(window)} must be consecutive layers ending at head_layer={head_layer}")
    if (not window) != (tuning in HEAD_ONLY_METHODS):
        raise ValueError(f"tuning={tuning} with window={list(window)}: an empty window goes with tuning=probe only")
    cfg = method_config(tuning, **options)
    selection = selection_lib.Selection(head_layer, window, total, rule="hsv_exp.prepare")
    truncated = truncate_model(model, head_layer)
    classifier = LayerClassifier(truncated.encoder, selection, num_labels, pooling, dropout)
    apply_method(classifier, cfg)
    return classifier
