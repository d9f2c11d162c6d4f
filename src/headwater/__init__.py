"""headwater: columnar micro-batch stream processing for Apache Kafka.

Subpackages, in dependency order (a package imports only those to its right):
``topologies`` -> ``streams`` -> ``state``, ``schemas``, ``connectors``, ``metrics`` -> ``config``.
``devstack`` runs the local Kafka + Schema Registry used by tests, the demo and benchmarks.
"""

__version__ = "0.1.0"
