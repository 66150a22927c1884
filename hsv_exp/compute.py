"""Analytic compute accounting: FLOPs per token of training and inference, against full fine-tuning.

One transformer layer, per token, forward (multiply-add = 2 FLOPs), hidden d, FFN width f,
mean sequence length n:
    F = 2 * (4 d^2 + 2 d f)  [Q, K, V, O and the two FFN matrices]  +  4 n d  [QK^T and AV]
Training counts forward = F and backward = 2F for a layer whose weights train (gradients w.r.t.
inputs and weights), backward = F for a layer that only passes gradients down (PET methods:
frozen weights, small injected modules; and frozen layers above the window, up to the head,
which the window's gradient passes through), and nothing for frozen layers below the window,
which need no gradient at all. Full fine-tuning of all L layers costs 3 L F. Injected modules
(adapters, LoRA) add 2 FLOPs per parameter per token forward and twice that backward.
Prefix tuning adds `prefix_keys` keys per window layer: 4 p d FLOPs per token forward (its
reparametrisation MLP runs once per step, not per token, and is ignored).
Embedding lookups, LayerNorms, softmax and the head are ignored (a few % at most).
"""

from __future__ import annotations

from hsv_exp.selection import Selection
from hsv_exp.truncation import Truncated


def layer_flops_per_token(hidden: int, intermediate: int, seq_len: float) -> float:
    return 2.0 * (4 * hidden**2 + 2 * hidden * intermediate) + 4.0 * seq_len * hidden


def accounting(selection: Selection, hidden: int, intermediate: int, seq_len: float, full_layer_weights_train: bool,
               injected_params: int = 0, prefix_keys: int = 0) -> dict[str, float]:
    """FLOPs of this run's training and inference per token, and their fraction of full FT.

    injected_params: adapter/LoRA parameters (used once per token); prefix_keys: prefix length
    per window layer (prefix tuning, mam).
    """
    layer = layer_flops_per_token(hidden, intermediate, seq_len)
    num_tuned = len(selection.tuned_layers)
    extra = 2.0 * injected_params + num_tuned * 4.0 * prefix_keys * hidden
    forward = selection.head_layer * layer + extra
    # Kept layers above the window (select.last_tuned_layer) are frozen, but gradients pass through
    # them; an empty window (head-only methods) sends no gradient into the encoder at all.
    above = selection.head_layer - max(selection.tuned_layers) if selection.tuned_layers else 0
    backward = (num_tuned * (2.0 if full_layer_weights_train else 1.0) + above) * layer + 2.0 * extra
    # With the frozen-prefix cache, epochs after the first skip the layers below the window.
    forward_cached = (num_tuned + above) * layer + extra
    full_train = 3.0 * selection.num_layers * layer
    train = forward + backward
    train_cached = forward_cached + backward
    return {
        "layers_kept": selection.head_layer,
        "layers_tuned": num_tuned,
        "train_flops_per_token": train,
        "train_flops_per_token_cached": train_cached,
        "full_ft_train_flops_per_token": full_train,
        "train_flops_fraction": train / full_train,
        "train_flops_saving_pct": 100.0 * (1 - train / full_train),
        "train_flops_fraction_cached": train_cached / full_train,
        "inference_flops_fraction": forward / (selection.num_layers * layer),
        "inference_flops_saving_pct": 100.0 * (1 - forward / (selection.num_layers * layer)),
        "mean_seq_len": seq_len,
    }


def injected_params(model, tuning_name: str) -> int:
    """Parameters injected by the method that run once per token, found by the name prefixes its
    module declares (hsv_exp.tuning.PER_TOKEN_PREFIXES)."""
    from hsv_exp.tuning import PER_TOKEN_PREFIXES

    prefixes = PER_TOKEN_PREFIXES.get(tuning_name, ())
    return sum(parameter.numel() for name, parameter in model.named_parameters() if any(prefix in name for prefix in prefixes))


def model_accounting(model, selection: Selection, truncated: Truncated, tuning, mean_seq_len: float) -> dict:
    """`accounting` for a built, tuned model, plus its parameter counts against the whole model.

    model: the LayerClassifier after its tuning method; truncated: the truncation step's record;
    tuning: the TuningConfig."""
    from hsv_exp.tuning import PREFIX_KEY_METHODS

    config = model.backbone.config
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    compute = accounting(selection, config.hidden_size, getattr(config, "intermediate_size", 4 * config.hidden_size),
                         mean_seq_len, full_layer_weights_train=tuning.name == "full",
                         injected_params=injected_params(model, tuning.name),
                         prefix_keys=tuning.prefix_length if tuning.name in PREFIX_KEY_METHODS else 0)
    compute.update({
        "total_params": truncated.full_params,
        "params_kept": sum(parameter.numel() for parameter in model.parameters()),
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / truncated.full_params,
    })
    return compute


def with_regularizer(compute: dict, regularizer: dict | None) -> dict:
    """`compute` with a training-time regularizer's extra FLOPs per token (TrainResult.regularizer:
    MVCR's HAEs, `mvcr.extra_train_flops_per_token`) added to the training figures of a joint step.
    Inference is unchanged: the modules are removed after training. MVCR's AE-only warm-up steps cost
    less (the encoder forward plus `extra_ae_only_flops_per_token`). The regularizer's record goes in
    flat, as `regularizer` (its name) and `regularizer_<key>`, so runs.csv and W&B get one column each."""
    if not regularizer:
        return compute
    extra = regularizer["extra_train_flops_per_token"]
    train = compute["train_flops_per_token"] + extra
    cached = compute["train_flops_per_token_cached"] + extra
    full = compute["full_ft_train_flops_per_token"]
    return {**compute, "train_flops_per_token": train, "train_flops_per_token_cached": cached,
            "train_flops_fraction": train / full, "train_flops_saving_pct": 100.0 * (1 - train / full),
            "train_flops_fraction_cached": cached / full,
            **{"regularizer" if key == "name" else f"regularizer_{key}": value for key, value in regularizer.items()}}


def with_stage1(compute: dict, stage1: dict, stage1_epochs: int, stage2_epochs: int) -> dict:
    """`compute` (the fine-tuning stage's, per token) with a head_init stage 1 of `stage1_epochs`
    before it (`stage1`: its accounting): the training figures per token become the mean over all
    epochs of the two stages, against full fine-tuning for every epoch; the fine-tuning stage's own
    figures stay under `stage2_*`."""
    epochs = stage1_epochs + stage2_epochs
    full = compute["full_ft_train_flops_per_token"]
    mean = {key: (stage1_epochs * stage1[key] + stage2_epochs * compute[key]) / epochs
            for key in ("train_flops_per_token", "train_flops_per_token_cached")}
    return {**compute, **{f"stage2_{key}": compute[key] for key in ("train_flops_per_token", "train_flops_fraction")},
            **mean, "train_flops_fraction": mean["train_flops_per_token"] / full,
            "train_flops_saving_pct": 100.0 * (1 - mean["train_flops_per_token"] / full),
            "train_flops_fraction_cached": mean["train_flops_per_token_cached"] / full}
