"""User story: "I serve several classification tasks and can afford one backbone in memory."

Builds two task adapters with different label sets and problem types on ONE all-MiniLM-L6-v2, saves both, loads
them onto a single backbone and switches between them per request. Untrained adapters keep it fast: the point is
the mechanics (output width, labels, head and LoRA weights follow the active adapter). Seconds on a CPU.

    python examples/many_tasks_one_backbone.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.corpora import BBC_NEWS_LABELS
from labeltok_peft.pretrained import resolve_model_path


def main() -> None:
    path = resolve_model_path("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    with tempfile.TemporaryDirectory() as folder:
        topics = LabelTokConfig(labels=BBC_NEWS_LABELS, lora={"r": 8})
        get_labeltok_model(AutoModel.from_pretrained(path), topics, tokenizer=tokenizer).save_pretrained(
            f"{folder}/topics"
        )
        tones = LabelTokConfig(
            labels=["positive", "negative", "question", "urgent"], problem_type="multi_label_classification"
        )
        get_labeltok_model(AutoModel.from_pretrained(path), tones, tokenizer=tokenizer).save_pretrained(
            f"{folder}/tones"
        )
        sizes = {name: sum(f.stat().st_size for f in Path(folder, name).rglob("*")) for name in ("topics", "tones")}
        print("adapter sizes on disk (bytes):", sizes)

        backbone = AutoModel.from_pretrained(path)  # loaded once
        model = LabelTokModel.from_pretrained(backbone, f"{folder}/topics", adapter_name="topics", tokenizer=tokenizer)
        model.load_adapter(f"{folder}/tones", "tones")
    print("adapters:", model.adapters)

    text = "Is the new tax on banks going to hit profits this year?"
    for name in ("topics", "tones"):
        start = time.perf_counter()
        model.set_adapter(name)
        switch_ms = 1000 * (time.perf_counter() - start)
        prediction = model.predict(text)
        print(f"[{name}] switched in {switch_ms:.2f} ms; id2label={model.id2label}")
        print(f"[{name}] {prediction}")


if __name__ == "__main__":
    main()
