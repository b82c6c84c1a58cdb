"""The train recipe in one process vs two CPU processes (gloo), and two "machines" on loopback; the label pass
(isolated attention, shared positions) in one process vs two.

Same global batch in every run (16 = 1 x 16 = 2 x 8), a dropout-free backbone and one seed, so each run computes the
same training; only the order of floating-point reductions differs. Tolerances: accuracy and F1 within 0.05
(two of the 40 validation rows), losses within 2% (relative). The head trains at the LoRA rate here: at the label
table's rate (the default, 10x larger) the rounding differences grow to 2.5% of the training loss on this tiny
backbone while the evaluation still matches.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_data import make_rows, save_tiny_backbone, write_rows

pytestmark = pytest.mark.multiprocess

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "recipes" / "train.py")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no"]
METRIC_TOLERANCE = 0.05
LOSS_TOLERANCE = 0.02
GLOBAL_BATCH = 16


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    save_tiny_backbone(root / "tiny")
    write_rows(make_rows(40, seed=0), root / "train.csv")
    write_rows(make_rows(10, seed=1), root / "dev.csv")
    return root


def recipe_args(workspace: Path, output_dir: Path, processes: int) -> list[str]:
    return [
        "--model_name_or_path", str(workspace / "tiny"), "--train_file", str(workspace / "train.csv"),
        "--validation_file", str(workspace / "dev.csv"), "--output_dir", str(output_dir),
        "--num_train_epochs", "2", "--per_device_train_batch_size", str(GLOBAL_BATCH // processes),
        "--lora_r", "4", "--learning_rate", "5e-3", "--save_strategy", "no", "--disable_tqdm", "true",
        "--seed", "7", "--head_learning_rate", "5e-3",
    ]  # fmt: skip


def launch_two_processes(workspace: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [*LAUNCH, "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--main_process_port", str(free_port()), TRAIN, *recipe_args(workspace, output_dir, 2), *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def single_process(workspace):
    output_dir = workspace / "one"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, TRAIN, *recipe_args(workspace, output_dir, 1)], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    check(result)
    print(f"1 process: {time.perf_counter() - started:.1f} s")
    return output_dir


def results(output_dir: Path) -> tuple[dict, dict]:
    evaluation = json.loads((output_dir / "eval_results.json").read_text())
    training = json.loads((output_dir / "train_results.json").read_text())
    return evaluation, training


def assert_same_training(reference: Path, other: Path) -> None:
    (eval_one, train_one), (eval_two, train_two) = results(reference), results(other)
    for key in ("eval_accuracy", "eval_macro_f1", "eval_micro_f1"):
        assert abs(eval_one[key] - eval_two[key]) <= METRIC_TOLERANCE, (key, eval_one[key], eval_two[key])
    # eval_loss is a mean over rows: not multiplied by the process count (average_tokens_across_devices=False).
    assert eval_two["eval_loss"] == pytest.approx(eval_one["eval_loss"], rel=LOSS_TOLERANCE)
    assert train_two["train_loss"] == pytest.approx(train_one["train_loss"], rel=LOSS_TOLERANCE)


def test_two_processes_match_one_process(workspace, single_process):
    output_dir = workspace / "two"
    started = time.perf_counter()
    result = launch_two_processes(workspace, output_dir)
    check(result)
    print(f"2 processes: {time.perf_counter() - started:.1f} s")
    assert result.stdout.count("[labeltok] eval:") == 1  # only the main process prints and writes
    assert_same_training(single_process, output_dir)


def test_two_machines_on_loopback_match_one_process(workspace, single_process):
    output_dir = workspace / "two_machines"
    port = str(free_port())
    machines = []
    for rank in (0, 1):
        command = [*LAUNCH, "--multi_gpu", "--num_processes", "2", "--num_machines", "2", "--machine_rank", str(rank),
                   "--main_process_ip", "127.0.0.1", "--main_process_port", port, TRAIN,
                   *recipe_args(workspace, output_dir, 2)]  # fmt: skip
        machines.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for machine in machines:
        stdout, stderr = machine.communicate(timeout=300)
        outputs.append(subprocess.CompletedProcess(machine.args, machine.returncode, stdout, stderr))
    for output in outputs:
        check(output)
    assert_same_training(single_process, output_dir)


# The label pass: the text runs once and the labels attend to its kept keys/values (labeltok_peft/label_pass.py).
# find_unused_parameters=False (stated here, also the recipe's default) makes DDP fail the step after any trainable
# weight got no gradient: the kept keys/values must keep the LoRA weights of the text pass in the graph.
LABEL_PASS = ["--label_attention", "isolated", "--label_positions", "shared", "--ddp_find_unused_parameters", "false"]
DDP_UNUSED_ERRORS = ("Expected to have finished reduction", "did not receive grad", "unused parameters")


def test_label_pass_trains_in_two_processes_like_one_process(workspace):
    from transformers import AutoModel

    from labeltok_peft import LabelTokConfig, get_labeltok_model

    config = LabelTokConfig(
        labels=["a", "b"], label_attention="isolated", label_positions="shared", label_init="random"
    )
    assert get_labeltok_model(AutoModel.from_pretrained(workspace / "tiny"), config)._uses_label_pass(config)

    started = time.perf_counter()
    one = subprocess.run([sys.executable, TRAIN, *recipe_args(workspace, workspace / "pass_one", 1), *LABEL_PASS],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    check(one)
    two = launch_two_processes(workspace, workspace / "pass_two", *LABEL_PASS)
    check(two)
    print(f"label pass, 1 then 2 processes: {time.perf_counter() - started:.1f} s")
    for result in (one, two):
        assert not any(error in result.stderr for error in DDP_UNUSED_ERRORS), result.stderr[-3000:]
    assert two.stdout.count("[labeltok] eval:") == 1
    saved = json.loads((workspace / "pass_two" / "labeltok_config.json").read_text())["labeltok_config"]
    assert (saved["label_attention"], saved["label_positions"]) == ("isolated", "shared")
    for name in ("pass_one", "pass_two"):
        evaluation, training = results(workspace / name)
        print(name, {key: round(value, 5) for key, value in {**evaluation, **training}.items() if "loss" in key or
                     key in ("eval_accuracy", "eval_macro_f1")})  # fmt: skip
    assert_same_training(workspace / "pass_one", workspace / "pass_two")
