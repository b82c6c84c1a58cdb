"""Splicing label-token embeddings into a batch: layout, position ids and attention masks."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SplicedBatch:
    """A batch with label tokens inserted, ready for the backbone.

    Attributes:
        inputs_embeds: `[batch, seq_len + num_labels, hidden]` text and label embeddings in their final order.
        attention_mask: `[batch, seq_len + num_labels]` padding mask (full attention) or a
            `[batch, 1, seq_len + num_labels, seq_len + num_labels]` additive float mask (isolated attention).
        position_ids: `[batch, seq_len + num_labels]` explicit position ids.
        label_indices: `[batch, num_labels]` where each label token sits in the spliced sequence.
        token_type_ids: `[batch, seq_len + num_labels]` segment ids (labels get 0), or `None`.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    label_indices: torch.Tensor
    token_type_ids: torch.Tensor | None = None


def insertion_indices(attention_mask: torch.Tensor, after_last_token: bool) -> torch.Tensor:
    """Where the first label token goes in each row.

    Args:
        attention_mask: `[batch, seq_len]` with 1 for real tokens and 0 for padding (left or right).
        after_last_token: insert after each row's last real token (causal decoders) instead of after its first
            real token (encoders, after `[CLS]`).

    Returns:
        `[batch]` long tensor of indices into the unspliced row.
    """
    real = attention_mask.bool()
    if not bool(real.any(dim=1).all()):
        empty_rows = (~real.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(
            f"Rows {empty_rows} of the batch have no real tokens (attention_mask is all zeros); every row needs text."
        )
    positions = torch.arange(real.shape[1], device=real.device).expand_as(real)
    if after_last_token:
        return torch.where(real, positions, -1).amax(dim=1) + 1
    return torch.where(real, positions, real.shape[1]).amin(dim=1) + 1


def label_token_positions(
    attention_mask: torch.Tensor,
    insert_at: torch.Tensor,
    num_labels: int,
    *,
    shared_positions: bool,
    first_label_index: int = 0,
    total_labels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids of the text and label tokens, before any `position_offset`.

    Positions count real tokens only (rank among real tokens), so padding never shifts them; padding gets position 0.
    With sequential positions, text after the insertion point moves up by `total_labels` to make room for them.

    Args:
        attention_mask: `[batch, seq_len]` 1 for real tokens, 0 for padding.
        insert_at: `[batch]` where the first label goes in each unspliced row (see `insertion_indices`).
        num_labels: labels in this chunk.
        shared_positions: all labels take the position of the first label.
        first_label_index: index of the chunk's first label among all labels.
        total_labels: labels in all chunks together (defaults to `num_labels`).

    Returns:
        `[batch, seq_len]` text positions and `[batch, num_labels]` label positions (long).
    """
    mask = attention_mask.long()
    total_labels = num_labels if total_labels is None else total_labels
    text_index = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    after_insert = text_index >= insert_at[:, None]
    text_rank = (mask.cumsum(dim=1) - 1).clamp(min=0)
    first_label_rank = text_rank.gather(1, (insert_at - 1)[:, None]).squeeze(1) + 1  # [batch]
    label_offsets = torch.arange(num_labels, device=mask.device)
    if shared_positions:
        text_positions = text_rank
        label_positions = first_label_rank[:, None].expand(-1, num_labels)
    else:
        text_positions = text_rank + total_labels * after_insert
        label_positions = first_label_rank[:, None] + first_label_index + label_offsets[None, :]
    return text_positions * mask, label_positions  # padding gets position 0, never past the limit


def splice_labels(
    text_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    label_embeds: torch.Tensor,
    *,
    after_last_token: bool,
    isolated: bool,
    causal: bool,
    shared_positions: bool,
    first_label_index: int = 0,
    total_labels: int | None = None,
    position_offset: int = 0,
    token_type_ids: torch.Tensor | None = None,
) -> SplicedBatch:
    """Inserts label tokens into every row of a batch.

    Label tokens go in one block right after each row's first real token or right after its last real token, so
    left- and right-padded batches give the same layout relative to the text. Position ids count real tokens only,
    so padding never shifts them.

    Args:
        text_embeds: `[batch, seq_len, hidden]` input embeddings of the text tokens.
        attention_mask: `[batch, seq_len]` 1 for real tokens, 0 for padding.
        label_embeds: `[num_labels, hidden]` rows of the labels to insert (maybe one chunk of all labels).
        after_last_token: put labels after the last real token instead of after the first one.
        isolated: build a 4D mask where each label sees the real text and itself only, and text does not see labels.
        causal: text tokens see only earlier text tokens (decoders). Used by the isolated mask only; with full
            attention the backbone applies its own causal mask.
        shared_positions: all labels take the position of the first label and the text keeps its own positions.
        first_label_index: index of `label_embeds[0]` among all labels (for chunked scoring).
        total_labels: number of labels in all chunks together (defaults to `num_labels`); sequential positions
            reserve room for all of them so every chunk sees the same positions.
        position_offset: position id of the first token (RoBERTa-style models start after the padding index).
        token_type_ids: `[batch, seq_len]` optional segment ids to splice alongside.

    Returns:
        A `SplicedBatch`.
    """
    batch_size, seq_len, hidden = text_embeds.shape
    num_labels = label_embeds.shape[0]
    total_labels = num_labels if total_labels is None else total_labels
    device = text_embeds.device
    mask = attention_mask.to(device=device, dtype=torch.long)

    insert_at = insertion_indices(mask, after_last_token)  # [batch]
    text_index = torch.arange(seq_len, device=device).expand(batch_size, seq_len)
    after_insert = text_index >= insert_at[:, None]
    label_offsets = torch.arange(num_labels, device=device)
    # Destination of every text and label token in the spliced row; its inverse is a gather index.
    destination = torch.cat(
        [text_index + num_labels * after_insert, insert_at[:, None] + label_offsets[None, :]], dim=1
    )  # [batch, seq_len + num_labels]
    source = torch.empty_like(destination).scatter_(
        1, destination, torch.arange(seq_len + num_labels, device=device).expand(batch_size, -1)
    )
    combined = torch.cat([text_embeds, label_embeds.to(text_embeds.dtype)[None].expand(batch_size, -1, -1)], dim=1)
    inputs_embeds = torch.gather(combined, 1, source[:, :, None].expand(-1, -1, hidden))

    text_positions, label_positions = label_token_positions(
        mask,
        insert_at,
        num_labels,
        shared_positions=shared_positions,
        first_label_index=first_label_index,
        total_labels=total_labels,
    )
    positions = torch.cat([text_positions, label_positions], dim=1).gather(1, source) + position_offset

    is_label = torch.cat(
        [torch.zeros_like(mask, dtype=torch.bool), torch.ones(batch_size, num_labels, dtype=torch.bool, device=device)],
        dim=1,
    ).gather(1, source)
    is_real = torch.cat([mask.bool(), torch.ones(batch_size, num_labels, dtype=torch.bool, device=device)], dim=1)
    is_real = is_real.gather(1, source)
    if isolated:
        spliced_mask = isolated_attention_mask(is_label, is_real, causal=causal, dtype=text_embeds.dtype)
    else:
        spliced_mask = is_real.to(attention_mask.dtype)

    spliced_token_types = None
    if token_type_ids is not None:
        spliced_token_types = torch.cat(
            [token_type_ids.to(device), torch.zeros(batch_size, num_labels, dtype=token_type_ids.dtype, device=device)],
            dim=1,
        ).gather(1, source)

    return SplicedBatch(
        inputs_embeds=inputs_embeds,
        attention_mask=spliced_mask,
        position_ids=positions,
        label_indices=destination[:, seq_len:],
        token_type_ids=spliced_token_types,
    )


def isolated_attention_mask(
    is_label: torch.Tensor, is_real: torch.Tensor, *, causal: bool, dtype: torch.dtype
) -> torch.Tensor:
    """Builds the additive mask in which labels are independent of each other.

    Args:
        is_label: `[batch, length]` True at label tokens.
        is_real: `[batch, length]` True at real text and label tokens, False at padding.
        causal: text tokens see only earlier text tokens.
        dtype: dtype of the returned mask (the backbone's compute dtype).

    Returns:
        `[batch, 1, length, length]` float mask: 0 where a query may attend to a key, the dtype's minimum elsewhere.
    """
    length = is_label.shape[1]
    is_text_key = (is_real & ~is_label)[:, None, :]  # [batch, 1, key]
    label_query = is_label[:, :, None]  # [batch, query, 1]
    text_sees = is_text_key & ~label_query
    if causal:
        order = torch.arange(length, device=is_label.device)
        text_sees = text_sees & (order[None, None, :] <= order[None, :, None])
    label_sees = label_query & is_text_key
    self_only = torch.eye(length, dtype=torch.bool, device=is_label.device)[None]
    # Labels see themselves; padding queries see themselves too so that no row of the softmax is empty.
    allowed = text_sees | label_sees | (self_only & (label_query | ~is_real[:, :, None]))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=is_label.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
