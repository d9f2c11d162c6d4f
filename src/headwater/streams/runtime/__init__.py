"""The Kafka runtime: workers, the supervisor, checkpoints (see each module's docstring)."""

from headwater.streams.runtime.supervisor import load_topology, supervise
from headwater.streams.runtime.worker import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions", "load_topology", "supervise"]
