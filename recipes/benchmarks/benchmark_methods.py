"""The methods of recipes/benchmarks/benchmark.py: one function trains and evaluates one method for one seed.

`run_method(spec, seed, args)` is what the benchmark runs, each call in a fresh process, so that peak memory is the
method's own. It returns quality metrics, trainable parameters, adapter bytes, the median train step time,
inference throughput and peak memory; ratios to the LoRA peer are computed by the caller.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from labeltok_peft import LabelTokConfig, classification_metrics, get_labeltok_model, make_compute_metrics
from labeltok_peft.metrics import ranking_metrics
from labeltok_peft.optim import create_optimizer

from .benchmark_common import (
    QUALITY_FIELDS,
    RANKING_CUTOFFS,
    dataset_label_descriptions,
    encoded_labels,
    load_dataset,
    parse_method,
    quiet_libraries,
)
from .benchmark_measure import (
    StepTimer,
    count_trainable,
    current_rss_bytes,
    peak_rss_bytes,
    safetensors_bytes,
    saved_bytes,
)
from .benchmark_setfit import run_setfit
from .few_shot import few_shot_train, shot_counts

# --------------------------------------------------------------------------------------------------- training


def training_arguments(args, output_dir: Path, seed: int, learning_rate: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=args.epochs,
        learning_rate=learning_rate,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=10,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        label_names=["labels"],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
    )


def train_and_evaluate(model, tokenizer, data, args, seed: int, learning_rate: float, optimizer=None) -> dict:
    """Trains with an unmodified `Trainer`, then times `predict` on the test split.

    Returns:
        Quality metrics, `train_seconds`, `step_seconds` (median over steps after `WARMUP_STEPS_SKIPPED`),
        `steps`, `eval_seconds` and `eval_rows_per_second`.
    """
    splits, labels, multi_label = data

    def tokenize(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length)
        encoded["labels"] = encoded_labels(batch["label"], len(labels), multi_label)
        return encoded

    columns = splits["train"].column_names
    train = splits["train"].map(tokenize, batched=True, remove_columns=columns)
    test = splits["test"].map(tokenize, batched=True, remove_columns=columns)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = Trainer(
            model=model,
            args=training_arguments(args, Path(output_dir), seed, learning_rate),
            train_dataset=train,
            eval_dataset=test,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=make_compute_metrics(multi_label=multi_label),
            optimizers=(optimizer, None),
            callbacks=[timer],
        )
        result = trainer.train()
        start = time.perf_counter()
        prediction = trainer.predict(test)
        eval_seconds = time.perf_counter() - start
    metrics = {key.removeprefix("test_"): value for key, value in prediction.metrics.items()}
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    metrics |= ranked_quality(args.dataset, logits, prediction.label_ids, multi_label)
    quality = {key: metrics[key] for key in QUALITY_FIELDS if key in metrics}
    return dict(
        quality,
        train_seconds=result.metrics["train_runtime"],
        step_seconds=timer.median(),
        steps=len(timer.seconds),
        eval_seconds=eval_seconds,
        eval_rows_per_second=len(test) / eval_seconds,
    )


def ranked_quality(dataset: str, scores: np.ndarray, labels: np.ndarray, multi_label: bool) -> dict[str, float]:
    """Precision@k and recall@k on the datasets of `RANKING_CUTOFFS`; nothing on the others.

    Args:
        dataset: the benchmark dataset's name.
        scores: `[num_rows, num_labels]` logits.
        labels: `[num_rows]` class ids or `[num_rows, num_labels]` multi-hot rows.
        multi_label: whether `labels` is multi-hot.
    """
    cutoffs = RANKING_CUTOFFS.get(dataset)
    return ranking_metrics(scores, labels, multi_label, cutoffs) if cutoffs else {}


# LoRA coverage (`targets=` option): regexes PEFT matches against full module names, the same for the peer's
# `bert.encoder...` and the label-token backbone's `encoder...` names. Without the option, PEFT's default for the
# architecture (BERT: query and value).
LORA_TARGETS = {
    "attention": r".*encoder\.layer\.\d+\.attention\..*(query|key|value|dense)",
    "all": r".*encoder\.layer\.\d+\..*(query|key|value|dense)",
}


def lora_kwargs(args, options: dict[str, str] | None = None) -> dict[str, Any]:
    kwargs = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "lora_dropout": 0.1}
    targets = (options or {}).get("targets")
    if targets is not None:
        if targets not in LORA_TARGETS:
            raise ValueError(f"targets={targets!r}: use one of {sorted(LORA_TARGETS)}.")
        kwargs["target_modules"] = LORA_TARGETS[targets]
    return kwargs


def problem_type(multi_label: bool) -> str:
    return "multi_label_classification" if multi_label else "single_label_classification"


def run_labeltok(options: dict[str, str], data, args, seed: int) -> tuple[dict, nn.Module]:
    """The label-token adapter on the frozen backbone; options as in the benchmark's --methods help."""
    _, labels, multi_label = data
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    backbone = AutoModel.from_pretrained(args.model, add_pooling_layer=False)
    config = LabelTokConfig(
        labels=labels,
        problem_type=problem_type(multi_label),
        label_init=options.get("init", "label_text"),
        label_descriptions=dataset_label_descriptions(args.dataset) if options.get("desc", "0") == "1" else None,
        label_attention=options.get("attention", "full"),
        label_positions=options.get("positions", "sequential"),
        label_chunk_size=int(options["chunk"]) if "chunk" in options else None,
        label_layers=int(options["layers"]) if "layers" in options else None,
        label_sample_size=int(options["sample"]) if "sample" in options else None,
        label_anchor_weight=float(options.get("anchor", 0.0)),
        per_label_bias=options.get("bias", "0") == "1",
        head_type=options.get("head", "linear"),
        lora=lora_kwargs(args, options) if options.get("lora", "1") == "1" else None,
        init_seed=seed,
    )
    model = get_labeltok_model(backbone, config, tokenizer=tokenizer)
    learning_rate = float(options.get("lr", args.learning_rate))
    label_lr = float(options.get("label_lr", args.label_learning_rate))
    head_lr = float(options["head_lr"]) if "head_lr" in options else None  # None: the LoRA rate
    lazy = options.get("lazy", "1") == "1"
    optimizer = create_optimizer(
        model, learning_rate, label_learning_rate=label_lr, head_learning_rate=head_lr, lazy_label_rows=lazy
    )
    return train_and_evaluate(model, tokenizer, data, args, seed, learning_rate, optimizer), model


def sequence_classifier(args, labels: list[str], multi_label: bool):
    return AutoModelForSequenceClassification.from_pretrained(
        args.model,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        problem_type=problem_type(multi_label),
    )


def run_peft_lora_seq_cls(options: dict[str, str], data, args, seed: int) -> tuple[dict, nn.Module]:
    """The main peer: `AutoModelForSequenceClassification` + `LoraConfig(task_type="SEQ_CLS")`, same r and targets."""
    from peft import LoraConfig, get_peft_model

    _, labels, multi_label = data
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = get_peft_model(
        sequence_classifier(args, labels, multi_label), LoraConfig(task_type="SEQ_CLS", **lora_kwargs(args, options))
    )
    learning_rate = float(options.get("lr", args.learning_rate))
    optimizer = None
    if "head_lr" in options:  # fairness control: the peer's head at the rate label tokens give their table
        trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
        head = [parameter for name, parameter in trainable if "classifier" in name]
        rest = [parameter for name, parameter in trainable if "classifier" not in name]
        if not head:
            raise ValueError("head_lr: the peer has no trainable 'classifier' parameters to give that rate.")
        groups = [{"params": rest}, {"params": head, "lr": float(options["head_lr"])}]
        optimizer = torch.optim.AdamW(groups, lr=learning_rate, weight_decay=0.0)
    return train_and_evaluate(model, tokenizer, data, args, seed, learning_rate, optimizer), model


def run_full_ft_seq_cls(options: dict[str, str], data, args, seed: int) -> tuple[dict, nn.Module]:
    """Full fine-tuning of `AutoModelForSequenceClassification` (every weight trains) at --full_learning_rate."""
    _, labels, multi_label = data
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = sequence_classifier(args, labels, multi_label)
    learning_rate = float(options.get("lr", args.full_learning_rate))
    return train_and_evaluate(model, tokenizer, data, args, seed, learning_rate), model


class ResizedVocabLabelTokens(nn.Module):
    """Label tokens as the original repository built them: new vocabulary entries, everything trainable.

    Each label is a new token `[label]` in the tokenizer, the embedding matrix is resized, and every input becomes
    `[CLS] [l1] ... [lK] text [SEP]` with ordinary sequential positions. One shared `Linear(hidden, 1)` maps each
    label position to its logit.

    Args:
        backbone: an encoder (`AutoModel`) already resized to the tokenizer with the label tokens.
        label_token_ids: `[num_labels]` ids of the label tokens.
        multi_label: BCE on sigmoid logits instead of cross-entropy.
    """

    def __init__(self, backbone: nn.Module, label_token_ids: list[int], multi_label: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("label_token_ids", torch.tensor(label_token_ids, dtype=torch.long), persistent=False)
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        self.multi_label = multi_label

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        """Scores every label for each row.

        Args:
            input_ids: `[batch, seq_len]` right-padded ids starting with `[CLS]`.
            attention_mask: `[batch, seq_len]` 1 for real tokens.
            labels: `[batch]` class ids or `[batch, num_labels]` multi-hot floats.
            token_type_ids: ignored (labels and text are one segment).

        Returns:
            `SequenceClassifierOutput` with `logits` `[batch, num_labels]`.
        """
        batch, num_labels = input_ids.shape[0], self.label_token_ids.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        label_ids = self.label_token_ids[None].expand(batch, -1)
        ids = torch.cat([input_ids[:, :1], label_ids, input_ids[:, 1:]], dim=1)  # [batch, seq_len + num_labels]
        mask = torch.cat([attention_mask[:, :1], torch.ones_like(label_ids), attention_mask[:, 1:]], dim=1)
        hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = self.head(hidden[:, 1 : 1 + num_labels]).squeeze(-1)  # [batch, num_labels]
        loss = None
        if labels is not None:
            if self.multi_label:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def run_full_ft_labeltok(options: dict[str, str], data, args, seed: int) -> tuple[dict, nn.Module]:
    """Full fine-tuning with label tokens in a resized vocabulary (the original repository's scheme).

    Options: `init=resize` (transformers' default for new rows: sampled around the mean embedding) or
    `init=label_text` (mean embedding of the label's own tokens, like the adapter's default).
    """
    _, labels, multi_label = data
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    backbone = AutoModel.from_pretrained(args.model, add_pooling_layer=False)
    label_tokens = [f"[{label}]" for label in labels]
    tokenizer.add_tokens(label_tokens, special_tokens=True)
    backbone.resize_token_embeddings(len(tokenizer))
    label_token_ids = tokenizer.convert_tokens_to_ids(label_tokens)
    if options.get("init", "resize") == "label_text":
        embeddings = backbone.get_input_embeddings().weight
        with torch.no_grad():
            for label, token_id in zip(labels, label_token_ids, strict=True):
                ids = tokenizer(label, add_special_tokens=False)["input_ids"]
                embeddings[token_id] = embeddings[ids].mean(dim=0)
    torch.manual_seed(seed)
    model = ResizedVocabLabelTokens(backbone, label_token_ids, multi_label)
    learning_rate = float(options.get("lr", args.full_learning_rate))
    return train_and_evaluate(model, tokenizer, data, args, seed, learning_rate), model


# --------------------------------------------------------------------------------------------------- linear probe


@torch.no_grad()
def mean_pooled_embeddings(model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """`[num_texts, hidden]` mean of the last hidden states over real tokens."""
    rows = []
    for start in range(0, len(texts), 64):
        encoded = tokenizer(
            texts[start : start + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"][:, :, None].to(hidden.dtype)
        rows.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(rows)


def run_linear_probe(options: dict[str, str], data, args, seed: int) -> tuple[dict, None]:
    """Logistic regression (one-vs-rest for multi-label) on frozen mean-pooled embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    splits, labels, multi_label = data
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model).eval()
    start = time.perf_counter()
    train_x = mean_pooled_embeddings(model, tokenizer, list(splits["train"]["text"]), args.max_length)
    train_y = np.asarray(encoded_labels(list(splits["train"]["label"]), len(labels), multi_label))
    classifier = LogisticRegression(max_iter=2000, C=float(options.get("C", 10.0)), random_state=seed)
    if multi_label:
        classifier = OneVsRestClassifier(classifier)
    classifier.fit(train_x, train_y)
    train_seconds = time.perf_counter() - start
    test_texts = list(splits["test"]["text"])
    start = time.perf_counter()
    logits = classifier.decision_function(mean_pooled_embeddings(model, tokenizer, test_texts, args.max_length))
    eval_seconds = time.perf_counter() - start
    test_y = np.asarray(encoded_labels(list(splits["test"]["label"]), len(labels), multi_label))
    metrics = classification_metrics(logits, test_y, multi_label=multi_label)
    metrics |= ranked_quality(args.dataset, logits, test_y, multi_label)
    estimators = classifier.estimators_ if multi_label else [classifier]
    weight = np.concatenate([e.coef_ for e in estimators]).astype(np.float32)
    bias = np.concatenate([e.intercept_ for e in estimators]).astype(np.float32)
    size = safetensors_bytes({"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)})
    return dict(
        metrics,
        train_seconds=train_seconds,
        step_seconds=None,
        steps=0,
        eval_seconds=eval_seconds,
        eval_rows_per_second=len(test_texts) / eval_seconds,
        trainable_params=int(weight.size + bias.size),
        adapter_bytes=size,
    ), None


RUNNERS = {
    "peft_lora_seq_cls": run_peft_lora_seq_cls,
    "linear_probe": run_linear_probe,
    "labeltok": run_labeltok,
    "full_ft_seq_cls": run_full_ft_seq_cls,
    "full_ft_labeltok": run_full_ft_labeltok,
    "setfit": run_setfit,
}


def run_method(spec: str, seed: int, args, fresh_process: bool = True) -> dict:
    """Trains and evaluates one method for one seed; meant to run in a fresh process (see the module docstring).

    Args:
        spec: a method spec such as `labeltok:init=cls:lora=0`.
        seed: training seed (initialisation, data order, dropout).
        args: the benchmark's parsed arguments.
        fresh_process: whether this process ran nothing else; otherwise the CPU peak memory (a process-wide
            high-water mark) is not reported.

    Returns:
        A flat dict of numbers: quality metrics, `trainable_params`, `adapter_bytes`, times, `peak_memory_bytes` and
        `memory_method`.
    """
    name, options = parse_method(spec)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    data = load_dataset(args.dataset, args.per_label, args.data_seed)
    few_shot = {}
    if getattr(args, "shots", None):  # train on N rows per class (per label); the test split stays whole
        splits, labels, multi_label = data
        sample_seed = seed if args.sample_seed is None else args.sample_seed
        data = (few_shot_train(splits, labels, multi_label, args.shots, sample_seed), labels, multi_label)
        train_labels = list(data[0]["train"]["label"])
        counts = shot_counts(train_labels, len(labels), range(len(train_labels)), multi_label)
        few_shot = {"train_rows": len(train_labels), "min_label_rows": min(counts), "max_label_rows": max(counts)}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss_bytes()
    set_seed(seed)
    result, model = RUNNERS[name](options, data, args, seed)
    if cuda:
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        result["memory_method"] = "torch.cuda.max_memory_allocated"
    elif baseline is not None and fresh_process:
        result["peak_memory_bytes"] = peak_rss_bytes() - baseline
        result["memory_method"] = "peak RSS (ru_maxrss) minus RSS after imports, fresh process per run"
    if model is not None:
        result["trainable_params"] = count_trainable(model)
        result["adapter_bytes"] = saved_bytes(model)
    return result | few_shot
