"""Stacking variable-length feature sequences into one zero-padded array (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stack_padded(
    arrays: Sequence[np.ndarray],
    steps: int | None = None,
    dim: int | None = None,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Stacks B arrays `(T_b, D)` into `(B, steps, D)`, zeros after each valid length.

    Args:
        arrays: B arrays of shape `(T_b, D)`.
        steps: The padded length; rows past it are cut. `None`: the longest `T_b` (at least 1).
        dim: D; `None` reads it from the first array.
        dtype: The dtype of the stack.

    Returns:
        `(stack, lengths)`: `(B, steps, D)` of `dtype` and `(B,)` int32 valid lengths.
    """
    lengths = np.array([len(a) for a in arrays], np.int32)
    if steps is None:
        steps = max(int(lengths.max(initial=0)), 1)
    lengths = np.minimum(lengths, steps)
    dim = arrays[0].shape[-1] if dim is None else dim
    out = np.zeros((len(arrays), steps, dim), dtype)
    for b, (a, n) in enumerate(zip(arrays, lengths)):
        out[b, :n] = a[:n]
    return out, lengths
