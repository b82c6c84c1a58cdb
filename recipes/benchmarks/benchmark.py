"""Label tokens against their peers on one or more datasets, side by side in one run.

Every method trains on the same backbone, split, epochs, max length, batch size and seeds, and is evaluated on the
same test split. Times are reported as ratios to PEFT LoRA sequence classification of the same seed in the same
run, because absolute times drift on shared machines. Each (method, seed) runs in a fresh process, so its peak
memory is its own.

    python -m recipes.benchmarks.benchmark --dataset bbc_news --epochs 3 --output_dir outputs/benchmark
    python -m recipes.benchmarks.benchmark --dataset bbc_news,wordnet_lexnames,wordnet_hypernyms --seeds 0,1,2

(from the repository root).

Datasets (--dataset, comma-separated): bbc_news (5 classes), wordnet_lexnames (26 classes), wordnet_hypernyms
(61 labels, multi-label: BCE, sigmoid threshold 0.5; subset accuracy reported too), wordnet_ancestors (1,632 labels,
multi-label; precision@1 and @5 reported too; label tokens need `labeltok:attention=isolated:positions=shared`
there, since 1,632 labels exceed MiniLM's 512 positions). The WordNet ones need `apt-get install wordnet-base`.

Methods (pick with --methods, comma-separated; `key=value` options after colons):
    peft_lora_seq_cls       AutoModelForSequenceClassification + LoraConfig(task_type="SEQ_CLS"), the main peer
    linear_probe            logistic regression on frozen mean-pooled embeddings (one-vs-rest for multi-label)
    full_ft_seq_cls         full fine-tuning of AutoModelForSequenceClassification (at --full_learning_rate)
    full_ft_labeltok        full fine-tuning with label tokens added to a resized vocabulary, after [CLS], shared
                            linear head (the original repository's scheme); keys: init (resize|label_text)
    labeltok[:key=value...] the label-token adapter; keys: init (label_text|cls|vocab_mean|random), lora (0|1),
                            label_lr (float), head_lr (float; default: lr), attention (full|isolated), positions
                            (sequential|shared), chunk (int), layers (int: late injection, label_layers),
                            sample (int: sampled labels per training step, label_sample_size), head
                            (linear|tied|residual|cosine: head_type), bias (0|1: per_label_bias), targets (attention|all: LoRA on
                            every attention projection, or on those and the MLP; default PEFT's query/value),
                            desc (0|1: label rows start from the label descriptions; wordnet_lexnames only, from
                            the lexnames(5WN) manual page), anchor (float: label_anchor_weight, a penalty keeping
                            rows near their start), lazy (0|1: labels a step does not score keep their rows and
                            AdamW state, optim.keep_untouched_label_rows; default 1)
    setfit                  SetFit 1.2.0's default recipe on the same backbone (contrastive body training, 20 pair
                            iterations, one epoch, logistic-regression head); keys: iterations, epochs, body_lr,
                            batch. Needs `pip install -e ".[benchmark]"` (recipes/benchmarks/benchmark_setfit.py)
Every method also takes lr=<float>; peft_lora_seq_cls also takes head_lr=<float>, the rate of its classifier head
(the fair counterpart of the label table's rate), and targets= like labeltok. `--methods all` (the default) runs the 15 specs of
DEFAULT_METHODS; `--methods core` runs CORE_METHODS: the four peers, the default adapter with and without LoRA, and
isolated+shared attention.

`--seed` is the training seed (initialisation, data order, dropout); `--seeds 0,1,2` runs every method once per
seed and reports medians with min–max. The data sample and split use `--data_seed` and stay fixed.

Few shots: `--shots_per_class 8,16` trains each method on N train rows per class (per label on multi-label tasks,
where a row counts for each of its labels), for each N in turn, and evaluates on the whole test split. The sample
uses the training seed (so `--seeds 0,1,2` means three samples, each trained once) unless `--sample_seed` fixes it;
the rule is in recipes/benchmarks/few_shot.py. Runs go to <output_dir>/<dataset>/shots<N>/, and
`python -m recipes.benchmarks.make_few_shot_md` renders them into docs/benchmarks/few_shot.md with a plot.

Each finished (method, seed) is saved at once as <output_dir>/<dataset>/runs/<method>@seed<k>.json, with the
settings it ran under. A rerun with the same settings skips what is saved (so a stopped run resumes, and several
processes can share one dataset by taking different methods or seeds). After each dataset, every saved run with the
same settings is gathered into <output_dir>/<dataset>/results.json (settings, environment, every run, medians with
min/max) and results.md; `--collect` gathers without training. `python -m recipes.benchmarks.make_benchmarks_md`
turns them into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .benchmark_common import (
    DATASETS,
    command_line,
    environment_info,
    load_dataset,
    minilm_path,
    parse_method,
    quality_table,
    quiet_libraries,
    summarize_runs,
)
from .benchmark_methods import run_method
from .few_shot import parse_shots, sample_shots, shot_counts

PEER = "peft_lora_seq_cls"
DEFAULT_METHODS = (
    "peft_lora_seq_cls,linear_probe,full_ft_seq_cls,full_ft_labeltok,"
    "labeltok:init=label_text,labeltok:init=cls,labeltok:init=vocab_mean,labeltok:init=random,"
    "labeltok:init=label_text:lora=0,labeltok:init=cls:lora=0,labeltok:init=vocab_mean:lora=0,"
    "labeltok:init=random:lora=0,labeltok:init=label_text:label_lr=5e-4,"
    "labeltok:attention=isolated,labeltok:attention=isolated:positions=shared"
)
# The peers and the main label-token variants, without the initialisation and learning-rate ablations.
CORE_METHODS = (
    "peft_lora_seq_cls,linear_probe,full_ft_seq_cls,full_ft_labeltok,labeltok:init=label_text,"
    "labeltok:init=label_text:lora=0,labeltok:attention=isolated:positions=shared"
)
METHOD_SETS = {"all": DEFAULT_METHODS, "core": CORE_METHODS}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="bbc_news", help=f"comma-separated, from: {', '.join(DATASETS)}")
    parser.add_argument("--model", default=None, help="backbone path (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument(
        "--methods", default="all", help="comma-separated method specs, or 'all' (default) or 'core' (see above)"
    )
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="LoRA, head and peer learning rate")
    parser.add_argument("--label_learning_rate", type=float, default=5e-2, help="label-table learning rate")
    parser.add_argument("--full_learning_rate", type=float, default=5e-5, help="learning rate of full fine-tuning")
    parser.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of steps used for warm-up")
    parser.add_argument("--lora_r", type=int, default=16)
    parser.add_argument(
        "--per_label",
        type=int,
        default=None,
        help="rows per label (BBC: a stratified slice; WordNet: the sample size per class). Default: all of BBC "
        "News, 200 per WordNet class, 100 per hypernym label, 20 per ancestor label",
    )
    parser.add_argument("--seed", type=int, default=42, help="training seed when --seeds is not given")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds, e.g. 0,1,2 (medians reported)")
    parser.add_argument(
        "--data_seed", type=int, default=42, help="seed of the data sample and split (fixed across seeds)"
    )
    parser.add_argument(
        "--shots_per_class",
        default=None,
        help="comma-separated N: train on N rows per class (per label for multi-label) sampled from the train split, "
        "once per N; the test split stays whole (default: the whole train split)",
    )
    parser.add_argument(
        "--sample_seed",
        type=int,
        default=None,
        help="seed of the few-shot sample (default: each run's training seed, so every seed draws its own sample)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--in_process", action="store_true", help="run everything in this process (debugging; CPU memory not reported)"
    )
    parser.add_argument("--output_dir", default="outputs/benchmark")
    parser.add_argument(
        "--collect", action="store_true", help="only gather the saved runs into results.json (no training)"
    )
    parser.add_argument(
        "--rerun", action="store_true", help="train again even where a run with these settings is saved"
    )
    args = parser.parse_args(argv)
    args.model = args.model or minilm_path()
    args.seed_list = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [args.seed]
    try:
        args.shots_list = parse_shots(args.shots_per_class)
    except ValueError as error:
        parser.error(str(error))
    args.shots = None  # the N of the few-shot sample being run (benchmark_dataset sets it)
    args.datasets = [name.strip() for name in args.dataset.split(",") if name.strip()]
    unknown = [name for name in args.datasets if name not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; available: {', '.join(DATASETS)}")
    methods = METHOD_SETS.get(args.methods, args.methods)
    specs = [spec.strip() for spec in methods.split(",") if spec.strip()]
    for spec in specs:
        try:
            parse_method(spec)  # fail before any training on a malformed spec
        except ValueError as error:
            parser.error(f"--methods: {error}")
    args.method_list = specs
    return args


def run_one(spec: str, seed: int, args: argparse.Namespace) -> dict:
    """Runs one (method, seed) in a fresh spawned process; errors are recorded, not raised."""
    try:
        if args.in_process:
            return run_method(spec, seed, args, fresh_process=False)
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(run_method, spec, seed, args).result()
    except Exception as error:  # keep the other methods' results
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}


def matching_peer(spec: str, runs: dict[str, dict[int, dict]]) -> str | None:
    """The peer run a method's times are divided by: the peer spec with the same LoRA targets (they set the speed).

    Among those (else among all peer specs), the plain `peft_lora_seq_cls` first, then the first listed: a peer
    variant with other rates has the plain peer's speed and stands in for it.
    """
    targets = parse_method(spec)[1].get("targets")
    peers = [name for name in runs if parse_method(name)[0] == PEER]
    same_targets = [name for name in peers if parse_method(name)[1].get("targets") == targets]
    for candidates in (same_targets, peers):
        if candidates:
            return PEER if PEER in candidates else candidates[0]
    return None


def add_peer_ratios(runs: dict[str, dict[int, dict]]) -> dict[str, str]:
    """Adds `step_time_ratio`, `train_time_ratio` and `throughput_ratio` against the matching peer of the same seed.

    Returns:
        `{spec: peer spec}` for every spec that has a peer.
    """
    references = {}
    for spec, per_seed in runs.items():
        peer = matching_peer(spec, runs)
        if peer is None:
            continue
        references[spec] = peer
        for seed, row in per_seed.items():
            reference = runs[peer].get(seed)
            if reference is None or "error" in row or "error" in reference:
                continue  # no peer run of this seed to compare with
            if row.get("step_seconds") and reference.get("step_seconds"):
                row["step_time_ratio"] = row["step_seconds"] / reference["step_seconds"]
            row["train_time_ratio"] = row["train_seconds"] / reference["train_seconds"]
            row["throughput_ratio"] = row["eval_rows_per_second"] / reference["eval_rows_per_second"]
    return references


# Settings that change a run's numbers; saved runs are reused and gathered only where all of them match.
RUN_SETTINGS = (
    "model",
    "epochs",
    "max_length",
    "batch_size",
    "learning_rate",
    "label_learning_rate",
    "full_learning_rate",
    "warmup_ratio",
    "lora_r",
    "per_label",
    "data_seed",
    "threads",
)


def run_settings(args: argparse.Namespace) -> dict:
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    if args.shots:  # only few-shot runs carry these, so runs saved before they existed still match
        settings |= {"shots_per_class": args.shots, "sample_seed": args.sample_seed}
    return settings


def run_file(output_dir: Path, spec: str, seed: int) -> Path:
    return output_dir / "runs" / f"{spec.replace(':', '+').replace('/', '_')}@seed{seed}.json"


SAVED_RUN_KEYS = {"spec", "seed", "settings", "command", "row"}


def read_saved_run(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text())
        problem = None if isinstance(saved, dict) and SAVED_RUN_KEYS <= set(saved) else "keys missing"
    except json.JSONDecodeError as error:
        problem = str(error)
    if problem is not None:
        raise ValueError(f"Saved run {path} is unreadable ({problem}); delete it and run again to redo it.")
    return saved


def saved_runs(output_dir: Path, settings: dict) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """Every saved (method, seed) of `output_dir` that ran with `settings`.

    Returns:
        `{spec: {seed: row}}` and the distinct commands that produced them.
    """
    runs: dict[str, dict[int, dict]] = {}
    commands: list[str] = []
    for path in sorted((output_dir / "runs").glob("*.json")):
        saved = read_saved_run(path)
        if saved["settings"] == settings:
            runs.setdefault(saved["spec"], {})[saved["seed"]] = saved["row"]
            if saved["command"] not in commands:
                commands.append(saved["command"])
    return runs, commands


def few_shot_info(splits, labels: list[str], multi_label: bool, args: argparse.Namespace) -> dict:
    """Train rows and rows per label of each seed's few-shot sample (the runs sample the same rows again)."""
    row_labels = list(splits["train"]["label"])
    per_seed = {}
    for seed in args.seed_list:
        sample_seed = seed if args.sample_seed is None else args.sample_seed
        chosen = sample_shots(row_labels, labels, args.shots, sample_seed, multi_label)
        counts = shot_counts(row_labels, len(labels), chosen, multi_label)
        per_seed[str(seed)] = {"train_rows": len(chosen), "min_label_rows": min(counts), "max_label_rows": max(counts)}
    return {
        "shots_per_class": args.shots,
        "sample_seed": args.sample_seed,
        "full_train_rows": len(row_labels),
        "train_rows": max(info["train_rows"] for info in per_seed.values()),
        "samples": per_seed,
    }


def benchmark_dataset(dataset: str, args: argparse.Namespace) -> dict:
    args.dataset = dataset
    output_dir = Path(args.output_dir) / dataset / (f"shots{args.shots}" if args.shots else "")
    output_dir.mkdir(parents=True, exist_ok=True)
    splits, labels, multi_label = load_dataset(dataset, args.per_label, args.data_seed)
    data_info = {
        "train_rows": len(splits["train"]),
        "test_rows": len(splits["test"]),
        "num_labels": len(labels),
        "multi_label": multi_label,
    }
    if args.shots:
        data_info |= few_shot_info(splits, labels, multi_label, args)
    print(f"{dataset}: {data_info}", flush=True)
    settings = run_settings(args)
    for seed in [] if args.collect else args.seed_list:
        for spec in args.method_list:
            path = run_file(output_dir, spec, seed)
            if path.exists() and not args.rerun and read_saved_run(path)["settings"] == settings:
                print(f"--- {dataset} seed={seed} {spec}: saved in {path}, skipped", flush=True)
                continue
            print(f"--- {dataset} seed={seed} {spec}" + (f" shots={args.shots}" if args.shots else ""), flush=True)
            row = run_one(spec, seed, args)
            print(json.dumps(row), flush=True)
            if "error" not in row:
                path.parent.mkdir(exist_ok=True)
                record = {"spec": spec, "seed": seed, "settings": settings, "command": command_line(), "row": row}
                partial = path.with_suffix(".partial")
                partial.write_text(json.dumps(record, indent=1))
                partial.replace(path)  # a killed run leaves no half-written result
    saved, commands = saved_runs(output_dir, settings)
    order = list(args.method_list) + sorted(spec for spec in saved if spec not in args.method_list)
    runs = {spec: dict(sorted(saved[spec].items())) for spec in order if spec in saved}
    peers = add_peer_ratios(runs)  # times are ratios to the peer with the same LoRA targets
    peer = matching_peer(PEER, runs)  # the one for PEFT's default targets
    result = {
        "dataset": dataset,
        "shots_per_class": args.shots,
        "data": data_info,
        "command": " ; ".join(commands) or command_line(),
        "settings": dict(settings, seeds=sorted({seed for per_seed in runs.values() for seed in per_seed})),
        "environment": environment_info(args.threads),
        "peer": peer,
        "peers": peers,
        "runs": {spec: {str(seed): row for seed, row in per_seed.items()} for spec, per_seed in runs.items()},
        "summary": {spec: summarize_runs(list(per_seed.values())) for spec, per_seed in runs.items()},
    }
    (output_dir / "results.json").write_text(json.dumps(result, indent=2))
    table = quality_table(result)
    (output_dir / "results.md").write_text(table + "\n")
    print(table, flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_libraries()
    for dataset in args.datasets:
        for shots in args.shots_list or [None]:
            args.shots = shots
            benchmark_dataset(dataset, args)


if __name__ == "__main__":
    main()
