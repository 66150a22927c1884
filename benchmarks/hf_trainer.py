"""The Hugging Face `Trainer` as users run it, on hsv_exp's data and hyper-parameters: the one place
the benchmarks build it (bench.py times its epochs, score.py its time to a dev score).

The model is `AutoModelForSequenceClassification` with its own head (BERT-style models: the pooler,
dense + tanh on [CLS], then a linear layer), not hsv_exp's pooled linear head; with `lora`, PEFT
LoRA with hsv_exp's rank, alpha and dropout (conf/tuning/lora.yaml) on PEFT's default target
modules for the architecture (BERT: query and value, as hsv_exp's LoRA).
"""

from __future__ import annotations

import torch

from hsv_exp.backbone import resolve_path
from hsv_exp.config import ModelConfig, TaskConfig, TrainConfig, TuningConfig
from hsv_exp.data import Encoded
from hsv_exp.tuning import lora as lora_module

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def sequence_classifier(model_cfg: ModelConfig, num_labels: int, seed: int, lora: TuningConfig | None = None):
    """-> (model, {"hidden", "intermediate", "injected_params"}): the pretrained checkpoint (or, for
    random_init models, one drawn with `seed`) with the Auto class's head, wrapped in PEFT LoRA when `lora`."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    if model_cfg.random_init:
        config = AutoConfig.for_model(model_cfg.arch, **model_cfg.arch_kwargs, num_labels=num_labels)
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(resolve_path(model_cfg.name_or_path), num_labels=num_labels)
    sizes = {"hidden": model.config.hidden_size, "intermediate": model.config.intermediate_size, "injected_params": 0}
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=lora.lora_r, lora_alpha=lora.lora_alpha,
                                                 lora_dropout=lora.lora_dropout))
        sizes["injected_params"] = sum(parameter.numel() for name, parameter in model.named_parameters()
                                       if lora_module.PARAMETER_PREFIX in name)
    return model, sizes


def rows(encoded: Encoded, task: TaskConfig) -> list[dict]:
    """hsv_exp's tokenized examples as the Trainer's dataset: the same token ids, a `labels` column."""
    return [{**{key: feature[key] for key in INPUT_KEYS if key in feature},
             "labels": float(label) if task.is_regression else int(label)}
            for feature, label in zip(encoded.features, encoded.labels)]


def arguments(train_cfg: TrainConfig, lr: float, seed: int, device: torch.device, output_dir: str, **changes):
    """TrainingArguments with hsv_exp's batch size, epochs, weight decay, warm-up (a float below 1 is
    a ratio of the total steps) and clipping, and the linear decay both use; nothing saved, logged or
    reported. `changes` override any of them (score.py: evaluation every epoch, length grouping)."""
    from transformers import TrainingArguments

    settings = dict(
        output_dir=output_dir, per_device_train_batch_size=train_cfg.batch_size, learning_rate=lr,
        num_train_epochs=train_cfg.epochs, weight_decay=train_cfg.weight_decay, warmup_steps=train_cfg.warmup_ratio,
        lr_scheduler_type="linear", max_grad_norm=train_cfg.max_grad_norm, eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to=[], use_cpu=device.type == "cpu", disable_tqdm=True, seed=seed,
        remove_unused_columns=False,
    )
    return TrainingArguments(**{**settings, **changes})


def trainer(model, args, train_rows: list[dict], tokenizer, callbacks: list, eval_rows: list[dict] | None = None,
            compute_metrics=None):
    """The Trainer, with dynamic padding (DataCollatorWithPadding) and without its printed metrics dict."""
    from transformers import DataCollatorWithPadding, Trainer
    from transformers.trainer_callback import PrinterCallback

    built = Trainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                    data_collator=DataCollatorWithPadding(tokenizer), callbacks=callbacks, compute_metrics=compute_metrics)
    built.remove_callback(PrinterCallback)
    return built
