"""One DDP training step on a quantized tiny backbone, per process; run by tests/test_quantization.py.

Usage: accelerate launch --multi_gpu --num_processes 2 ... kbit_ddp_step.py CHECKPOINT PRECISION FAMILY OUT_DIR
Each process writes OUT_DIR/rank<k>.safetensors (its trainable weights after the step) and rank<k>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import tokenizer_for  # noqa: E402

from labeltok_peft import LabelTokConfig, get_labeltok_model  # noqa: E402
from labeltok_peft.quantization import load_backbone, prepare_kbit_training, quantized_modules  # noqa: E402

TEXTS = ["the team won the match", "bank profit and market shares", "film actor award", "phone software chip"]


def main(checkpoint: str, precision: str, family: str, out_dir: str) -> None:
    # On a machine without GPUs, DDP over gloo needs cpu=True (plain Accelerator() runs independent processes).
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank = accelerator.process_index
    backbone = load_backbone(checkpoint, precision=precision)
    prepare_kbit_training(backbone, gradient_checkpointing=True)
    tokenizer = tokenizer_for(family)
    model = get_labeltok_model(
        backbone, LabelTokConfig(labels=["sport", "business", "film", "tech"], lora={"r": 4}), tokenizer=tokenizer
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    # Each rank sees different rows: identical weights afterwards prove that DDP averaged the gradients.
    rows = [TEXTS[rank], TEXTS[(rank + 2) % 4]]
    batch = tokenizer(rows, padding=True, return_tensors="pt").to(accelerator.device)
    loss = model(**batch, labels=torch.tensor([rank, (rank + 2) % 4], device=accelerator.device)).loss
    accelerator.backward(loss)
    optimizer.step()
    unwrapped = accelerator.unwrap_model(model)
    state = {name: p.detach().cpu().contiguous() for name, p in unwrapped.named_parameters() if p.requires_grad}
    save_file(state, Path(out_dir) / f"rank{rank}.safetensors")
    report = {
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "device": str(accelerator.device),
        "backbone_device": unwrapped.base_model.get_input_embeddings().weight.device.type,
        "quantized_modules": len(quantized_modules(unwrapped.base_model)),
        "wrapped": type(model).__name__,
        "loss": loss.item(),
    }
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:5])
