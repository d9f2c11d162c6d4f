"""Typed errors of the dead-letter queue connector."""

from __future__ import annotations

from headwater.errors import HeadwaterError


class DeadLetterError(HeadwaterError):
    """Base class of dead-letter queue errors.

    Attributes:
        topic: the dead-letter (or replay target) topic concerned.
        role: what the topic is to the operation: ``"dead-letter topic"`` or ``"replay target"``.
    """

    def __init__(self, topic: str, message: str, role: str = "dead-letter topic") -> None:
        self.topic = topic
        self.role = role
        super().__init__(f"{role} '{topic}': {message}")


class DeadLetterTopicError(DeadLetterError):
    """The topic does not exist, cannot be described, or cannot be created."""


class DeadLetterReadError(DeadLetterError):
    """Reading the dead-letter topic failed or did not reach its end in time.

    Attributes:
        pending: ``{partition: (position, end offset)}`` of partitions not read to their end.
    """

    def __init__(
        self, topic: str, message: str, pending: dict[int, tuple[int, int]] | None = None
    ) -> None:
        self.pending = dict(pending or {})
        if pending:
            at = ", ".join(f"p{p} at {pos} of {end}" for p, (pos, end) in sorted(pending.items()))
            message = f"{message} ({at})"
        super().__init__(topic, message)


class DeadLetterDeliveryError(DeadLetterError):
    """Records (dead letters, or replayed originals) were not delivered to ``topic``.

    Attributes:
        failed: how many records failed or were still undelivered.
        first_error: the broker/client error of the first failure, as text.
    """

    def __init__(
        self, topic: str, failed: int, first_error: str, role: str = "dead-letter topic"
    ) -> None:
        self.failed = failed
        self.first_error = first_error
        super().__init__(
            topic, f"{failed} record(s) not delivered (first error: {first_error})", role
        )
