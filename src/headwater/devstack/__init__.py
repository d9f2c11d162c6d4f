"""The local development/test stack: Apache Kafka (KRaft) + a Confluent-compatible registry.

Assembled from Maven Central and run as plain JVM processes (no Docker needed); see
``infra/README.md`` and ``docs/operations.md``.
"""

from headwater.devstack.assets import default_home
from headwater.devstack.stack import LocalStack, StackState

__all__ = ["LocalStack", "StackState", "default_home"]
