"""Loading a frozen backbone in 4-bit, 8-bit, bf16 or fp32, and preparing a k-bit backbone for training.

bitsandbytes is imported only when a 4-bit or 8-bit backbone is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
import warnings
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .machine import accelerator_available

QUANTIZED_LINEAR_CLASSES = ("Linear4bit", "Linear8bitLt")
GGUF_CACHE_ENV = "LABELTOK_PEFT_CACHE"


class Precision(str, Enum):
    """How the frozen backbone's weights are stored."""

    NF4 = "nf4"
    INT8 = "int8"
    BF16 = "bf16"
    FP32 = "fp32"


def _coerce_precision(precision: Precision | str) -> Precision:
    try:
        return Precision(precision)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in Precision)
        raise ValueError(f"precision must be one of {allowed}; got {precision!r}.") from None


def default_compute_dtype() -> torch.dtype:
    """The dtype 4-bit layers compute in when none is given: bf16, or fp16 on CUDA GPUs without bf16 (pre-Ampere)."""
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def default_device_map() -> dict[str, str]:
    """`{"": device}` placing the whole backbone on this process's device (accelerate's `PartialState().device`).

    Under `accelerate launch`/`torchrun` with several processes, every process must hold its own full copy of a
    quantized backbone on its own device: `device_map="auto"` would spread one copy over all GPUs, and bitsandbytes
    weights cannot be moved afterwards (accelerate#1515). The device is `cuda:<local_process_index>` on GPUs and
    `cpu` without an accelerator.

    An existing `Accelerator`/`PartialState` is reused. If none exists yet, one is created, with `cpu=True` on
    machines without an accelerator: a `PartialState` created with the default `cpu=False` there would make every
    later `Accelerator()` run as independent single processes (no gloo, no gradient averaging) even under
    `accelerate launch --multi_gpu --num_processes 2`.
    """
    return {"": str(_partial_state().device)}


def _partial_state():
    from accelerate import PartialState

    return PartialState(cpu=not accelerator_available())


def quantization_config(
    precision: Precision | str,
    compute_dtype: torch.dtype | None = None,
    skip_modules: list[str] | None = None,
):
    """The `transformers.BitsAndBytesConfig` of a precision, or `None` for bf16/fp32.

    Args:
        precision: 'nf4' (4-bit NormalFloat with double quantization) or 'int8' (LLM.int8()); 'bf16' and 'fp32'
            return `None`.
        compute_dtype: dtype the 4-bit matmuls run in (default `default_compute_dtype()`).
        skip_modules: module names left unquantized (`llm_int8_skip_modules`, used by 4-bit too); `None` keeps
            transformers' defaults.
    """
    precision = _coerce_precision(precision)
    if precision in (Precision.BF16, Precision.FP32):
        return None
    from transformers import BitsAndBytesConfig

    if precision == Precision.NF4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or default_compute_dtype(),
            llm_int8_skip_modules=skip_modules,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)


def _require_bitsandbytes(precision: Precision) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            f"precision={precision.value!r} needs bitsandbytes, which is not installed: `pip install bitsandbytes` "
            "(>= 0.49 runs 4-bit and 8-bit on CPU too), or use precision='bf16' or 'fp32'."
        )


def storage_dtype(precision: Precision | str, compute_dtype: torch.dtype | None = None) -> torch.dtype:
    """dtype of the weights bitsandbytes does not quantize (embeddings, norms) and of a bf16/fp32 backbone.

    Quantized backbones keep those weights in the compute dtype when it is bf16 (half the memory of fp32, and no
    fp16 overflow in norms); with an fp16 compute dtype they stay fp32, which is what `prepare_model_for_kbit_training`
    would upcast them to anyway.
    """
    precision = _coerce_precision(precision)
    if precision == Precision.FP32:
        return torch.float32
    if precision == Precision.BF16:
        return torch.bfloat16
    compute_dtype = compute_dtype or default_compute_dtype()
    return torch.bfloat16 if compute_dtype == torch.bfloat16 else torch.float32


_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "revision", "subfolder", "token")


def _without_pooler_kwargs(name_or_path: str | os.PathLike, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`{"add_pooling_layer": False}` where the bare model would build a pooler (BERT family), else `{}`.

    Label tokens never use the pooler. Dropping it saves its compute, and a checkpoint without pooler weights would
    otherwise get a freshly initialised *quantized* pooler, which bitsandbytes cannot run.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    config = kwargs.get("config") or AutoConfig.from_pretrained(
        name_or_path, **{key: kwargs[key] for key in (*_HUB_KWARGS, "gguf_file") if key in kwargs}
    )
    try:
        model_class = MODEL_MAPPING[type(config)]
    except KeyError:
        return {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


def load_backbone(
    name_or_path: str | os.PathLike,
    precision: Precision | str = Precision.FP32,
    device_map: dict[str, Any] | str | None = None,
    compute_dtype: torch.dtype | None = None,
    skip_modules: list[str] | None = None,
    gguf_file: str | None = None,
    gguf_cache_dir: str | os.PathLike | None = None,
    **from_pretrained_kwargs: Any,
) -> nn.Module:
    """Loads the bare transformer of a checkpoint (`AutoModel`) as a frozen backbone for label tokens.

    The label table and the head are not part of the backbone, so they are never quantized, whatever `precision`.

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> from labeltok_peft import LabelTokConfig, get_labeltok_model
    >>> from labeltok_peft.quantization import load_backbone, prepare_kbit_training
    >>> tok = AutoTokenizer.from_pretrained("meta-llama/Llama-3.2-1B")
    >>> backbone = load_backbone("meta-llama/Llama-3.2-1B", precision="nf4")
    >>> prepare_kbit_training(backbone, gradient_checkpointing=True)
    >>> model = get_labeltok_model(backbone, LabelTokConfig(labels=["neg", "pos"], lora={"r": 16}), tokenizer=tok)
    ```

    Args:
        name_or_path: hub id or local folder (for GGUF: the folder that holds `gguf_file`).
        precision: 'nf4' (4-bit NormalFloat, double quantization), 'int8' (LLM.int8()), 'bf16' or 'fp32'.
        device_map: where the weights go. Default: the whole model on this process's device
            (`default_device_map()`, one full copy per process under `accelerate launch`), which quantized models
            need; pass `"auto"` to spread one copy over several GPUs in a single process.
        compute_dtype: 4-bit compute dtype (default `default_compute_dtype()`: bf16, or fp16 on pre-Ampere GPUs).
            Unquantized weights (embeddings, norms) are stored in bf16 when it is bf16, else in fp32.
        skip_modules: module names to leave unquantized; `None` keeps transformers' defaults.
        gguf_file: name of a GGUF file in `name_or_path`. bf16/fp32 load it dequantized; nf4/int8 first convert it
            once to a Hugging Face folder under `gguf_cache_dir` (see `gguf_to_hf_folder`) and quantize that.
        gguf_cache_dir: where converted GGUF checkpoints are kept (default `$LABELTOK_PEFT_CACHE/gguf` or
            `~/.cache/labeltok_peft/gguf`).
        from_pretrained_kwargs: passed on to `AutoModel.from_pretrained` (`revision`, `attn_implementation`, ...).
            `dtype` overrides the storage dtype chosen from `precision`.

    Returns:
        The bare transformer (for example `LlamaModel`, `BertModel` without pooler) in eval mode, every weight
        frozen.

    Raises:
        ValueError: for an unknown precision, or a `quantization_config` passed alongside a k-bit precision.
        ImportError: for 'nf4'/'int8' without bitsandbytes installed.
    """
    from transformers import AutoModel

    precision = _coerce_precision(precision)
    if "quantization_config" in from_pretrained_kwargs and precision in (Precision.NF4, Precision.INT8):
        raise ValueError(
            f"Pass either precision={precision.value!r} or your own quantization_config, not both; with your own "
            "config use precision='bf16' or 'fp32' to choose the dtype of the unquantized weights."
        )
    kwargs = dict(from_pretrained_kwargs)
    if precision in (Precision.NF4, Precision.INT8):
        _require_bitsandbytes(precision)
        kwargs["quantization_config"] = quantization_config(precision, compute_dtype, skip_modules)
        if gguf_file is not None:
            # bitsandbytes cannot quantize GGUF tensors on load: go through a plain (cached) HF checkpoint.
            name_or_path = gguf_to_hf_folder(name_or_path, gguf_file, gguf_cache_dir)
            gguf_file = None
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    kwargs.setdefault("dtype", storage_dtype(precision, compute_dtype))
    kwargs.setdefault("device_map", device_map if device_map is not None else default_device_map())
    for key, value in _without_pooler_kwargs(name_or_path, kwargs).items():
        kwargs.setdefault(key, value)
    model = AutoModel.from_pretrained(name_or_path, **kwargs)
    disable_cpu_weight_repacking(model)
    if gguf_file is not None:
        # A dequantized GGUF model still carries a GGUF quantization_config, which makes save_pretrained refuse it.
        _drop_gguf_quantization_config(model)
    model.requires_grad_(False)
    return model.eval()


def _drop_gguf_quantization_config(model: nn.Module) -> None:
    config = model.config
    if getattr(getattr(config, "quantization_config", None), "quant_method", None) in ("gguf", "GGUF"):
        del config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None and model.hf_quantizer.__class__.__name__.startswith("Gguf"):
        model.hf_quantizer = None


def default_gguf_cache_dir() -> Path:
    """`$LABELTOK_PEFT_CACHE/gguf`, or `~/.cache/labeltok_peft/gguf`."""
    root = os.environ.get(GGUF_CACHE_ENV) or Path.home() / ".cache" / "labeltok_peft"
    return Path(root) / "gguf"


def gguf_to_hf_folder(directory: str | os.PathLike, gguf_file: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Converts a GGUF checkpoint once to a Hugging Face folder (fp32 safetensors + config + tokenizer).

    transformers dequantizes GGUF files on load but refuses to save or bitsandbytes-quantize the result. The cached
    folder can be loaded like any checkpoint, in any precision. The cache key is the file's path, size and
    modification time; under several processes the first process on each machine converts and the others wait.

    Args:
        directory: folder holding the GGUF file.
        gguf_file: the file's name inside `directory`.
        cache_dir: parent folder of converted checkpoints (default `default_gguf_cache_dir()`).

    Returns:
        Path of the converted folder.
    """
    source = Path(directory) / gguf_file
    if not source.is_file():
        raise FileNotFoundError(f"No GGUF file {gguf_file!r} in {directory}; pass the folder and the file's name.")
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path(cache_dir or default_gguf_cache_dir()) / f"{source.stem}-{key}"
    with _partial_state().local_main_process_first():
        if not (target / "config.json").is_file():
            _convert_gguf(directory, gguf_file, target)
    return target


def _convert_gguf(directory: str | os.PathLike, gguf_file: str, target: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    dequantized = AutoModel.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    config = dequantized.config
    del config.quantization_config
    plain = AutoModel.from_config(config, dtype=torch.float32)
    plain.load_state_dict(dequantized.state_dict())
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    plain.save_pretrained(partial)
    try:
        AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file).save_pretrained(partial)
    except Exception as error:  # the weights are what the cache is for; a tokenizer can still be loaded from GGUF
        warnings.warn(
            f"Could not convert the tokenizer of {gguf_file} ({error}); load it with gguf_file=...", stacklevel=2
        )
    # Rename last, so an interrupted conversion never looks complete.
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def quantized_modules(module: nn.Module) -> list[str]:
    """Names of the bitsandbytes 4-bit/8-bit linear layers inside `module` (without importing bitsandbytes)."""
    return [
        name
        for name, child in module.named_modules()
        if any(cls.__name__ in QUANTIZED_LINEAR_CLASSES for cls in type(child).__mro__)
    ]


def is_quantized(module: nn.Module) -> bool:
    """Whether `module` holds any bitsandbytes 4-bit or 8-bit linear layer."""
    return bool(quantized_modules(module))


def disable_cpu_weight_repacking(module: nn.Module) -> int:
    """Stops bitsandbytes from repacking 4-bit weights for CPU inference, which breaks later training.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 rewrites a `Linear4bit`'s weight in place into an inference-only
    layout on its first forward pass in eval mode without grad (`model.eval()` + `torch.no_grad()`, as in
    `predict` or a `Trainer` evaluation). The layout stays: every later training step goes through a kernel without
    autograd, so LoRA weights before that layer get no gradient and the label rows a wrong one, silently (layers
    with a bias raise an in-place error instead). Inputs narrower than 64 features cannot be repacked at all.
    Turning it off affects CPU inference speed only (not measured); GPUs never take that path.

    Args:
        module: a model holding bitsandbytes `Linear4bit` layers (others are left alone).

    Returns:
        How many layers were changed.
    """
    changed = 0
    for name in quantized_modules(module):
        layer = module.get_submodule(name)
        if getattr(layer, "support_avx512bf16_for_cpu", False):
            layer.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def prepare_kbit_training(
    backbone: nn.Module,
    gradient_checkpointing: bool = True,
    gradient_checkpointing_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Readies a (quantized) backbone for label-token training, without `prepare_model_for_kbit_training`'s upcast.

    PEFT's `prepare_model_for_kbit_training` casts every unquantized fp16/bf16 weight to fp32: for a bf16 backbone
    that doubles the embedding matrix and the norms, and the fp32 norms then turn the whole residual stream into
    fp32 activations (peft#3265). Label tokens need none of it: the trainable weights (label table, head, LoRA)
    are fp32 already and the frozen weights only run forward. This function only

    1. freezes every backbone weight and turns off bitsandbytes' CPU inference repacking of 4-bit weights
       (`disable_cpu_weight_repacking`, which `load_backbone` applies too);
    2. turns off the KV cache and turns on gradient checkpointing (non-reentrant unless `use_reentrant=True` is
       given). No input-embedding hook is needed for reentrant checkpointing: the spliced `inputs_embeds` require
       grad through the label rows.

    Call it on the bare backbone, before `get_labeltok_model` adds LoRA layers.

    Args:
        backbone: a transformers model, for example from `load_backbone`.
        gradient_checkpointing: recompute activations in the backward pass (acts in training mode only).
        gradient_checkpointing_kwargs: passed to `gradient_checkpointing_enable`; default `{"use_reentrant": False}`.

    Returns:
        The same backbone, changed in place.

    Raises:
        ValueError: if the backbone already holds LoRA layers, or does not support gradient checkpointing.
    """
    adapter_layers = [name for name, _ in backbone.named_modules() if name.endswith(".base_layer")]
    if adapter_layers:
        raise ValueError(
            f"This backbone already holds adapter (LoRA) layers, such as {adapter_layers[0]!r}, which "
            "prepare_kbit_training would freeze. Call prepare_kbit_training(backbone) before get_labeltok_model, "
            "or use model.gradient_checkpointing_enable(...) on the LabelTokModel."
        )
    backbone.requires_grad_(False)
    disable_cpu_weight_repacking(backbone)
    config = getattr(backbone, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False
    if gradient_checkpointing:
        if not getattr(backbone, "supports_gradient_checkpointing", False):
            raise ValueError(
                f"{type(backbone).__name__} does not support gradient checkpointing; call "
                "prepare_kbit_training(backbone, gradient_checkpointing=False)."
            )
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
            backbone.activation_checkpointing_enable(kwargs)
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return backbone
