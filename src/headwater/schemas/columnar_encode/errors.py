"""The encoder's errors: a schema/column it cannot map, a value it cannot encode."""

from __future__ import annotations

from typing import Any

from headwater.errors import HeadwaterError


class UnsupportedSchema(HeadwaterError):
    """The schema, or the frame's column type for a field, cannot be encoded columnar.

    Raised when the encoder is compiled for a frame layout, before any row is encoded.

    Attributes:
        path: dotted field path (``data.payload.items[].price``; ``{}`` marks map values).
        reason: what is unsupported and why.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot encode field '{path}': {reason}")


class UnencodableValue(HeadwaterError):
    """A value in the frame has no Avro encoding under the schema.

    Attributes:
        path: dotted field path of the value.
        row: index of the frame row holding it (None when not attributable to one row).
        value: the offending value (None for a null in a non-nullable field).
        reason: why it cannot be encoded.
    """

    def __init__(self, path: str, row: int | None, value: Any, reason: str) -> None:
        self.path, self.row, self.value, self.reason = path, row, value, reason
        where = f" at row {row}" if row is not None else ""
        super().__init__(f"cannot encode field '{path}'{where}: {reason} (value: {value!r})")
