"""Encoder nodes for Avro's scalar types: each measures its items' encoded sizes, then writes them.

A node's ``measure(arr, active, locate)`` returns ``(sizes, *state)`` (bottom-up, before any byte is
written); ``write(prep, starts, active, out)`` scatters the bytes of each active item at its start
offset into the zero-filled output buffer. ``active`` (None = all) masks items that are not encoded.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.schemas.columnar_encode.errors import UnencodableValue
from headwater.schemas.columnar_encode.kernels import (
    I64,
    U8,
    Locate,
    check_no_nulls,
    copy_segments,
    fixed_view,
    select,
    valid_mask,
    varint_len,
    write_varint,
    zigzag,
)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

Prep = tuple[Any, ...]


class Node:
    path: str

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        raise NotImplementedError

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        raise NotImplementedError


class Const(Node):
    """A fixed byte string per item (the null type, or a missing field's default)."""

    def __init__(self, path: str, payload: bytes) -> None:
        self.path, self.payload = path, np.frombuffer(payload, dtype=U8)

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        return (np.full(len(arr), len(self.payload), dtype=I64),)

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        st = select(starts, active)
        for k, b in enumerate(self.payload):
            if b:
                out[st + k] = b


class Long(Node):
    """int/long (and the logical types stored as them) as zigzag varints."""

    def __init__(self, path: str, convert: Callable[[np.ndarray], np.ndarray], check_int32: bool) -> None:
        self.path, self.convert, self.check_int32 = path, convert, check_int32

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        v = self.convert(arr)
        if self.check_int32 and len(v):
            bad = (v < _INT32_MIN) | (v > _INT32_MAX)
            if active is not None:
                bad &= active
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise UnencodableValue(self.path, int(locate(np.array([i]))[0]), int(v[i]),
                                       "out of range for Avro int (32-bit)")
        z = zigzag(v)
        lens = varint_len(z)
        return lens, z

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        lens, z = prep
        write_varint(out, select(starts, active), select(z, active), select(lens, active))


class Bool(Node):
    def __init__(self, path: str) -> None:
        self.path = path

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        bits = np.frombuffer(arr.buffers()[1], dtype=U8) if len(arr) else np.zeros(0, U8)
        v = np.unpackbits(bits, bitorder="little")[arr.offset : arr.offset + len(arr)]
        return np.ones(len(arr), dtype=I64), v

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        v = prep[1]
        on = v.astype(bool) if active is None else (v.astype(bool) & active)
        out[starts[on]] = 1


class Float(Node):
    """float (4 bytes) / double (8 bytes), little-endian IEEE 754, NaN payloads preserved."""

    def __init__(self, path: str, dtype: Any) -> None:
        self.path, self.dtype = path, np.dtype(dtype)

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        if pa.types.is_floating(arr.type) and np.dtype(arr.type.to_pandas_dtype()) == self.dtype:
            v = fixed_view(arr, self.dtype)
        else:
            v = arr.fill_null(0).to_numpy(zero_copy_only=False).astype(self.dtype)
        return np.full(len(arr), self.dtype.itemsize, dtype=I64), v

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        v = select(prep[1], active).astype(self.dtype.newbyteorder("<"), copy=False)
        w = self.dtype.itemsize
        copy_segments(out, select(starts, active), v.view(U8), np.arange(0, w * len(v), w, dtype=I64),
                       np.full(len(v), w, dtype=I64))


class Bytes(Node):
    """string / bytes (varint length + raw bytes) or fixed (raw bytes of the declared size)."""

    def __init__(self, path: str, fixed_size: int | None = None) -> None:
        self.path, self.fixed_size = path, fixed_size

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        t = arr.type
        if pa.types.is_fixed_size_binary(t):
            w = t.byte_width
            data = np.frombuffer(arr.buffers()[1], dtype=U8) if len(arr) else np.zeros(0, U8)
            src = (np.arange(len(arr), dtype=I64) + arr.offset) * w
            lens = np.full(len(arr), w, dtype=I64)
        else:
            if not (pa.types.is_large_string(t) or pa.types.is_large_binary(t)):
                arr = arr.cast(pa.large_binary() if pa.types.is_binary(t) or pa.types.is_binary_view(t)
                               else pa.large_string())
            bufs = arr.buffers()
            offs = np.frombuffer(bufs[1], dtype=I64, count=len(arr) + 1 + arr.offset)[arr.offset :]
            data = np.frombuffer(bufs[2], dtype=U8) if bufs[2] is not None else np.zeros(0, U8)
            src = offs[:-1]
            lens = np.diff(offs)
        if self.fixed_size is not None:
            bad = lens != self.fixed_size
            if active is not None:
                bad &= active
            valid = valid_mask(arr)
            if valid is not None:
                bad &= valid
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise UnencodableValue(self.path, int(locate(np.array([i]))[0]), int(lens[i]),
                                       f"fixed field needs exactly {self.fixed_size} bytes")
            return lens, None, None, data, src, lens
        vz = (lens << 1).view(np.uint64)
        vl = varint_len(vz)
        return vl + lens, vz, vl, data, src, lens

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        _, vz, vl, data, src, lens = prep
        st = select(starts, active)
        if vz is not None:
            vl = select(vl, active)
            write_varint(out, st, select(vz, active), vl)
            st = st + vl
        copy_segments(out, st, data, select(src, active), select(lens, active))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=U8)
_UUID_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)], dtype=I64)


class UuidFromBinary(Node):
    """uuid given as 16 raw bytes: written as its canonical 36-char lowercase string."""

    def __init__(self, path: str) -> None:
        self.path = path

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        raw = Bytes(self.path, 16).measure(arr, active, locate)
        n = len(arr)
        data, src = np.concatenate([raw[3], np.zeros(16, U8)]), raw[4]
        b = data[src[:, None] + np.arange(16)] if n else np.zeros((0, 16), U8)
        txt = np.full((n, 36), ord("-"), dtype=U8)
        hexed = np.empty((n, 32), dtype=U8)
        hexed[:, 0::2] = _HEX[b >> 4]
        hexed[:, 1::2] = _HEX[b & 15]
        txt[:, _UUID_POS] = hexed
        return np.full(n, 37, dtype=I64), txt

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        st, txt = select(starts, active), select(prep[1], active)
        out[st] = 72  # zigzag varint of the length 36
        for k in range(36):
            out[st + 1 + k] = txt[:, k]


class Enum(Node):
    def __init__(self, path: str, symbols: list[str]) -> None:
        self.path, self.symbols = path, symbols
        self._set = pa.array(symbols, type=pa.large_string())

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        if pa.types.is_dictionary(arr.type):
            lut = pc.index_in(arr.dictionary.cast(pa.large_string()), value_set=self._set)
            lut_np = lut.fill_null(-1).to_numpy(zero_copy_only=False).astype(I64)
            keys = arr.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(I64)
            idx = lut_np[keys] if len(lut_np) else np.full(len(arr), -1, dtype=I64)
        else:
            idx = pc.index_in(arr.cast(pa.large_string()), value_set=self._set)
            idx = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(I64)
        bad = idx < 0
        valid = valid_mask(arr)
        if valid is not None:
            bad &= valid
        if active is not None:
            bad &= active
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UnencodableValue(self.path, int(locate(np.array([i]))[0]), arr[i].as_py(),
                                   f"not a symbol of the enum {self.symbols}")
        z = zigzag(np.maximum(idx, 0))
        return varint_len(z), z

    write = Long.write


class Decimal(Node):
    """decimal on bytes (fastavro's length: magnitude bit length // 8 + 1) or fixed (sign-extended)."""

    def __init__(self, path: str, mul: int, precision: int, size: int | None) -> None:
        self.path, self.mul, self.limit, self.size = path, mul, 10**precision, size

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        n = len(arr)
        words = np.frombuffer(arr.buffers()[1], dtype=I64, count=2 * (n + arr.offset))[2 * arr.offset:] \
            if n else np.zeros(0, I64)
        lo, hi = words[0::2], words[1::2]
        live = np.ones(n, bool) if active is None else active.copy()
        valid = valid_mask(arr)
        if valid is not None:
            live &= valid
        overflow = (hi != (lo >> 63)) & live
        v = lo * self.mul
        overflow |= (np.abs(lo) >= self.limit // self.mul) & live
        if overflow.any():
            i = int(np.flatnonzero(overflow)[0])
            raise UnencodableValue(self.path, int(locate(np.array([i]))[0]), str(arr[i].as_py()),
                                   "exceeds the decimal's precision")
        if self.size is not None:
            return np.full(n, self.size, dtype=I64), v, None
        mag = np.abs(v).view(np.uint64)
        nbytes = np.ones(n, dtype=I64)
        for k in range(1, 9):
            nbytes += mag >= np.uint64(1 << (8 * k - 1))
        return nbytes + 1, v, nbytes

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        _, v, nbytes = prep
        st, v = select(starts, active), select(v, active)
        if nbytes is None:
            width = np.full(len(v), self.size, dtype=I64)
            at = st
        else:
            width = select(nbytes, active)
            out[st] = (2 * width).astype(U8)  # length varint, 1 byte for <= 63
            at = st + 1
        for j in range(int(width.max()) if len(width) else 0):
            sel = width > j
            shift = np.minimum(8 * (width[sel] - 1 - j), 63)
            out[at[sel] + j] = ((v[sel] >> shift) & 0xFF).astype(U8)
