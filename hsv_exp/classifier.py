"""The model that trains: a truncated encoder, a pooled head on its last kept layer (model.head:
linear, or the official code's RoBERTa head).

The encoder comes already truncated (hsv_exp.truncation: layers 1..head_layer); the classifier
freezes it and keeps the layers below the window in eval mode, and a tuning method
(hsv_exp.tuning) then unfreezes or injects what trains.

Parameter names: `backbone.*` (the encoder), `head.*` (the classifier). Tuning methods inject
parameters with their own name prefix (`adapter_`, `lora_`, `prefix_`), so what trains can be
checked by name.
"""

from __future__ import annotations

import torch
from torch import nn

from hsv_exp.backbone import encoder_inputs, find_layers, forward_kwargs
from hsv_exp.config import HEADS
from hsv_exp.pooling import pool, token_mask
from hsv_exp.selection import Selection
from hsv_exp.truncation import freeze_all, frozen_modules


class RobertaHead(nn.Module):
    """The official code's head, transformers' RobertaClassificationHead on an already-pooled
    first token: dropout -> dense(d, d) -> tanh -> dropout -> out_proj(d, num_labels)."""

    def __init__(self, hidden: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.dense(self.dropout(pooled)))
        return self.out_proj(self.dropout(hidden))


class LayerClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, selection: Selection, num_labels: int, pooling: str = "mean", dropout: float = 0.1,
                 head: str = "linear"):
        """`encoder`: truncated to layers 1..selection.head_layer (truncation.truncate_model); its
        parameters are frozen here. head: linear (dropout -> Linear on the `pooling` state) |
        roberta (RobertaHead on the first token, whatever `pooling` says: the scan's pooling)."""
        super().__init__()
        kept = len(find_layers(encoder)[2])
        if kept != selection.head_layer:
            raise ValueError(f"the encoder has {kept} layers, the head is on layer {selection.head_layer}: "
                             "truncate it first (hsv_exp.truncation.truncate_model)")
        self.backbone = encoder
        self.selection = selection
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head}")
        self.pooling = "cls" if head == "roberta" else pooling
        self.dropout = nn.Dropout(dropout)  # the linear head's; RobertaHead holds its own
        hidden = encoder.config.hidden_size
        self.head = RobertaHead(hidden, num_labels, dropout) if head == "roberta" else nn.Linear(hidden, num_labels)
        self._accepts = forward_kwargs(self.backbone)
        freeze_all(self.backbone)
        self._frozen = frozen_modules(self.backbone, selection.tuned_layers, selection.tune_embeddings)

    @property
    def layers(self) -> nn.ModuleList:
        """The kept transformer layers; layer number l is `layers[l - 1]`."""
        return find_layers(self.backbone)[2]

    def window_layers(self) -> list[nn.Module]:
        return [self.layers[index - 1] for index in self.selection.tuned_layers]

    def train(self, mode: bool = True) -> "LayerClassifier":
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq) ids -> (batch, d) pooled state of the head layer."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        hidden = self.backbone(**encoder_inputs(inputs, self._accepts)).last_hidden_state
        return self.pool(hidden, attention_mask, special_tokens_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """-> logits (batch, num_labels); regression: (batch, 1)."""
        return self.classify(self.encode(input_ids, attention_mask, special_tokens_mask, token_type_ids))

    @property
    def output_layer(self) -> nn.Linear:
        """The head's last linear layer (its bias is the logits' offset)."""
        return self.head.out_proj if isinstance(self.head, RobertaHead) else self.head

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head: (batch, d) pooled states -> logits (batch, num_labels)."""
        if isinstance(self.head, RobertaHead):
            return self.head(pooled)
        return self.head(self.dropout(pooled))

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, seq, d) head-layer states -> (batch, d), as the head reads them."""
        return pool(hidden, token_mask(attention_mask, special_tokens_mask), self.pooling)

    def trainable_parameter_names(self) -> list[str]:
        return [name for name, parameter in self.named_parameters() if parameter.requires_grad]
