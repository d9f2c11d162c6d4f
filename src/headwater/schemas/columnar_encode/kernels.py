"""NumPy kernels of the encoder: zigzag varint sizes and bytes, segment scatter, validity masks.

Every function works on whole arrays (one item per row, list item or map entry); none loops per item.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from headwater.schemas.columnar_encode.errors import UnencodableValue

I64 = np.int64
U8 = np.uint8

# (items) -> top-level row index of each item; only called to build an error message.
Locate = Callable[[np.ndarray], np.ndarray]


def identity(idx: np.ndarray) -> np.ndarray:
    return idx


def zigzag(v: np.ndarray) -> np.ndarray:
    v = v.astype(I64, copy=False)
    return ((v << 1) ^ (v >> 63)).view(np.uint64)


def varint_len(z: np.ndarray) -> np.ndarray:
    n = np.ones(len(z), dtype=I64)
    if len(z) == 0:
        return n
    top = int(z.max())
    k = 7
    while k < 64 and top >> k:
        n += z >= np.uint64(1 << k)
        k += 7
    return n


def write_varint(out: np.ndarray, starts: np.ndarray, z: np.ndarray, lens: np.ndarray) -> None:
    """Write varints ``z`` (already zigzagged, uint64) of byte lengths ``lens`` at ``starts``."""
    if len(z) == 0:
        return
    maxlen = int(lens.max())
    if maxlen == 1:
        nz = z != 0
        if nz.all():
            out[starts] = z.astype(U8)
        else:
            out[starts[nz]] = z[nz].astype(U8)
        return
    for k in range(maxlen):
        byte = ((z >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(U8)
        byte |= (lens > k + 1).astype(U8) << 7
        if k == 0:
            out[starts] = byte
        else:
            sel = lens > k
            out[starts[sel] + k] = byte[sel]


_SCRATCH = threading.local()


def _scratch(size: int, slot: int) -> np.ndarray:
    """A reused per-thread int64 work array: fresh multi-MB temporaries cost page faults."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None:
        bufs = _SCRATCH.bufs = [np.empty(0, dtype=I64), np.empty(0, dtype=I64)]
    if len(bufs[slot]) < size:
        bufs[slot] = np.empty(max(size, 2 * len(bufs[slot])), dtype=I64)
    return bufs[slot][:size]


def copy_segments(
    out: np.ndarray, dst: np.ndarray, data: np.ndarray, src: np.ndarray, lens: np.ndarray
) -> None:
    """out[dst[i]:dst[i]+lens[i]] = data[src[i]:src[i]+lens[i]] for all i, vectorized.

    The per-byte destination index is built as a cumulative sum of increments (1 inside a
    segment, the jump to the next segment's start at its first byte): ~1.5 ns/byte, 2-3x faster
    than np.repeat-based index building.
    """
    if len(lens) == 0:
        return
    nz = lens > 0
    if not nz.all():
        dst, src, lens = dst[nz], src[nz], lens[nz]
        if len(lens) == 0:
            return
    total = int(lens.sum())
    first = np.cumsum(lens) - lens
    idx = _scratch(total, 0)
    idx.fill(1)
    idx[0] = dst[0]
    idx[first[1:]] = dst[1:] - (dst[:-1] + lens[:-1]) + 1
    np.cumsum(idx, out=idx)
    s0 = int(src[0])
    if int(src[-1]) + int(lens[-1]) - s0 == total:  # sources contiguous (monotonic offsets)
        out[idx] = data[s0 : s0 + total]
        return
    sidx = _scratch(total, 1)
    sidx.fill(1)
    sidx[0] = s0
    sidx[first[1:]] = src[1:] - (src[:-1] + lens[:-1]) + 1
    np.cumsum(sidx, out=sidx)
    out[idx] = data[sidx]


def valid_mask(arr: pa.Array) -> np.ndarray | None:
    """Boolean validity per item, or None when nothing is null."""
    if arr.null_count == 0:
        return None
    return arr.is_valid().to_numpy(zero_copy_only=False)


def and_masks(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def select(x: np.ndarray, active: np.ndarray | None) -> np.ndarray:
    return x if active is None else x[active]


def fixed_view(arr: pa.Array, dtype: Any) -> np.ndarray:
    buf = arr.buffers()[1]
    if buf is None or len(arr) == 0:
        return np.zeros(len(arr), dtype=dtype)
    return np.frombuffer(buf, dtype=dtype, count=len(arr) + arr.offset)[arr.offset :]


def check_no_nulls(arr: pa.Array, active: np.ndarray | None, path: str, locate: Locate) -> None:
    valid = valid_mask(arr)
    if valid is None:
        return
    bad = ~valid if active is None else (active & ~valid)
    if bad.any():
        item = np.flatnonzero(bad)[:1]
        raise UnencodableValue(path, int(locate(item)[0]), None, "null in a non-nullable field")
