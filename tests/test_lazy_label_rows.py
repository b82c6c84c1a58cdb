"""Lazy per-label rows: labels a step does not score (`label_sample_size`) keep their rows and optimizer state."""

from __future__ import annotations

import copy

import torch
from test_label_pass import make_batch
from test_sampled_labels import build
from transformers import TrainingArguments

from labeltok_peft.optim import PER_LABEL_ROWS, adapter_parameter_groups, create_optimizer
from labeltok_peft.trainer import LabelTokTrainer

LABELS_OF_ROWS = torch.tensor([1, 2, 30])


def per_label_tensors(model) -> dict[str, torch.nn.Parameter]:
    head = model.heads["default"]
    return {"table": model.label_tables["default"], "label_weight": head.label_weight, "label_bias": head.label_bias}


def backward_on_a_step(model, seed: int) -> None:
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)  # the draw of the step's negatives
    model(**make_batch("right"), labels=LABELS_OF_ROWS).loss.backward()


def untouched_rows(parameter: torch.Tensor) -> torch.Tensor:
    return parameter.grad.reshape(parameter.shape[0], -1).eq(0).all(dim=1)


def snapshot(model, optimizer) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    return {
        name: (p.detach().clone(), {k: v.clone() for k, v in optimizer.state.get(p, {}).items() if k != "step"})
        for name, p in per_label_tensors(model).items()
    }


def train_sampled_steps(lazy: bool, steps: int = 4) -> list[dict[str, tuple[int, bool, bool]]]:
    """Per step and per-label tensor: (rows not scored, did they keep their values, did they keep their state)."""
    model = build(label_sample_size=5, per_label_bias=True, head_type="residual")
    optimizer = create_optimizer(model, 1e-2, label_learning_rate=5e-2, lazy_label_rows=lazy)
    report = []
    for step in range(steps):
        backward_on_a_step(model, seed=step)
        before = snapshot(model, optimizer)
        optimizer.step()
        after = snapshot(model, optimizer)
        step_report = {}
        for name, parameter in per_label_tensors(model).items():
            rows = untouched_rows(parameter)
            (values, state), (new_values, new_state) = before[name], after[name]
            kept_values = torch.equal(values[rows], new_values[rows])
            kept_state = all(torch.equal(state[k][rows], new_state[k][rows]) for k in state)
            moved_scored = not torch.equal(values[~rows], new_values[~rows])
            step_report[name] = (int(rows.sum()), kept_values and moved_scored, kept_state)
        report.append(step_report)
    return report


def test_rows_of_labels_not_scored_keep_values_and_state():
    for step, step_report in enumerate(train_sampled_steps(lazy=True)):
        for name, (untouched, kept_values, kept_state) in step_report.items():
            assert untouched == 32, f"step {step} {name}: 8 of the 40 labels are scored (3 positives, 5 negatives)"
            assert kept_values, f"step {step}: {name} rows of unscored labels moved, or scored ones did not"
            assert kept_state, f"step {step}: {name} optimizer state of unscored labels changed"


def test_plain_adamw_moves_rows_it_has_no_gradient_for():
    """What the lazy update prevents: from the second step on, momentum moves rows of labels not scored."""
    report = train_sampled_steps(lazy=False)
    first, second = report[0], report[1]
    assert first["table"][1:] == (True, True), "a fresh AdamW's first step moves nothing without a gradient"
    assert second["table"][1:] == (False, False) and second["label_weight"][1:] == (False, False)


def test_dense_training_is_unchanged():
    """Every label scored in every step: the lazy optimizer's weights equal plain AdamW's bitwise."""
    model = build(per_label_bias=True, head_type="residual")
    twin = copy.deepcopy(model)
    lazy = create_optimizer(model, 1e-2, label_learning_rate=5e-2)
    plain = create_optimizer(twin, 1e-2, label_learning_rate=5e-2, lazy_label_rows=False)
    for step in range(3):
        for net, optimizer in ((model, lazy), (twin, plain)):
            backward_on_a_step(net, seed=step)
            optimizer.step()
    for (name, ours), theirs in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(ours, theirs), name


def test_per_label_head_tensors_have_their_own_marked_group():
    model = build(per_label_bias=True, head_type="residual")
    groups = {group["name"]: group for group in adapter_parameter_groups(model, 1e-3, 5e-2)}
    head = model.heads["default"]
    assert groups["labels"][PER_LABEL_ROWS] and groups["labels"]["params"] == [model.label_tables["default"]]
    assert groups["head_per_label"][PER_LABEL_ROWS] and groups["head_per_label"]["weight_decay"] == 0.0
    assert {id(p) for p in groups["head_per_label"]["params"]} == {id(head.label_weight), id(head.label_bias)}
    unmarked = set(groups) - {"labels", "head_per_label"}
    assert unmarked and not any(groups[name].get(PER_LABEL_ROWS) for name in unmarked)


def test_the_trainer_optimizer_is_lazy(tmp_path):
    model = build(label_sample_size=5, per_label_bias=True, head_type="residual")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], learning_rate=1e-2, use_cpu=True)
    optimizer = LabelTokTrainer(model=model, args=args, label_learning_rate=5e-2).create_optimizer()
    table = model.label_tables["default"]
    for step in range(3):
        backward_on_a_step(model, seed=step)
        rows = untouched_rows(table)
        before = table.detach().clone()
        optimizer.step()
        assert rows.sum() == 32 and torch.equal(before[rows], table.detach()[rows]), f"step {step}"
