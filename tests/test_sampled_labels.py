"""Sampled labels (`label_sample_size=k`): training steps score the batch's positives plus shared uniform negatives."""

from __future__ import annotations

import math

import pytest
import torch
from test_label_pass import BACKBONES, make_batch
from tiny_models import TINY
from transformers import BertConfig, BertModel

from labeltok_peft import LabelTokConfig, get_labeltok_model
from labeltok_peft.sampling import sample_labels, sampled_loss

NUM_LABELS = 40
LABELS = [f"label{i}" for i in range(NUM_LABELS)]
MIN = torch.finfo(torch.float32).min


def build(family: str = "bert", multi_label: bool = False, **kwargs):
    torch.manual_seed(0)
    config = LabelTokConfig(
        labels=LABELS,
        label_init="random",
        label_attention="isolated",
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
        lora={"r": 4, "target_modules": "all-linear", "init_lora_weights": False},
        **kwargs,
    )
    return get_labeltok_model(BACKBONES[family](), config)


def multi_hot(rows: list[list[int]]) -> torch.Tensor:
    labels = torch.zeros(len(rows), NUM_LABELS)
    for row, ids in enumerate(rows):
        labels[row, ids] = 1.0
    return labels


@pytest.mark.parametrize("seed", range(5))
def test_the_set_holds_every_positive_plus_k_negatives(seed):
    torch.manual_seed(seed)
    single = torch.tensor([3, 3, 17, 39])
    sampled = sample_labels(single, NUM_LABELS, 10, multi_label=False)
    assert sampled.ids.numel() == 13 and sampled.ids.unique().numel() == 13  # 3 positives + 10 negatives
    assert set(single.tolist()) <= set(sampled.ids.tolist())
    assert torch.equal(sampled.ids, sampled.ids.sort().values)
    assert ((sampled.ids >= 0) & (sampled.ids < NUM_LABELS)).all()
    # Positives enter surely (log 1 = 0); the 10 drawn negatives with probability 10 / 37.
    positive = torch.isin(sampled.ids, single)
    assert (sampled.log_inclusion[positive] == 0).all()
    torch.testing.assert_close(sampled.log_inclusion[~positive], torch.full((10,), math.log(10 / 37)))
    multi = multi_hot([[0, 5], [5, 9, 11], []])
    sampled = sample_labels(multi, NUM_LABELS, 12, multi_label=True)
    assert sampled.ids.numel() == 16 and {0, 5, 9, 11} <= set(sampled.ids.tolist())
    # As many positives as k or more still draw k negatives: the set never collapses to the positives.
    many = torch.arange(0, 30, 2)
    sampled = sample_labels(many, NUM_LABELS, 8, multi_label=False)
    assert sampled.ids.numel() == 23 and set(many.tolist()) <= set(sampled.ids.tolist())
    # Fewer negatives left than k: all of them, each surely in the set.
    sampled = sample_labels(many, NUM_LABELS, 50, multi_label=False)
    assert sampled.ids.tolist() == list(range(NUM_LABELS)) and (sampled.log_inclusion == 0).all()


def test_negatives_are_uniform():
    torch.manual_seed(0)
    counts = torch.zeros(NUM_LABELS)
    for _ in range(2000):
        counts[sample_labels(torch.tensor([0]), NUM_LABELS, 5, multi_label=False).ids] += 1
    assert counts[0] == 2000
    frequency = counts[1:] / 2000  # each of the 39 others: 5 / 39
    assert (frequency - 5 / 39).abs().max() < 0.035


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_training_loss_is_the_sampled_loss_on_the_same_set(family, multi_label):
    model = build(family, multi_label=multi_label, label_sample_size=8, label_chunk_size=3, per_label_bias=True)
    with torch.no_grad():
        model.heads["default"].label_bias.normal_()
    batch = make_batch("right")
    labels = multi_hot([[1, 2], [2], [30]]) if multi_label else torch.tensor([1, 2, 30])
    model.eval()
    all_scores = model(**batch).logits.detach()  # dropout is off in the tiny backbones, so train scores match
    model.train()
    output = model(**batch, labels=labels)
    assert output.logits.shape == (3, NUM_LABELS)
    scored = output.logits[0] > MIN
    assert (output.logits > MIN).eq(scored).all(), "every row scores the same set"
    ids = scored.nonzero().flatten()
    assert ids.numel() == 11 and {1, 2, 30} <= set(ids.tolist())  # 3 positives + 8 negatives
    torch.testing.assert_close(output.logits[:, ids], all_scores[:, ids], atol=1e-5, rtol=1e-5)
    assert (output.logits[:, ~scored] == MIN).all()
    subset = all_scores[:, ids]
    if multi_label:
        negatives = ~labels.bool().any(dim=0)[ids]
        correction = torch.where(negatives, math.log(8 / 37), 0.0)  # 8 drawn of the 37 labels positive in no row
        expected = torch.nn.functional.binary_cross_entropy_with_logits(subset - correction, labels[:, ids])
    else:
        negatives = ~torch.isin(ids, labels)
        correction = torch.where(negatives, math.log(8 / 37), 0.0)  # 8 drawn of the 37 non-positive labels
        targets = torch.tensor([ids.tolist().index(label) for label in labels.tolist()])
        expected = torch.nn.functional.cross_entropy(subset - correction, targets)
    torch.testing.assert_close(output.loss.detach(), expected, atol=1e-5, rtol=1e-5)
    output.loss.backward()
    table_grad = model.label_tables["default"].grad
    assert (table_grad[ids].abs().sum(dim=1) > 0).all() and (table_grad[~scored] == 0).all()


def test_sampled_softmax_estimates_full_cross_entropy():
    """Averaged over many draws, the corrected sampled softmax lands near cross-entropy over every label (it is a
    consistent, not unbiased, estimate)."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4, NUM_LABELS, generator=generator) - 2
    labels = torch.tensor([1, 2, 30, 7])
    torch.manual_seed(0)
    estimates = []
    for _ in range(3000):
        sampled = sample_labels(labels, NUM_LABELS, 10, multi_label=False)
        estimates.append(sampled_loss(scores[:, sampled.ids], labels, sampled, multi_label=False))
    full = torch.nn.functional.cross_entropy(scores, labels)
    assert abs(float(torch.stack(estimates).mean() - full)) < 0.1 * float(full)


def test_sampled_bce_learns_each_labels_frequency():
    """Fitting one bias per label (no text) with the sampled multi-label loss puts each label's probability near its
    frequency in the data, rare labels included; a plain BCE mean over the set, without the inclusion correction,
    puts the rare labels' probabilities about 3x too high."""
    batch, num_batches, sample_size = 32, 150, 5
    generator = torch.Generator().manual_seed(0)
    prevalence = torch.logspace(math.log10(0.003), math.log10(0.15), NUM_LABELS)
    batches = [(torch.rand(batch, NUM_LABELS, generator=generator) < prevalence).float() for _ in range(num_batches)]
    frequency = torch.cat(batches).mean(dim=0)
    torch.manual_seed(0)
    draws = [sample_labels(labels, NUM_LABELS, sample_size, multi_label=True) for labels in batches]

    def fitted_probabilities(loss_fn) -> torch.Tensor:
        bias = torch.zeros(NUM_LABELS, requires_grad=True)
        optimizer = torch.optim.Adam([bias], lr=0.1)
        for _ in range(250):
            optimizer.zero_grad()
            sum(
                loss_fn(bias[sampled.ids].expand(batch, -1), labels, sampled)
                for labels, sampled in zip(batches, draws, strict=True)
            ).backward()
            optimizer.step()
        return torch.sigmoid(bias.detach())

    corrected = fitted_probabilities(lambda scores, labels, sampled: sampled_loss(scores, labels, sampled, True))
    plain = fitted_probabilities(
        lambda scores, labels, sampled: torch.nn.functional.binary_cross_entropy_with_logits(
            scores, labels[:, sampled.ids]
        )
    )
    ratio = corrected / frequency
    assert ratio.min() > 0.7 and ratio.max() < 1.5, ratio
    assert (plain / frequency)[:5].min() > 2.0


def test_evaluation_and_no_labels_score_every_label():
    model = build(label_sample_size=8)
    batch = make_batch("left")
    labels = torch.tensor([1, 2, 30])
    model.eval()
    evaluated = model(**batch, labels=labels)
    assert evaluated.logits.shape == (3, NUM_LABELS) and (evaluated.logits > MIN).all()
    torch.testing.assert_close(evaluated.loss, torch.nn.functional.cross_entropy(evaluated.logits, labels))
    model.train()
    assert (model(**batch).logits > MIN).all()  # no labels: nothing to sample around
    unsampled = build(label_sample_size=NUM_LABELS)  # k >= K: the plain loss over every label
    unsampled.train()
    assert (unsampled(**batch, labels=labels).logits > MIN).all()


def test_sample_size_is_validated():
    for value in (0, -3, True, 2.0):
        with pytest.raises(ValueError, match="label_sample_size must be"):
            LabelTokConfig(labels=LABELS, label_attention="isolated", label_sample_size=value)
    assert LabelTokConfig(labels=LABELS, label_attention="isolated", label_sample_size=1).label_sample_size == 1
    with pytest.raises(ValueError, match="label_sample_size=8 needs label_attention='isolated'"):
        LabelTokConfig(labels=LABELS, label_attention="full", label_sample_size=8)


def test_a_tiny_model_with_200_labels_learns_from_32_sampled_labels():
    """A row's class is its second token's id. The data use 20 of the 200 classes (a long tail that never shows up),
    so the full-softmax loss falls only if sampled training lifts the right labels and pushes every other one down,
    the never-positive ones included, although a step scores only 32 of them."""
    num_labels, vocab = 200, 210
    torch.manual_seed(0)
    backbone = BertModel(
        BertConfig(
            vocab_size=vocab,
            max_position_embeddings=32,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **TINY,
        ),
        add_pooling_layer=False,
    )
    config = LabelTokConfig(
        labels=[f"class{i}" for i in range(num_labels)],
        label_init="random",
        label_attention="isolated",
        label_positions="shared",
        label_layers=1,
        label_sample_size=32,
        lora={"r": 8, "target_modules": ["query", "value"]},
    )
    model = get_labeltok_model(backbone, config)
    generator = torch.Generator().manual_seed(1)

    def batch(size: int) -> dict[str, torch.Tensor]:
        labels = torch.randint(0, 20, (size,), generator=generator) * 10
        input_ids = torch.randint(num_labels, vocab, (size, 6), generator=generator)
        input_ids[:, 1] = labels
        return {"input_ids": input_ids, "labels": labels}

    held_out = batch(256)

    def full_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**held_out).loss)

    before = full_loss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    for _ in range(80):
        model(**batch(32)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = full_loss()
    assert before > 5.0  # about log(200) = 5.3 at the start
    assert after < 0.5 * before, (before, after)
