"""The label pass, bf16 and 4-bit training on a CUDA GPU (marker `cuda`; skipped where torch sees no CUDA device).

CI has no GPU, so these run only where one is lent (`pytest -m cuda`). The CPU suite proves the same properties on
CPU kernels; here the GPU kernels (SDPA's CUDA backends, cuBLAS, bitsandbytes' CUDA 4-bit matmuls) are the ones
checked. The reference is the spliced sequence with the isolating 4D mask, as in test_label_pass.py.
"""

from __future__ import annotations

import pytest
import torch
from test_label_pass import BACKBONES, LABELS, assert_same, build, make_batch
from tiny_models import tiny_backbone

from labeltok_peft import LabelTokModel

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run `pytest -m cuda` on one)"),
]
CUDA = torch.device("cuda")


def on_cuda(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.to(CUDA) for name, tensor in batch.items()}


def logits_and_grads(model: LabelTokModel, batch: dict, splice: bool = False) -> tuple[torch.Tensor, dict]:
    """As in test_label_pass.py, on the GPU: logits and the gradients of a fixed random weighting of them."""
    model._splice_isolated_labels = splice
    model.zero_grad()
    logits = model(**batch).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2)).to(logits)
    (logits * weights).sum().backward()
    grads = {name: p.grad.float().cpu() for name, p in model.named_parameters() if p.requires_grad}
    model._splice_isolated_labels = False
    return logits.detach().float().cpu(), grads


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """TF32 would round the two paths' differently shaped fp32 matmuls differently; the test is about the algorithm."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("family", ["bert", "modernbert", "llama", "qwen3", "mistral", "gemma3", "gpt2"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_label_pass_equals_the_spliced_path_on_cuda(family, padding_side):
    model = build(BACKBONES[family]()).to(CUDA)
    batch = on_cuda(make_batch(padding_side))
    assert_same(logits_and_grads(model, batch), logits_and_grads(model, batch, splice=True))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_chunked_label_pass_equals_one_chunk_on_cuda(family):
    model = build(BACKBONES[family]()).to(CUDA)
    batch = on_cuda(make_batch("left"))
    whole = logits_and_grads(model, batch)
    model.labeltok_config.label_chunk_size = 2
    assert_same(logits_and_grads(model, batch), whole)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_bf16_label_pass_is_as_close_to_fp32_as_the_spliced_path(family):
    """In bf16 both paths round; the label pass must not round worse than the spliced sequence does."""
    reference = build(BACKBONES[family]()).to(CUDA)
    batch = on_cuda(make_batch("left"))
    with torch.no_grad():
        exact = reference(**batch).logits
        low = build(BACKBONES[family]()).to(CUDA, torch.bfloat16)
        ours = low(**batch).logits.float()
        low._splice_isolated_labels = True
        spliced = low(**batch).logits.float()
    ours_error, spliced_error = (ours - exact).abs().max().item(), (spliced - exact).abs().max().item()
    spread = (exact.max() - exact.min()).item()
    assert ours_error <= 2 * spliced_error + 0.01 * spread, (ours_error, spliced_error)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    pytest.importorskip("bitsandbytes")
    folders = {}
    for family in ("bert", "llama"):
        folders[family] = tmp_path_factory.mktemp(family)
        tiny_backbone(family).save_pretrained(folders[family])
    return folders


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_label_pass_on_a_4bit_backbone_on_cuda(checkpoints, family):
    from labeltok_peft.quantization import is_quantized, load_backbone

    backbone = load_backbone(checkpoints[family], precision="nf4", compute_dtype=torch.float32)
    assert next(backbone.parameters()).device.type == "cuda", "load_backbone must place a k-bit backbone on the GPU"
    model = build(backbone, lora={"r": 4, "init_lora_weights": False})
    assert is_quantized(model.base_model)
    batch = on_cuda(make_batch("left"))
    assert_same(logits_and_grads(model, batch), logits_and_grads(model, batch, splice=True))


@pytest.mark.parametrize("precision", ["nf4", "int8"])
def test_kbit_training_on_cuda_learns_and_round_trips(checkpoints, tmp_path, precision):
    """A few AdamW steps in the default bf16 compute lower the loss; the saved adapter reloads to the same logits."""
    from labeltok_peft.quantization import load_backbone

    backbone = load_backbone(checkpoints["llama"], precision=precision)
    model = build(backbone, lora={"r": 4})
    model.train()
    batch = on_cuda(make_batch("right"))
    labels = torch.tensor([0, 1, 2], device=CUDA)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**batch, labels=labels).loss
        assert torch.isfinite(loss), loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = LabelTokModel.from_pretrained(load_backbone(checkpoints["llama"], precision), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).logits, expected, atol=0, rtol=0)
    assert loaded.labeltok_config.labels == LABELS
