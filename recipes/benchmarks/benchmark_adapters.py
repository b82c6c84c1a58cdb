"""Adapter size, switch time and load time for BBC News (5 labels) on all-MiniLM-L6-v2, against PEFT LoRA SEQ_CLS.

Nothing is trained: sizes do not depend on the weights' values. The adapters get random weights so that a reload
can be checked against the source (logits must be bitwise equal).

    python -m recipes.benchmarks.benchmark_adapters [--switches 2000] [--loads 20] [--output results.json]

Measured:
    size            bytes on disk of a saved adapter: label tokens without LoRA, with LoRA r=16, and a PEFT LoRA
                    SEQ_CLS adapter of the same r (AutoModelForSequenceClassification + LoraConfig(task_type="SEQ_CLS"))
    switch time     median of many `set_adapter` calls between adapters on one backbone (ms)
    load time       median `load_adapter` time onto an already loaded backbone, each load followed by a delete (ms)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as transformers_logging

from labeltok_peft import LabelTokConfig, LabelTokModel, get_labeltok_model
from labeltok_peft.corpora import BBC_NEWS_LABELS

from .benchmark_common import minilm_path

LORA_RANK = 16
TEXTS = ["Shares in the bank rose after record profits.", "The striker scored twice in the cup final."]


def folder_bytes(folder: Path, suffix: str | None = None) -> int:
    """Total size of the files under `folder` (only those ending in `suffix` when given)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and (suffix is None or p.suffix == suffix))


def randomise(model: LabelTokModel, seed: int) -> None:
    """Gives every adapter tensor a non-initial value (LoRA B starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("label_tables.", "heads.")) or "lora_" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)


def labeltok_adapter(path: str, tokenizer, lora: bool, seed: int) -> LabelTokModel:
    config = LabelTokConfig(labels=BBC_NEWS_LABELS, lora={"r": LORA_RANK} if lora else None)
    model = get_labeltok_model(AutoModel.from_pretrained(path), config, tokenizer=tokenizer)
    randomise(model, seed)
    return model.eval()


def peft_seq_cls_bytes(path: str, folder: Path) -> tuple[int, int]:
    """(all files, safetensors only) of a PEFT LoRA SEQ_CLS adapter with the same rank."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(BBC_NEWS_LABELS))
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=LORA_RANK))
    peft_model.save_pretrained(folder)
    return folder_bytes(folder), folder_bytes(folder, ".safetensors")


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def time_switches(model: LabelTokModel, names: list[str], switches: int) -> float:
    samples = []
    for index in range(switches):
        name = names[index % len(names)]
        start = time.perf_counter()
        model.set_adapter(name)
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def time_loads(model: LabelTokModel, folder: Path, loads: int) -> float:
    samples = []
    for _ in range(loads):
        start = time.perf_counter()
        model.load_adapter(folder, "probe")
        samples.append(time.perf_counter() - start)
        model.delete_adapter("probe")
    return median_ms(samples)


def logits(model: LabelTokModel, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def main() -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--switches", type=int, default=2000, help="set_adapter calls per switch measurement")
    parser.add_argument("--loads", type=int, default=20, help="load_adapter calls per load measurement")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    transformers_logging.set_verbosity_error()  # the SEQ_CLS head is newly initialised on purpose: no load report
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    results: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        sources = {"plain": labeltok_adapter(path, tokenizer, lora=False, seed=1)}
        sources["lora"] = labeltok_adapter(path, tokenizer, lora=True, seed=2)
        for name, source in sources.items():
            source.save_pretrained(work / name, dataset_name="bbc_news")
            results[f"labeltok_{name}_bytes_all_files"] = folder_bytes(work / name)
            results[f"labeltok_{name}_bytes_safetensors"] = folder_bytes(work / name, ".safetensors")
        peft_all, peft_weights = peft_seq_cls_bytes(path, work / "peft_seq_cls")
        results["peft_lora_seq_cls_bytes_all_files"] = peft_all
        results["peft_lora_seq_cls_bytes_safetensors"] = peft_weights

        # One backbone in memory, four adapters: two without LoRA, two with LoRA r=16.
        model = LabelTokModel(AutoModel.from_pretrained(path), tokenizer=tokenizer).eval()
        for suffix in ("a", "b"):
            model.load_adapter(work / "plain", f"plain_{suffix}")
            model.load_adapter(work / "lora", f"lora_{suffix}")
        for name in ("plain", "lora"):
            model.set_adapter(f"{name}_a")
            assert torch.equal(logits(model, tokenizer), logits(sources[name], tokenizer)), f"{name} reload differs"

        results["switch_ms_plain_to_plain"] = time_switches(model, ["plain_a", "plain_b"], args.switches)
        results["switch_ms_lora_to_lora"] = time_switches(model, ["lora_a", "lora_b"], args.switches)
        results["switch_ms_lora_to_plain"] = time_switches(model, ["lora_a", "plain_a"], args.switches)

        model.set_adapter("plain_a")
        results["load_ms_plain"] = time_loads(model, work / "plain", args.loads)
        results["load_ms_lora_onto_model_with_lora"] = time_loads(model, work / "lora", args.loads)
        for name in ("lora_a", "lora_b"):
            model.delete_adapter(name)
        results["load_ms_lora_onto_bare_backbone"] = time_loads(model, work / "lora", args.loads)

    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.3f}" if isinstance(value, float) else f"{key:<{width}}  {value:,d}")
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
