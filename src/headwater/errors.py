"""Typed errors shared by every headwater package.

Every error carries the context an operator needs to act on it (the setting, topic, partition,
offset, log file...). ``HeadwaterError.one_line()`` is what the CLI prints before exiting non-zero.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Base class of all errors raised by headwater itself."""

    def one_line(self) -> str:
        """A single-line, human-readable description for CLI output."""
        return " ".join(str(self).split())


class ConfigError(HeadwaterError):
    """A setting has an invalid value, or a config file cannot be read.

    Attributes:
        setting: the setting's name (e.g. ``workers``), or the file for unreadable profiles.
        source: where the bad value came from (``env HEADWATER_WORKERS``, ``--workers``, a file).
        reason: why it was rejected.
    """

    def __init__(self, setting: str, reason: str, source: str | None = None) -> None:
        self.setting = setting
        self.reason = reason
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"invalid setting '{setting}'{where}: {reason}")


class StackError(HeadwaterError):
    """The local Kafka / Schema Registry stack could not be fetched, started or stopped.

    Attributes:
        cause: short machine-friendly cause (``no-java``, ``no-maven``, ``port-taken``, ``timeout``,
            ``fetch-failed``, ``exited``).
        log_path: the log file to read for details, when there is one.
    """

    def __init__(self, cause: str, message: str, log_path: str | None = None) -> None:
        self.cause = cause
        self.log_path = log_path
        tail = f" (see {log_path})" if log_path else ""
        super().__init__(f"{cause}: {message}{tail}")


class StartupError(HeadwaterError):
    """A run cannot start as configured (a missing topic, a bad topology reference...).

    Restarting will not help: the supervisor stops at once and ``headwater run`` exits 2.
    """
