"""Masks of valid steps and masked reductions, shared by the parallel model's layers."""

from __future__ import annotations

from keras import ops

from video_reloc.layers.sequence_ops import sequence_mask

_NEG = -1e9


def step_mask(inputs, lengths):
    """`(B, T, 1)` float mask of the valid steps of `inputs` `(B, T, ...)`; ones without lengths."""
    if lengths is None:
        return ops.ones_like(inputs[:, :, :1])
    mask = sequence_mask(lengths, ops.shape(inputs)[1])
    return ops.cast(mask, inputs.dtype)[:, :, None]


def pair_mask(query_length, reference_length, query_steps, reference_steps, dtype="float32"):
    """`(B, Tr, Tq)` mask: 1 where the reference step i and the query step j are both valid.

    `reference_length` may be `None` (every reference step valid).
    """
    query_valid = ops.cast(sequence_mask(query_length, query_steps), dtype)
    if reference_length is None:
        return ops.broadcast_to(query_valid[:, None, :], (-1, reference_steps, query_steps))
    reference_valid = ops.cast(sequence_mask(reference_length, reference_steps), dtype)
    return reference_valid[:, :, None] * query_valid[:, None, :]


def masked_max(values, mask, axis):
    """The max of `values` over `axis` where `mask` is 1; 0 where no entry is valid."""
    any_valid = ops.max(mask, axis=axis)
    return ops.max(ops.where(mask > 0, values, _NEG), axis=axis) * any_valid


def masked_mean(values, mask, axis):
    """The mean of `values` over `axis` where `mask` is 1; 0 where no entry is valid."""
    return ops.sum(values * mask, axis=axis) / ops.maximum(ops.sum(mask, axis=axis), 1.0)
