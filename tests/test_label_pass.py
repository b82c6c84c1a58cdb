"""The label pass (isolated attention): the text runs once, labels attend to its kept keys/values plus their own key.

Reference everywhere: the spliced sequence with the isolating 4D mask (`model._splice_isolated_labels = True`), which
computes the same thing in one backbone call. With a sliding window shorter than the text that reference is wrong
(its 4D mask replaces the window), so there the reference is the backbone's own code on each label alone: the row's
real text, then the label at its position id, with masked filler slots in between so that the backbone's index-based
window counts the same distance as the positions.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY, VOCAB_SIZE, tiny_backbone
from transformers import (
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    Gemma3TextConfig,
    Gemma3TextModel,
    GemmaConfig,
    GemmaModel,
    MistralConfig,
    MistralModel,
    ModernBertConfig,
    ModernBertModel,
    Qwen3Config,
    Qwen3Model,
)

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
SPECIAL_IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
DECODER = dict(vocab_size=VOCAB_SIZE, num_key_value_heads=2, **SPECIAL_IDS, **TINY)

BACKBONES = {
    "bert": lambda: tiny_backbone("bert"),
    "roberta": lambda: tiny_backbone("roberta"),
    "distilbert": lambda: DistilBertModel(
        DistilBertConfig(
            vocab_size=VOCAB_SIZE, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, dropout=0.0
        )
    ),
    "electra": lambda: ElectraModel(
        ElectraConfig(vocab_size=VOCAB_SIZE, embedding_size=32, max_position_embeddings=64, **NO_DROPOUT, **TINY)
    ),
    "modernbert": lambda: ModernBertModel(
        ModernBertConfig(
            vocab_size=VOCAB_SIZE, max_position_embeddings=64, cls_token_id=1, sep_token_id=2, **SPECIAL_IDS, **TINY
        )
    ),
    "llama": lambda: tiny_backbone("llama"),
    "qwen2": lambda: tiny_backbone("qwen2"),
    "qwen3": lambda: Qwen3Model(Qwen3Config(head_dim=8, **DECODER)),
    "mistral": lambda: MistralModel(MistralConfig(**DECODER)),
    "gemma": lambda: GemmaModel(GemmaConfig(head_dim=8, **DECODER)),
    "gemma3": lambda: Gemma3TextModel(Gemma3TextConfig(head_dim=8, **DECODER)),
    "gpt2": lambda: tiny_backbone("gpt2"),
}
# Random LoRA weights (B is not zero), so LoRA changes the logits and every LoRA weight gets a gradient.
LORA = {"r": 4, "target_modules": "all-linear", "init_lora_weights": False}
LABELS = ["a", "b", "c", "d", "e"]


def build(backbone: torch.nn.Module, lora: dict | None = LORA, **kwargs) -> LabelTokModel:
    """Isolated labels through every layer (the exact label pass that must equal the spliced path)."""
    torch.manual_seed(0)
    kwargs.setdefault("label_layers", None)
    kwargs.setdefault("labels", LABELS)
    config = LabelTokConfig(label_init="random", label_attention="isolated", lora=lora, **kwargs)
    return get_labeltok_model(backbone.eval(), config)


def make_batch(padding_side: str, batch_size: int = 3, seq_len: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, VOCAB_SIZE, (batch_size, seq_len), generator=generator)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    for row in range(1, batch_size):
        pad = 2 * row
        if padding_side == "right":
            mask[row, seq_len - pad :] = 0
        else:
            mask[row, :pad] = 0
    return {"input_ids": input_ids, "attention_mask": mask}


def logits_and_grads(model: LabelTokModel, batch: dict, splice: bool = False) -> tuple[torch.Tensor, dict]:
    """Logits and the gradients of every trainable tensor for a fixed random weighting of the logits."""
    model._splice_isolated_labels = splice
    model.zero_grad()
    logits = model(**batch).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    (logits * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model._splice_isolated_labels = False
    return logits.detach(), grads


def assert_same(ours: tuple[torch.Tensor, dict], reference: tuple[torch.Tensor, dict]) -> None:
    """Logits within 1e-5; every gradient within 3e-5 of its reference's largest entry.

    The two paths sum in different orders, so fp32 rounding differs: gradients measured up to 1.1e-5 of their largest
    entry apart (Gemma 3, left padding, on a loaded 2-core machine; under 1e-5 on a quiet one). Scaling a label's
    score for its own key by 1.001 in label_pass.py still fails every family.
    """
    torch.testing.assert_close(ours[0], reference[0], atol=1e-5, rtol=1e-5)
    assert ours[1].keys() == reference[1].keys()
    assert any("lora_" in name for name in reference[1]) and any("label_tables" in name for name in reference[1])
    for name, grad in reference[1].items():
        scale = grad.abs().max()
        assert scale > 0, f"{name} has no gradient"
        error = (ours[1][name] - grad).abs().max() / scale
        assert error <= 3e-5, f"{name}: gradient off by {error:.2e} of its largest entry"


@pytest.mark.parametrize("family", sorted(BACKBONES))
@pytest.mark.parametrize(("padding_side", "positions"), [("right", "shared"), ("left", "sequential")])
def test_label_pass_equals_the_spliced_path(family, padding_side, positions):
    model = build(BACKBONES[family](), label_positions=positions)
    batch = make_batch(padding_side)
    assert_same(logits_and_grads(model, batch), logits_and_grads(model, batch, splice=True))


@pytest.mark.parametrize("family", ["bert", "llama", "gemma3"])
def test_label_pass_equals_the_spliced_path_with_eager_attention(family):
    backbone = BACKBONES[family]()
    backbone.config._attn_implementation = "eager"
    model = build(backbone, label_positions="shared")
    batch = make_batch("right")
    assert_same(logits_and_grads(model, batch), logits_and_grads(model, batch, splice=True))
    assert model.base_model.config._attn_implementation == "eager"


@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_batch_of_one(family):
    model = build(BACKBONES[family]())
    batch = make_batch("right", batch_size=1)
    ours = logits_and_grads(model, batch)
    assert ours[0].shape == (1, len(LABELS))
    assert_same(ours, logits_and_grads(model, batch, splice=True))


@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
@pytest.mark.parametrize("positions", ["shared", "sequential"])
def test_chunks_reuse_one_text_pass(family, positions):
    model = build(BACKBONES[family](), label_positions=positions)
    batch = make_batch("left")
    whole = logits_and_grads(model, batch)
    model.labeltok_config.label_chunk_size = 2
    first_layer = {"bert": "encoder.layer.0", "llama": "layers.0", "gpt2": "h.0"}[family]
    first_layer = model.base_model.get_submodule(first_layer)
    lengths = []
    hook = first_layer.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    chunked = logits_and_grads(model, batch)
    hook.remove()
    assert lengths == [7, 2, 2, 1], "the text must run once, then one label call per chunk"
    assert_same(chunked, whole)


def test_labels_do_not_see_each_other_and_text_is_isolated():
    model = build(BACKBONES["llama"]())
    batch = make_batch("right")
    before = model(**batch).logits.detach()
    with torch.no_grad():
        model.label_tables["default"][1:] += torch.randn_like(model.label_tables["default"][1:])
    after = model(**batch).logits.detach()
    torch.testing.assert_close(after[:, 0], before[:, 0], atol=1e-6, rtol=0)
    assert (after[:, 1:] - before[:, 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_both_label_attention_kernels_equal_the_spliced_path(family, monkeypatch):
    """sdpa backbones on a GPU use one SDPA call up to SDPA_MAX_LABELS_PER_TEXT_KEY labels per text key, the row-wise
    kernel beyond; 60 labels on 7 text tokens take the second, chunks of 8 the first, and each is checked on its own
    (here on the CPU, let into the SDPA call; tests/test_cuda.py runs the label pass on CUDA)."""
    from labeltok_peft import label_pass

    monkeypatch.setattr(label_pass, "SDPA_LABEL_ATTENTION_DEVICES", frozenset({"cpu", "cuda"}))
    calls = []
    for kernel in ("label_attention", "label_attention_sdpa"):
        original = getattr(label_pass, kernel)
        monkeypatch.setattr(
            label_pass, kernel, lambda *a, _f=original, _k=kernel, **kw: calls.append(_k) or _f(*a, **kw)
        )
    labels = [f"label {index}" for index in range(60)]
    model = build(BACKBONES[family](), label_positions="shared", labels=labels)
    batch = make_batch("left")
    reference = logits_and_grads(model, batch, splice=True)
    assert_same(logits_and_grads(model, batch), reference)
    assert set(calls) == {"label_attention"}, "60 labels on 7 text keys must take the row-wise kernel"
    calls.clear()
    model.labeltok_config.label_chunk_size = 8
    assert_same(logits_and_grads(model, batch), reference)
    assert set(calls) == {"label_attention_sdpa"}, "8 labels on 7 text keys must take the SDPA kernel"
    monkeypatch.setattr(label_pass, "SDPA_LABEL_ATTENTION_DEVICES", frozenset({"cuda"}))
    calls.clear()
    model(**batch)
    assert set(calls) == {"label_attention"}, "the CPU takes the row-wise kernel"


def test_the_attention_implementation_is_restored_even_on_error():
    model = build(BACKBONES["bert"]())
    config = model.base_model.config

    def fail(*args):
        raise RuntimeError("boom")

    hook = model.base_model.encoder.layer[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        model(**make_batch("right"))
    hook.remove()
    assert config._attn_implementation == "sdpa"
    # Outside our calls the backbone is its plain self again: no keys/values are kept.
    from labeltok_peft.label_pass import _ACTIVE

    assert _ACTIVE.get() is None


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flex_attention"])
def test_other_attention_kernels_are_refused_with_the_fix(kernel):
    backbone = BACKBONES["llama"]()
    backbone.config._attn_implementation = kernel
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        build(backbone)
    model = build(BACKBONES["llama"]())
    model.base_model.config._attn_implementation = kernel
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        model(**make_batch("right"))
    # Full attention passes a plain padding mask: any kernel can take it.
    config = LabelTokConfig(labels=LABELS, label_init="random", label_attention="full")
    full = get_labeltok_model(BACKBONES["llama"](), config)
    assert full.labeltok_config.label_attention.value == "full"


def windowed(family: str, window: int) -> torch.nn.Module:
    if family == "mistral":
        return MistralModel(MistralConfig(sliding_window=window, **DECODER))
    return Gemma3TextModel(
        Gemma3TextConfig(
            head_dim=8, sliding_window=window, layer_types=["sliding_attention", "full_attention"], **DECODER
        )
    )


@torch.no_grad()
def one_label_at_a_time(model: LabelTokModel, batch: dict) -> torch.Tensor:
    """Each label alone after each row's real text, run by the backbone's own code and masks (windows included)."""
    config = model.labeltok_config
    table, head = model.label_tables["default"], model.heads["default"]
    embeddings = model.base_model.get_input_embeddings()
    logits = torch.empty(batch["input_ids"].shape[0], config.num_labels)
    for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"], strict=True)):
        text = embeddings(ids[mask.bool()])  # [real_len, hidden]
        for label in range(config.num_labels):
            gap = 0 if config.label_positions.value == "shared" else label
            filler = torch.zeros(gap, text.shape[1])
            inputs = torch.cat([text, filler, table[label : label + 1]])[None]
            attention = torch.ones(1, inputs.shape[1], dtype=torch.long)
            attention[0, text.shape[0] : text.shape[0] + gap] = 0
            hidden = model.backbone(inputs_embeds=inputs, attention_mask=attention, use_cache=False)[0]
            logits[row, label] = head(hidden[:, -1:], slice(label, label + 1))[0, 0]
    return logits


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("positions", ["shared", "sequential"])
def test_sliding_window_shorter_than_the_text(family, padding_side, positions):
    model = build(windowed(family, window=3), label_positions=positions)
    batch = make_batch(padding_side)
    with torch.no_grad():
        ours = model(**batch).logits
        model._splice_isolated_labels = True
        spliced = model(**batch).logits
    reference = one_label_at_a_time(model, batch)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # The window matters here: the 4D mask of the spliced path lets labels see past it.
    assert (spliced - reference).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["mistral", "gemma3"])
def test_window_longer_than_the_text_changes_nothing(family):
    model = build(windowed(family, window=64), label_positions="shared")
    batch = make_batch("left")
    torch.testing.assert_close(model(**batch).logits, one_label_at_a_time(model, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_non_reentrant_checkpointing_is_exact_and_recomputes(family):
    batch = make_batch("right")
    model = build(BACKBONES[family]())
    model.train()
    reference = logits_and_grads(model, batch)
    model.gradient_checkpointing_enable()  # non-reentrant by default
    model.labeltok_config.label_chunk_size = 2
    first_layer = model.base_model.layers[0] if family == "llama" else model.base_model.encoder.layer[0]
    attention = first_layer.self_attn if family == "llama" else first_layer.attention
    calls = []
    # The recomputation stops once it has what backward needs, so the hook sits on the attention, which it needs.
    hook = attention.register_forward_pre_hook(lambda *args: calls.append(1))
    model.zero_grad()
    model(**batch).logits.sum().backward()
    hook.remove()
    # Text once and three label chunks, each again in backward: a no-op checkpointing would give 4.
    assert len(calls) == 8, calls
    assert_same(logits_and_grads(model, batch), reference)
    assert model.base_model.config._attn_implementation == "sdpa"


def test_reentrant_checkpointing_is_refused_with_the_fix():
    model = build(BACKBONES["llama"]())
    model.gradient_checkpointing_enable({"use_reentrant": True})
    model.train()
    with pytest.raises(ValueError, match="'use_reentrant': False"):
        model(**make_batch("right"))
    with torch.no_grad():  # nothing is recomputed without gradients
        assert model(**make_batch("right")).logits.shape == (3, len(LABELS))


@pytest.fixture(scope="module")
def nf4_checkpoints(tmp_path_factory) -> dict:
    pytest.importorskip("bitsandbytes")
    folders = {}
    for family in ("bert", "llama"):
        folders[family] = tmp_path_factory.mktemp(family)
        tiny_backbone(family).save_pretrained(folders[family])
    return folders


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_label_pass_on_a_4bit_backbone(nf4_checkpoints, family):
    from labeltok_peft.quantization import is_quantized, load_backbone

    # fp32 compute: the default bf16 would round the two paths' different matmul shapes differently.
    backbone = load_backbone(nf4_checkpoints[family], precision="nf4", compute_dtype=torch.float32)
    model = build(backbone, lora={"r": 4, "init_lora_weights": False})
    assert is_quantized(model.base_model)
    batch = make_batch("left")
    assert_same(logits_and_grads(model, batch), logits_and_grads(model, batch, splice=True))
