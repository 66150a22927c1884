"""MVCR (Liu et al., ACL 2023): random hierarchical autoencoders between layers while training.

During training the output of chosen layers is replaced, token position by token position, by
one of several compressed reconstructions or left unchanged; after training the modules are
removed, so inference is the plain model. Read from the authors' code `DAMO-NLP-SG/MVCR`
(`src/modeling_vadapter.py` InfoBottle2 / AE2TK, `src/run_ae.py` train()).

An HAE (hierarchical autoencoder) of width d: tanh(Linear H -> d), dropout 0.2, then, drawn once
per forward pass with probability 1/3 each, sub-AE 1, sub-AE 2 or nothing (a sub-AE is
Linear d -> d/2, tanh, dropout 0.2, Linear d/2 -> d, followed by tanh), then Linear d -> H.
An insertion point holds one HAE per width in `dims` (default 128, 256, 512). Its forward adds
N(0, noise_std^2) noise and draws, for each token position (shared by every example of the
batch), HAE 1..n or identity from 2n - 1 equally likely choices (n = 3: 1/5 each HAE, 2/5 the
noisy identity). The reconstruction loss of a point is the mean over its HAEs of the MSE between
the noisy input and the HAE's output (over all positions, padding included, as the authors).

Where: hsv_exp layer l (1-based, 0 = embeddings) means the output of layer l as the next layer
sees it (after the residual and LayerNorm). The authors' code perturbs the FFN output *before*
the residual + LayerNorm (`src/modeling_vaebert.py:372-388`); the paper says "the output of
layer n". hsv_exp follows the paper: a forward hook on the layer module, which works for every
architecture. l may be a window layer or the last frozen layer (the prefix's output, the input of
the first window layer: a forward pre-hook on that layer, so it acts on the frozen-cache states
too and the cache keeps the clean states). Layers deeper in the frozen prefix are refused.
Default layers: the authors' 7, 9, 12 of 12, mapped onto the kept layers as floor(l*head/12 + 1/2)
and raised to the lowest allowed layer, deduplicated (head 6: 4, 5, 6; head 4: 2, 3, 4).

Training (the authors' schedule): AE-only epochs (`strategy_config.ae_only_epochs`; forward in
train mode, only the reconstruction step; the task optimizer does not step, so PLM and head stay
as they are), then joint epochs: the task loss backpropagates through the perturbed states into the window, and each
point's AEs also take an AdamW step at lr_multiplier x the task lr on their reconstruction loss.
The reconstruction gradient reaches only that point's AE parameters (torch.autograd.grad with
`inputs` = those parameters, which equals detaching the HAE input: the input does not depend on
them), never the encoder. The authors run that backward after optimizer.step() on the same graph,
which current torch AdamW refuses (in-place modified leaves); here it runs before any step. In
their code the AE parameters are also in the task optimizer (task gradient, task lr): here a
separate AdamW over them does that (`ae_task_gradient`, default true).

The loop's call sites (see `reference_step`):
    mvcr = attach(model, cfg, lr)                # after the tuning method; before the frozen cache is fine
    logits = forward(batch)                      # hooks perturb in train mode only
    optimizer.zero_grad(set_to_none=True)
    mvcr.backward(loss)                          # replaces loss.backward(); loss=None in the AE-only phase
    clip; optimizer.step(); scheduler.step()     # joint phase only
    mvcr.step(task_lr)                           # every step of both phases
    checkpoint["mvcr"] = mvcr.state_dict()  /  mvcr.load_state_dict(state["mvcr"])
    mvcr.remove()                                # after training, before saving or evaluating the final model
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hsv_exp.errors import ConfigError
from hsv_exp.strategy_config import RegularizerConfig

AUTHORS_LAYERS = (7, 9, 12)  # 1-based; their --layer_sets 6,8,11 count from 0
AUTHORS_DEPTH = 12  # bert-base


class SubAE(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.down = nn.Linear(dim, dim // 2)
        self.up = nn.Linear(dim // 2, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.up(self.dropout(torch.tanh(self.down(x)))))


class HAE(nn.Module):
    """(..., H) -> (..., H) through width `dim`, with a random inner sub-AE (or none) per call."""

    def __init__(self, hidden: int, dim: int, dropout: float):
        super().__init__()
        self.encoder = nn.Linear(hidden, dim)
        self.inner = nn.ModuleList([SubAE(dim, dropout) for _ in range(2)])
        self.decoder = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.last_inner = -1  # 0, 1: that sub-AE; 2: none (for tests)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.dropout(torch.tanh(self.encoder(x)))
        self.last_inner = int(torch.randint(0, len(self.inner) + 1, ()))
        if self.last_inner < len(self.inner):
            code = self.inner[self.last_inner](code)
        return self.decoder(code)


class InsertionPoint(nn.Module):
    """The HAEs of one layer's output; remembers its last reconstruction loss and path choice."""

    def __init__(self, hidden: int, dims: list[int], dropout: float, noise_std: float):
        super().__init__()
        self.haes = nn.ModuleList([HAE(hidden, dim, dropout) for dim in dims])
        self.noise_std = noise_std
        self.reconstruction_loss: torch.Tensor | None = None
        self.last_choice: torch.Tensor | None = None  # (seq,): 0..n-1 an HAE, n identity

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, seq, H) -> (batch, seq, H), perturbed; records the reconstruction loss."""
        noisy = hidden + torch.randn_like(hidden) * self.noise_std
        outputs = [hae(noisy).to(noisy.dtype) for hae in self.haes]
        self.reconstruction_loss = sum(nn.functional.mse_loss(out.float(), noisy.float()) for out in outputs) / len(outputs)
        n, (batch, seq, width) = len(self.haes), noisy.shape
        draw = torch.randint(0, 2 * n - 1, (seq,))
        self.last_choice = torch.clamp(draw, max=n)  # draws n..2n-2 all mean identity
        index = self.last_choice.to(noisy.device).view(1, 1, seq, 1).expand(1, batch, seq, width)
        return torch.stack(outputs + [noisy]).gather(0, index).squeeze(0)


def insertion_layers(selection, layers: list[int]) -> list[int]:
    """Which layers' outputs are perturbed (see the module docstring); ConfigError if not allowed."""
    lowest, head = min(selection.tuned_layers) - 1, selection.head_layer
    allowed = {lowest, *selection.tuned_layers}
    if not layers:
        mapped = (max(lowest, math.floor(layer * head / AUTHORS_DEPTH + 0.5)) for layer in AUTHORS_LAYERS)
        return sorted(set(mapped))
    refused = sorted(layer for layer in layers if layer not in allowed)
    if refused:
        raise ConfigError(f"regularizer.layers {refused} cannot be perturbed: MVCR acts on the output of a window layer "
                          f"({min(selection.tuned_layers)}..{head}) or of the frozen prefix (layer {lowest})")
    return sorted(layers)


class MVCR:
    """The HAEs of every insertion point, their hooks on `model` and their optimizers.

    The AE modules are not submodules of `model`: its parameters, state dict and trainable
    state (`hsv_exp.tuning.state`) are exactly those of the same model without MVCR.
    """

    def __init__(self, model, cfg: RegularizerConfig, lr: float):
        self.model, self.cfg, self.lr = model, cfg, lr
        self.layers = insertion_layers(model.selection, list(cfg.layers))
        device = next(model.parameters()).device  # the AEs train in float32 (autocast handles AMP)
        hidden = model.backbone.config.hidden_size
        self.points = nn.ModuleDict({str(layer): InsertionPoint(hidden, list(cfg.dims), cfg.dropout, cfg.noise_std)
                                     for layer in self.layers}).to(device=device, dtype=torch.float32)
        self.ae_optimizers = [torch.optim.AdamW(point.parameters(), lr=lr * cfg.lr_multiplier, weight_decay=0.0)
                              for point in self.points.values()]
        self.task_optimizer = (torch.optim.AdamW(self.points.parameters(), lr=lr, weight_decay=0.0)
                               if cfg.ae_task_gradient else None)
        self._pending: list[tuple[torch.Tensor | None, ...] | None] = [None] * len(self.points)
        first_window = min(model.selection.tuned_layers)
        self.handles = []
        for layer, point in zip(self.layers, self.points.values()):
            if layer == first_window - 1:  # the prefix's output = the first window layer's input
                hook = model.layers[first_window - 1].register_forward_pre_hook(self._input_hook(point), with_kwargs=True)
            else:
                hook = model.layers[layer - 1].register_forward_hook(self._output_hook(point))
            self.handles.append(hook)

    def active(self) -> bool:
        """Perturb only while the model trains (`model.eval()` makes every hook the identity)."""
        return self.model.training and bool(self.handles)

    def _follow(self, hidden: torch.Tensor) -> None:
        # train.py moves the model after attach(): the AEs follow on the first training forward
        if next(self.points.parameters()).device != hidden.device:
            self.points.to(hidden.device)

    def _output_hook(self, point: InsertionPoint):
        def hook(module, args, output):
            if not self.active():
                return None
            self._follow(output if isinstance(output, torch.Tensor) else output[0])
            if isinstance(output, torch.Tensor):
                return point(output)
            return (point(output[0]), *output[1:])
        return hook

    def _input_hook(self, point: InsertionPoint):
        def hook(module, args, kwargs):
            if not self.active():
                return None
            self._follow(args[0] if args else next(iter(kwargs.values())))
            if args:
                return (point(args[0]), *args[1:]), kwargs
            key = next(iter(kwargs))  # hidden states are the first argument of every layer's forward
            return args, {**kwargs, key: point(kwargs[key])}
        return hook

    def perturb_prefix(self, states: torch.Tensor) -> torch.Tensor:
        """(batch, seq, H) prefix output -> perturbed, for callers that feed states around the hooks.

        Not needed with `window_logits`/`split_forward`/the full forward: the pre-hook on the first
        window layer already does it (calling both would perturb twice).
        """
        point = self.points[str(min(self.model.selection.tuned_layers) - 1)]
        return point(states) if self.active() else states

    def reconstruction_losses(self) -> dict[str, float]:
        return {f"mvcr/recon_layer_{layer}": float(point.reconstruction_loss.detach())
                for layer, point in self.points.items() if point.reconstruction_loss is not None}

    def backward(self, task_loss: torch.Tensor | None) -> dict[str, float]:
        """Replaces `task_loss.backward()`. First each point's reconstruction gradient w.r.t. its
        own AE parameters only (kept aside for `step`), then the task backward (None: AE-only).
        Returns the reconstruction losses, for logging."""
        for slot, point in enumerate(self.points.values()):
            loss = point.reconstruction_loss
            self._pending[slot] = None
            if loss is not None and loss.requires_grad:
                self._pending[slot] = torch.autograd.grad(loss, list(point.parameters()), retain_graph=True, allow_unused=True)
        losses = self.reconstruction_losses()
        if task_loss is not None:
            task_loss.backward()
        return losses

    def step(self, task_lr: float | None = None) -> None:
        """The AE updates of one training step, after `backward`. `task_lr`: the lr the task
        optimizer used this step (`scheduler.get_last_lr()[0]`; default the lr given to attach)."""
        lr = self.lr if task_lr is None else task_lr
        parameters = list(self.points.parameters())
        if self.task_optimizer is not None and any(p.grad is not None for p in parameters):
            torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], self.cfg.max_grad_norm)
            for group in self.task_optimizer.param_groups:
                group["lr"] = lr
            self.task_optimizer.step()
        for point, optimizer, grads in zip(self.points.values(), self.ae_optimizers, self._pending):
            if grads is None:
                continue
            for parameter, grad in zip(point.parameters(), grads):
                parameter.grad = grad
            torch.nn.utils.clip_grad_norm_([p for p in point.parameters() if p.grad is not None], self.cfg.max_grad_norm)
            for group in optimizer.param_groups:
                group["lr"] = lr * self.cfg.lr_multiplier
            optimizer.step()
        for parameter in parameters:
            parameter.grad = None
        self._pending = [None] * len(self.points)
        for point in self.points.values():
            point.reconstruction_loss = None  # frees the graph

    def parameters(self) -> list[nn.Parameter]:
        return list(self.points.parameters())

    def state_dict(self) -> dict:
        """AE weights and optimizer states, for the run's checkpoint (resume)."""
        return {"points": self.points.state_dict(), "ae_optimizers": [opt.state_dict() for opt in self.ae_optimizers],
                "task_optimizer": self.task_optimizer.state_dict() if self.task_optimizer is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.points.load_state_dict(state["points"])
        for optimizer, saved in zip(self.ae_optimizers, state["ae_optimizers"]):
            optimizer.load_state_dict(saved)
        if self.task_optimizer is not None:
            self.task_optimizer.load_state_dict(state["task_optimizer"])

    def remove(self) -> None:
        """Plug out: delete the hooks, the AE modules and their optimizers; the model is as without MVCR."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.points = nn.ModuleDict()
        self.ae_optimizers, self.task_optimizer, self._pending = [], None, []


def attach(model, cfg: RegularizerConfig, lr: float) -> MVCR:
    """Hook MVCR into a `LayerClassifier` (after its tuning method is applied). `lr`: the task lr."""
    if cfg.name != "mvcr":
        raise ConfigError(f"attach() is MVCR's; regularizer.name is {cfg.name!r}")
    return MVCR(model, cfg, lr)


def hae_flops_per_token(hidden: int, dim: int) -> float:
    """Forward FLOPs of one HAE per token: encoder and decoder, plus the expected sub-AE (2/3 of calls)."""
    return 2.0 * 2 * hidden * dim + (2 / 3) * 2.0 * 2 * dim * (dim // 2)


def extra_train_flops_per_token(hidden: int, dims: list[int], num_points: int, ae_only: bool = False) -> float:
    """MVCR's added training FLOPs per token (inference adds none: the modules are removed).

    Every HAE runs at every position (the choice selects afterwards, as the authors): forward F,
    the task backward through it 2F (input and weight gradients), the reconstruction backward 2F.
    ae_only: an AE-only warm-up step, which has no task backward (3F; the encoder only runs forward).
    Per-step optimizer work (AdamW over the AE parameters, twice with ae_task_gradient) is not per token
    and is not counted, as for the rest of hsv_exp's accounting.
    """
    return (3.0 if ae_only else 5.0) * num_points * sum(hae_flops_per_token(hidden, dim) for dim in dims)


def reference_step(model, mvcr: MVCR, optimizer, scheduler, loss: torch.Tensor | None,
                   max_grad_norm: float = 1.0) -> dict[str, float]:
    """One training step with MVCR, as hsv_exp/train.py should do it (the tests use this).

    `loss` comes from the model's forward in train mode; loss=None in the AE-only phase,
    where the task optimizer and scheduler do not step.
    """
    optimizer.zero_grad(set_to_none=True)
    task_lr = scheduler.get_last_lr()[0] if scheduler is not None else None
    losses = mvcr.backward(loss)
    if loss is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    mvcr.step(task_lr)
    return losses
