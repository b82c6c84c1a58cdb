"""The README.md model card written next to a saved adapter, ready for the Hugging Face Hub."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import LabelTokConfig
from .constants import is_hub_id

# Longer descriptions are cut in the card's label table (the config keeps them whole).
DESCRIPTION_CHARS = 80


@dataclass
class ModelCardInfo:
    """What the card says about one adapter.

    Attributes:
        adapter_name: name of the adapter in the model it was saved from.
        config: the adapter's `LabelTokConfig`.
        base_model: `name_or_path` of the backbone it was trained on (`None` when unknown).
        hidden_size: width of the backbone's hidden states (the label table is `[num_labels, hidden_size]`).
        library_version: labeltok-peft version that saved it.
        dataset_name: name of the training data, when known.
        metrics: evaluation metrics (name -> value), when known.
        lora_rank: LoRA rank `r`, or `None` for an adapter without LoRA.
        lora_target_modules: modules LoRA adapts.
        repo_id: where the folder will be pushed (used in the usage snippet); the local folder when `None`.
    """

    adapter_name: str
    config: LabelTokConfig
    base_model: str | None
    hidden_size: int
    library_version: str
    dataset_name: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    lora_rank: int | None = None
    lora_target_modules: list[str] = field(default_factory=list)
    repo_id: str | None = None


def _metadata_yaml(info: ModelCardInfo) -> str:
    # Hub metadata (`base_model`, `datasets`) must be repository ids; local paths and free-form names stay in the body.
    from huggingface_hub import ModelCardData

    tags = ["labeltok-peft", "label-tokens", "text-classification"]
    if info.lora_rank is not None:
        tags.append("lora")
    data = ModelCardData(
        base_model=info.base_model if is_hub_id(info.base_model) else None,
        datasets=[info.dataset_name] if is_hub_id(info.dataset_name) else None,
        library_name="labeltok-peft",
        pipeline_tag="text-classification",
        tags=tags,
    )
    return data.to_yaml()


def _format_metric(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}"


def _labels_section(config: LabelTokConfig) -> list[str]:
    kind = (
        "multi-label (one sigmoid per label; a text may have several labels)"
        if config.is_multi_label
        else "single-label (softmax over the labels; one label per text)"
    )
    lines = ["## Labels", "", f"{config.num_labels} labels, {kind}. Logit `i` scores label `i`:", ""]
    descriptions = config.label_descriptions or {}
    if not descriptions:
        lines += ["| id | label |", "|---:|---|"]
        return lines + [f"| {index} | {_escape_cell(label)} |" for index, label in config.id2label.items()]
    lines += ["| id | label | description |", "|---:|---|---|"]
    for index, label in config.id2label.items():
        text = _short(descriptions[label]) if label in descriptions else "(its name)"
        lines.append(f"| {index} | {_escape_cell(label)} | {_escape_cell(text)} |")
    return lines + [
        "",
        "Descriptions are stored in `labeltok_config.json` (`label_descriptions`); with `label_init='label_text'` a "
        "label's row started from its description, else from its name.",
    ]


def _short(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """The text on one line, cut to `limit` characters with an ellipsis (the full text is in the config)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _metrics_section(info: ModelCardInfo) -> list[str]:
    lines = ["## Evaluation", ""]
    if not info.metrics:
        return lines + ["No metrics were recorded when this adapter was saved."]
    lines += ["| metric | value |", "|---|---:|"]
    lines += [f"| {_escape_cell(name)} | {_format_metric(value)} |" for name, value in sorted(info.metrics.items())]
    return lines


def _usage_section(info: ModelCardInfo) -> list[str]:
    base = info.base_model or "<the backbone this adapter was trained on>"
    source = info.repo_id or "<path to this folder>"
    example = "business shares rose after the bank reported record profit"
    return [
        "## Usage",
        "",
        "```python",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        "from labeltok_peft import LabelTokModel",
        "",
        f'backbone = AutoModel.from_pretrained("{base}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{base}")',
        f'model = LabelTokModel.from_pretrained(backbone, "{source}", tokenizer=tokenizer)',
        f'print(model.predict("{example}"))',
        "```",
        "",
        "To serve several tasks from one backbone, load more adapters with "
        '`model.load_adapter(path, adapter_name="other")` and switch with `model.set_adapter("other")`.',
    ]


# What each head type adds to the shared Linear, in the card's "head" line.
HEAD_TYPE_SUFFIX = {
    "linear": "",
    "tied": " plus a learned scale times the cosine with each label's own row (tied)",
    "residual": " plus a weight vector per label (residual)",
    "cosine": ", normalised: a learned temperature times the cosine with its weight (cosine)",
}


def _adapter_section(info: ModelCardInfo) -> list[str]:
    config = info.config
    lora = "none (label table and head only)"
    if info.lora_rank is not None:
        targets = ", ".join(f"`{name}`" for name in sorted(info.lora_target_modules)) or "PEFT defaults"
        lora = f"r={info.lora_rank} on {targets} (PEFT format in `lora/`)"
    return [
        "## Adapter",
        "",
        f"- label table: `[{config.num_labels}, {info.hidden_size}]`, initialised with `{config.label_init.value}`",
        f"- head: one shared fp32 `Linear({info.hidden_size}, 1)`"
        + (" plus a bias per label" if config.per_label_bias else "")
        + HEAD_TYPE_SUFFIX[config.head_type.value],
        f"- placement: `{config.placement.value}`, label attention: `{config.label_attention.value}`, "
        f"label positions: `{config.label_positions.value}`, label layers: "
        + ("every layer" if config.label_layers is None else f"the last {config.label_layers} (late injection)"),
        f"- LoRA: {lora}",
        f"- saved by labeltok-peft {info.library_version} as adapter `{info.adapter_name}`; files are safetensors and "
        "JSON only (no pickle)",
    ]


def model_card_text(info: ModelCardInfo) -> str:
    """Renders the model card.

    Args:
        info: what to say about the adapter.

    Returns:
        The README.md text: Hub metadata (YAML front matter), labels, base model, training data, metrics, usage.
    """
    base = f"`{info.base_model}`" if info.base_model else "an unrecorded backbone"
    data = f"`{info.dataset_name}`" if info.dataset_name else "not recorded"
    lines = [
        "---",
        _metadata_yaml(info).rstrip(),
        "---",
        "",
        f"# Label-token classifier: {info.adapter_name}",
        "",
        f"A labeltok-peft adapter for {base}. Every label below is a learned token placed "
        "beside the text; the backbone's output at each label token goes through one shared linear layer to that "
        "label's logit. The backbone itself is not part of this folder.",
        "",
        f"- base model: {base}",
        f"- training data: {data}",
        "",
        *_labels_section(info.config),
        "",
        *_metrics_section(info),
        "",
        *_usage_section(info),
        "",
        *_adapter_section(info),
        "",
    ]
    return "\n".join(lines)
