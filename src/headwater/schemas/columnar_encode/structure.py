"""Encoder nodes for Avro's composite types: unions, records, arrays and maps (arrays of entries).

They recurse into their children's nodes and carry the ``active`` mask down: children of a null
union branch and items of null lists are neither checked nor written.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headwater.schemas.columnar_encode.kernels import (
    I64,
    Locate,
    and_masks,
    check_no_nulls,
    select,
    valid_mask,
    varint_len,
    write_varint,
)
from headwater.schemas.columnar_encode.nodes import Node, Prep


class Union(Node):
    """A union whose branch is known per item: ``null_index`` for nulls, ``index`` otherwise."""

    def __init__(self, path: str, index: int, null_index: int | None, child: Node) -> None:
        self.path, self.index, self.null_index, self.child = path, index, null_index, child
        self._zi, self._zn = 2 * index, 2 * (null_index or 0)

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        valid = valid_mask(arr)
        if self.null_index is None:
            check_no_nulls(arr, active, self.path, locate)
            valid = None
        child_active = and_masks(active, valid)
        cprep = self.child.measure(arr, child_active, locate)
        sizes = cprep[0] + 1 if valid is None else np.where(valid, cprep[0] + 1, 1)
        return sizes, valid, child_active, cprep

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        _, valid, child_active, cprep = prep
        if valid is None:
            if self._zi:
                out[select(starts, active)] = self._zi
        else:
            if self._zi:
                out[starts[child_active]] = self._zi
            if self._zn:
                out[starts[and_masks(active, ~valid)]] = self._zn
        self.child.write(cprep, starts + 1, child_active, out)


class Record(Node):
    """Fields in schema order; ``None`` arrays are missing columns (a default is encoded)."""

    def __init__(self, path: str, fields: list[tuple[int | None, Node]]) -> None:
        self.path, self.fields = path, fields

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path or "<row>", locate)
        n = len(arr)
        sizes = np.zeros(n, dtype=I64)
        preps = []
        for col, node in self.fields:
            child = arr.field(col) if col is not None else pa.nulls(n)
            p = node.measure(child, active, locate)
            sizes += p[0]
            preps.append(p)
        return sizes, preps

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        at = starts
        last = len(self.fields) - 1
        for i, ((_, node), p) in enumerate(zip(self.fields, prep[1])):
            node.write(p, at, active, out)
            if i != last:
                at = at + p[0]


class Array(Node):
    """array / map: one block (positive count varint, items, 0), or a single 0 when empty."""

    def __init__(self, path: str, item: Node) -> None:
        self.path, self.item = path, item

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        check_no_nulls(arr, active, self.path, locate)
        if pa.types.is_fixed_size_list(arr.type):
            n, w = len(arr), arr.type.list_size
            offs = (np.arange(n + 1, dtype=I64) + arr.offset) * w
        else:
            offs = arr.offsets.to_numpy(zero_copy_only=False).astype(I64, copy=False)
        values = arr.values
        lens = np.diff(offs)
        m = len(values)
        lo, hi = int(offs[0]), int(offs[-1])
        if active is None and lo == 0 and hi == m:
            item_active = None
        else:
            live = lens > 0 if active is None else (lens > 0) & active
            mark = np.bincount(offs[:-1][live], minlength=m + 1) - np.bincount(offs[1:][live], minlength=m + 1)
            item_active = np.cumsum(mark[:-1]) > 0

        def item_locate(idx: np.ndarray) -> np.ndarray:
            return locate(np.searchsorted(offs, idx, side="right") - 1)

        iprep = self.item.measure(values, item_active, item_locate)
        cs = np.zeros(m + 1, dtype=I64)
        np.cumsum(iprep[0], out=cs[1:])
        z = (lens << 1).view(np.uint64)
        vl = varint_len(z)
        sizes = np.where(lens > 0, vl + (cs[offs[1:]] - cs[offs[:-1]]) + 1, 1)
        return sizes, offs, lens, z, vl, cs, item_active, iprep

    def write(self, prep: Prep, starts: np.ndarray, active: np.ndarray | None, out: np.ndarray) -> None:
        _, offs, lens, z, vl, cs, item_active, iprep = prep
        nonempty = lens > 0 if active is None else (lens > 0) & active
        write_varint(out, starts[nonempty], z[nonempty], vl[nonempty])
        m = len(cs) - 1
        lo, hi = int(offs[0]), int(offs[-1])
        item_starts = np.zeros(m, dtype=I64)
        base = starts + vl - cs[offs[:-1]]
        item_starts[lo:hi] = np.repeat(base, lens) + cs[lo:hi]
        self.item.write(iprep, item_starts, item_active, out)


class MapEntry(Record):
    """A map entry: key then value, from a struct whose fields are named key/value (or 0/1)."""

    def __init__(self, path: str, key: Node, value: Node) -> None:
        super().__init__(path, [(0, key), (1, value)])

    def measure(self, arr: pa.Array, active: np.ndarray | None, locate: Locate) -> Prep:
        if arr.type.num_fields != 2 or arr.type.field(0).name != "key":
            arr = pa.StructArray.from_arrays([arr.field("key"), arr.field("value")], names=["key", "value"])
        return super().measure(arr, active, locate)
