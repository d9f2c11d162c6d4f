"""headwater: columnar micro-batch stream processing for Apache Kafka.

Subpackages, in dependency order (a package imports only those to its right):
``topologies`` -> ``streams`` -> ``state``, ``schemas``, ``connectors``, ``metrics`` -> ``config``.
``devstack`` runs the local Kafka + Schema Registry used by tests, the demo and benchmarks.
"""

import warnings as _warnings

__version__ = "0.1.0"

# authlib (under confluent-kafka's registry client) warns about its own httpx shim at import and
# installs an "always" filter for it; install ours after it so the noise stays out of every log.
try:
    import authlib.deprecate as _authlib_deprecate  # noqa: F401
except ImportError:  # pragma: no cover - authlib comes with confluent-kafka[schemaregistry]
    pass
_warnings.filterwarnings("ignore", message="The httpx module is deprecated")
