"""Pay only for what is tuned: split the forward pass at the window, and cache the frozen part.

Layers below the window are frozen and in eval mode, so for a given input their output never
changes during training. The forward pass is split into
  prefix: embeddings + frozen layers, run under torch.inference_mode (no autograd state), and
  window: the tuned layers + head, fed the prefix's output through a stand-in embedding module.
With `train.cache_frozen`, the prefix's output for every training example is computed once
(memory, or a memory-mapped file on disk) and every epoch runs only the window and the head.

The split reuses the model's own forward code (attention-mask handling, relative position
biases) by temporarily swapping modules: the layer list is cut to the part that runs, and for the
window the embeddings are replaced by `StatesInput`, which returns the given states.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hsv_exp.backbone import embeddings_name, embeddings_of, encoder_inputs, find_layers


class StatesInput(nn.Module):
    """Stands in for the embedding module: returns precomputed hidden states."""

    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.states


@contextlib.contextmanager
def swapped(backbone: nn.Module, layers: list[nn.Module], states: torch.Tensor | None = None):
    """Run `backbone` with only `layers`, and (if given) `states` in place of the embeddings."""
    parent, attr, original_layers = find_layers(backbone)
    embeddings_attr = embeddings_name(backbone)
    original_embeddings = getattr(backbone, embeddings_attr)
    parent._modules[attr] = nn.ModuleList(layers)
    if states is not None:
        backbone._modules[embeddings_attr] = StatesInput(states)
    # DeBERTa-v2's encoder runs a convolution after its first layer (conv_kernel_size > 0): a layer
    # list that starts above layer 1 has had it already, in the part below.
    conv = parent._modules.get("conv")
    above_first = bool(layers) and layers[0] is not original_layers[0]
    if conv is not None and above_first:
        parent._modules["conv"] = None
    try:
        yield
    finally:
        parent._modules[attr] = original_layers
        backbone._modules[embeddings_attr] = original_embeddings
        if conv is not None:
            parent._modules["conv"] = conv


def has_frozen_prefix(model) -> bool:
    """True when something below the window is frozen (select=all has nothing to split off)."""
    return not model.selection.tune_embeddings


def prefix_states(model, inputs: dict) -> torch.Tensor:
    """(batch, seq, d) input of the first window layer; no autograd state is kept."""
    frozen = list(model.layers)[: model.selection.first_tuned - 1]
    with torch.inference_mode():
        if not frozen:  # the window starts at layer 1: the prefix is the embeddings alone
            return embedding_output(model.backbone, encoder_inputs(inputs, model._accepts))
        with swapped(model.backbone, frozen):
            return model.backbone(**encoder_inputs(inputs, model._accepts)).last_hidden_state


class _EmbeddingsDone(Exception):
    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states


def embedding_output(backbone: nn.Module, inputs: dict) -> torch.Tensor:
    """The embedding module's output, from the model's own forward stopped right after it.

    The model's forward passes each architecture's own embedding arguments (RoBERTa's position ids
    from the padding, DeBERTa-v2's mask zeroing padded positions); running it with zero layers
    instead is what BERT-like encoders allow but DeBERTa-v2's does not (its loop variable stays unset).
    """
    def stop(module, args, output):
        raise _EmbeddingsDone(output)

    handle = embeddings_of(backbone).register_forward_hook(stop)
    try:
        backbone(**inputs)
    except _EmbeddingsDone as done:
        return done.states
    finally:
        handle.remove()
    raise RuntimeError(f"{type(backbone).__name__}'s forward did not call its embedding module")


def window_logits(model, inputs: dict, states: torch.Tensor) -> torch.Tensor:
    """Logits from the window layers + head, given the prefix's output `states`. An empty window
    (head-only methods): the prefix's output is the head layer's, so only the head runs."""
    window = list(model.layers)[model.selection.first_tuned - 1:]
    states = states.clone() if states.is_inference() else states
    if not window:
        hidden = states
    else:
        with swapped(model.backbone, window, states):
            hidden = model.backbone(**encoder_inputs(inputs, model._accepts)).last_hidden_state
    return model.classify(model.pool(hidden, inputs["attention_mask"], inputs.get("special_tokens_mask")))


def split_forward(model, inputs: dict) -> torch.Tensor:
    """Same logits as model(**inputs), with the frozen prefix under inference_mode."""
    return window_logits(model, inputs, prefix_states(model, inputs))


class FrozenCache:
    """Per-example prefix outputs (tokens x d, unpadded) for the whole training set.

    Stored as one flat float32 array with offsets: in memory, or memory-mapped from a file in
    `directory` (the run dir, so a resumed run can reuse it) when over the memory budget.
    float32 under bf16 autocast too: the prefix's output comes out of a LayerNorm, which autocast
    keeps in fp32, so storing bf16 would add a rounding the uncached forward does not have.
    """

    def __init__(self, lengths: list[int], dim: int, mode: str, memory_budget_mb: int, directory: Path | None):
        total = int(sum(lengths))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.dim = dim
        size_mb = total * dim * 4 / 2**20
        if mode == "auto":
            mode = "memory" if size_mb <= memory_budget_mb else "disk"
        self.mode = mode
        self.size_mb = size_mb
        if mode == "memory":
            self.array = np.zeros((total, dim), dtype=np.float32)
            self.path = None
        else:
            directory = Path(directory or tempfile.mkdtemp(prefix="hsv_cache_"))
            directory.mkdir(parents=True, exist_ok=True)
            self.path = directory / "frozen_cache.npy"
            self.array = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(total, dim))

    def store(self, indices: torch.Tensor, states: torch.Tensor) -> None:
        """Keep example `indices[row]`'s first `length` (its unpadded token count, from the offsets) states."""
        states = states.float().cpu().numpy()
        for row, index in enumerate(indices.tolist()):
            length = self.offsets[index + 1] - self.offsets[index]
            self.array[self.offsets[index]:self.offsets[index + 1]] = states[row, :length]

    def batch(self, indices: torch.Tensor, seq_len: int, device: torch.device) -> torch.Tensor:
        """(batch, seq_len, d), zero-padded like the batch's attention mask."""
        out = np.zeros((len(indices), seq_len, self.dim), dtype=np.float32)
        for row, index in enumerate(indices.tolist()):
            start, end = self.offsets[index], self.offsets[index + 1]
            out[row, : end - start] = self.array[start:end]
        return torch.from_numpy(out).to(device)

    def close(self) -> None:
        if self.path is not None:
            del self.array
            self.path.unlink(missing_ok=True)


def build_cache(model, batches, lengths: list[int], mode: str, memory_budget_mb: int, directory: Path | None,
                device: torch.device) -> FrozenCache:
    """One pass of the frozen prefix over `batches` (collated, with an `index` key)."""
    cache = FrozenCache(lengths, model.backbone.config.hidden_size, mode, memory_budget_mb, directory)
    model.eval()
    for batch in batches:
        inputs = {key: value.to(device) for key, value in batch.items() if key not in ("labels", "index")}
        cache.store(batch["index"], prefix_states(model, inputs))
    return cache
