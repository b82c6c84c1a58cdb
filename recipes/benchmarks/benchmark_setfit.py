"""SetFit as a peer of the benchmark (`--methods setfit`): the few-shot anchor.

SetFit (`pip install setfit==1.2.0`, or `pip install -e ".[benchmark]"`) fine-tunes a sentence-transformers body
contrastively on pairs of training rows (same label: similar; different labels: dissimilar), then fits a
logistic-regression head on the tuned embeddings. The body is the same all-MiniLM-L6-v2 folder as every other
method's backbone: it carries the sentence-transformers files (`modules.json`: Transformer, mean Pooling,
Normalize), so `SetFitModel.from_pretrained` loads it offline as is.

The recipe is SetFit's documented default: `num_iterations=20` pair-generation rounds, one body epoch, batch 16,
body learning rate 2e-5, `CosineSimilarityLoss`, scikit-learn `LogisticRegression()` head (one-vs-rest for
multi-label). Only the maximum length follows the benchmark's `--max_length`, so every method reads the same
tokens (SetFit's own `max_length` argument does not reach the body: the body's `max_seq_length` is set).
Everything trains (the whole body and the head), and `save_pretrained` writes the whole body.

Options (`setfit:key=value`): `iterations` (default 20), `epochs` (body epochs, default 1), `body_lr` (default
2e-5), `batch` (pairs per step, default 16).
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from labeltok_peft import classification_metrics

from .benchmark_common import encoded_labels
from .benchmark_measure import folder_bytes

SETFIT_VERSION = "1.2.0"
INSTALL_HINT = f'pip install setfit=={SETFIT_VERSION} (or pip install -e ".[benchmark]")'


@contextmanager
def _no_progress_bars():
    """SetFit's trainers draw tqdm bars that bury the benchmark log; tqdm reads TQDM_DISABLE at each bar."""
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def setfit_scores(model, texts: list[str], num_labels: int, multi_label: bool) -> np.ndarray:
    """`[num_texts, num_labels]` logit-like scores from SetFit's head probabilities.

    Single-label: log-probabilities, one column per class id (a class missing from the training rows scores -inf).
    Multi-label: the log-odds of each label's one-vs-rest probability, so the benchmark's sigmoid threshold of 0.5
    is the head's own decision.
    """
    probabilities = np.asarray(model.predict_proba(texts, as_numpy=True), dtype=np.float64)
    probabilities = np.clip(probabilities, 1e-12, 1 - 1e-12)
    if multi_label:
        return np.log(probabilities) - np.log1p(-probabilities)
    scores = np.full((len(texts), num_labels), -np.inf)
    classes = np.asarray(model.model_head.classes_, dtype=np.int64)  # columns of predict_proba, as class ids
    scores[:, classes] = np.log(probabilities)
    return scores


def run_setfit(options: dict[str, str], data, args, seed: int) -> tuple[dict, None]:
    """Trains SetFit with its default recipe and evaluates it on the test split.

    Args:
        options: the spec's options (`iterations`, `epochs`, `body_lr`, `batch`).
        data: `(splits, labels, multi_label)`; `splits` has `train` and `test` with `text` and `label`.
        args: the benchmark's parsed arguments (`model`, `max_length`, `dataset`).
        seed: the training seed (pair sampling, body initialisation order, head).

    Returns:
        Quality metrics, `train_seconds`, `eval_seconds`, `eval_rows_per_second`, `trainable_params` (the whole
        body and the head) and `adapter_bytes` (what `save_pretrained` writes, model card left out), and `None` for
        the model (it is no `nn.Module`; the caller counts nothing more).
    """
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
    except ImportError as error:
        raise ImportError(f"The setfit method needs SetFit: {INSTALL_HINT}. ({error})") from error

    from .benchmark_methods import ranked_quality  # imported here: benchmark_methods imports this module

    splits, labels, multi_label = data
    train_labels = list(splits["train"]["label"])
    if multi_label:  # one-vs-rest takes multi-hot integer rows
        train_labels = [[int(value) for value in row] for row in encoded_labels(train_labels, len(labels), True)]
    train = Dataset.from_dict({"text": list(splits["train"]["text"]), "label": train_labels})
    model = SetFitModel.from_pretrained(
        args.model, local_files_only=True, multi_target_strategy="one-vs-rest" if multi_label else None
    )
    # SetFit's `max_length` argument reaches only a differentiable head: the body's own limit (256 in this
    # checkpoint's sentence_bert_config.json) decides what contrastive training, the head fit and predict read.
    model.model_body.max_seq_length = args.max_length
    with tempfile.TemporaryDirectory() as output_dir, _no_progress_bars():
        training_args = TrainingArguments(
            output_dir=output_dir,
            num_iterations=int(options.get("iterations", 20)),
            num_epochs=int(options.get("epochs", 1)),
            batch_size=int(options.get("batch", 16)),
            body_learning_rate=float(options.get("body_lr", 2e-5)),
            max_length=args.max_length,
            seed=seed,
            report_to="none",
            save_strategy="no",
            show_progress_bar=False,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=train)
        start = time.perf_counter()
        trainer.train()  # contrastive body training, then the logistic-regression head on the tuned embeddings
        train_seconds = time.perf_counter() - start
        test_texts = list(splits["test"]["text"])
        start = time.perf_counter()
        scores = setfit_scores(model, test_texts, len(labels), multi_label)
        eval_seconds = time.perf_counter() - start
    test_y = np.asarray(encoded_labels(list(splits["test"]["label"]), len(labels), multi_label))
    metrics = classification_metrics(scores, test_y, multi_label=multi_label)
    metrics |= ranked_quality(args.dataset, scores, test_y, multi_label)
    head = model.model_head
    estimators = head.estimators_ if multi_label else [head]
    head_params = sum(int(e.coef_.size + e.intercept_.size) for e in estimators)
    body_params = sum(p.numel() for p in model.model_body.parameters() if p.requires_grad)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        size = folder_bytes(Path(folder))
    return dict(
        metrics,
        train_seconds=train_seconds,
        step_seconds=None,
        steps=0,
        eval_seconds=eval_seconds,
        eval_rows_per_second=len(test_texts) / eval_seconds,
        trainable_params=body_params + head_params,
        adapter_bytes=size,
    ), None
