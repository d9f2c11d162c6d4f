"""Dead-letter queue: where records that cannot be processed go, and how they come back.

The engine never stops on bad input: a record that fails to decode, or whose user function
raises (policy ``dlq``), becomes a :class:`DeadLetter` and is sent by a :class:`DeadLetterWriter`
to the application's dead-letter topic (:func:`dlq_topic`) with its ORIGINAL key, value and
headers plus ``hw.dlq.*`` headers describing the failure (:func:`dlq_headers`).
:func:`read_dead_letters` parses them back; :func:`replay_dead_letters` re-publishes the originals.
A dead letter too large for the DLQ topic is written without its value (:func:`dlq_size_limit`);
replay then re-reads the original from its source coordinates (:class:`SourceReader`).
``headwater dlq inspect|replay`` are the command-line front ends. Details: docs/dlq.md.
"""

from headwater.connectors.dlq.errors import (
    DeadLetterDeliveryError,
    DeadLetterError,
    DeadLetterReadError,
    DeadLetterTopicError,
)
from headwater.connectors.dlq.reader import DEFAULT_READ_TIMEOUT_S, read_dead_letters
from headwater.connectors.dlq.records import (
    DROPPED_HEADERS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    HEADER_PREFIX,
    HEADERS_DROPPED,
    HEADERS_SIZE,
    KEY_DROPPED,
    KEY_SIZE,
    MAX_ERROR_MESSAGE_BYTES,
    METADATA_HEADERS,
    OPERATOR,
    REPLAYED_FROM,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TIMESTAMP,
    SOURCE_TOPIC,
    TIME,
    VALUE_DROPPED,
    VALUE_SIZE,
    DeadLetter,
    DeadLetterRecord,
    Header,
    confluent_schema_id,
    dlq_headers,
    parse_dead_letter,
    record_from_message,
    split_headers,
)
from headwater.connectors.dlq.replay import (
    REPLAY_MESSAGE_MAX_BYTES,
    DeadLetterFilter,
    ReplayResult,
    replay_dead_letters,
    replay_headers,
)
from headwater.connectors.dlq.source import SourceReader, SourceRecord, SourceRecordGone
from headwater.connectors.dlq.writer import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RETENTION_MS,
    DeadLetterWriter,
    dlq_size_limit,
    dlq_topic,
    ensure_dlq_topic,
    estimated_message_size,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_READ_TIMEOUT_S",
    "DEFAULT_RETENTION_MS",
    "DROPPED_HEADERS",
    "ERROR_CLASS",
    "ERROR_MESSAGE",
    "HEADERS_DROPPED",
    "HEADERS_SIZE",
    "HEADER_PREFIX",
    "KEY_DROPPED",
    "KEY_SIZE",
    "MAX_ERROR_MESSAGE_BYTES",
    "METADATA_HEADERS",
    "OPERATOR",
    "REPLAYED_FROM",
    "REPLAY_MESSAGE_MAX_BYTES",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TIMESTAMP",
    "SOURCE_TOPIC",
    "TIME",
    "VALUE_DROPPED",
    "VALUE_SIZE",
    "DeadLetter",
    "DeadLetterDeliveryError",
    "DeadLetterError",
    "DeadLetterFilter",
    "DeadLetterReadError",
    "DeadLetterRecord",
    "DeadLetterTopicError",
    "DeadLetterWriter",
    "Header",
    "ReplayResult",
    "SourceReader",
    "SourceRecord",
    "SourceRecordGone",
    "confluent_schema_id",
    "dlq_headers",
    "dlq_size_limit",
    "dlq_topic",
    "ensure_dlq_topic",
    "estimated_message_size",
    "parse_dead_letter",
    "read_dead_letters",
    "record_from_message",
    "replay_dead_letters",
    "replay_headers",
    "split_headers",
]
