"""Tiny real backbones built from configs, a tiny real tokenizer and a few training steps, shared by the unit tests."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    LlamaConfig,
    LlamaModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2Model,
    RobertaConfig,
    RobertaModel,
)

WORDS = (
    "the a match goal team won lost market shares bank profit film actor music award election vote minister party "
    "phone software computer internet game player coach economy growth star show government tax chip network"
).split()
VOCAB_SIZE = 64


def make_tokenizer(encoder: bool) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `WORDS`. The decoder flavour has no pad token, like many real decoders."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if encoder else ["<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[1] if encoder else "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if encoder:
        from tokenizers.processors import TemplateProcessing

        tokenizer.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_backbone(family: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised 2-layer backbone of the given family, in eval mode (no dropout)."""
    torch.manual_seed(seed)
    if family == "bert":
        model = BertModel(
            BertConfig(
                vocab_size=VOCAB_SIZE,
                max_position_embeddings=64,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                **TINY,
            ),
            add_pooling_layer=False,
        )
    elif family == "roberta":
        model = RobertaModel(
            RobertaConfig(
                vocab_size=VOCAB_SIZE,
                max_position_embeddings=66,
                pad_token_id=1,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                **TINY,
            ),
            add_pooling_layer=False,
        )
    elif family == "llama":
        model = LlamaModel(LlamaConfig(vocab_size=VOCAB_SIZE, num_key_value_heads=2, **TINY))
    elif family == "qwen2":
        model = Qwen2Model(Qwen2Config(vocab_size=VOCAB_SIZE, num_key_value_heads=2, **TINY))
    elif family == "gpt2":
        model = GPT2Model(
            GPT2Config(
                vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2
            )
        )
    else:
        raise ValueError(family)
    return model.eval()


ENCODERS = ["bert", "roberta"]
DECODERS = ["llama", "qwen2", "gpt2"]


def tokenizer_for(family: str) -> PreTrainedTokenizerFast:
    return make_tokenizer(encoder=family in ENCODERS)


def optimize_on_batch(model: torch.nn.Module, batch: dict, optimizer: torch.optim.Optimizer, steps: int) -> None:
    """Runs `steps` optimizer steps on one batch in train mode, then leaves the model in eval mode."""
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
