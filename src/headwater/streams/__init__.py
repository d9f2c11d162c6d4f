"""The engine core: the topology DSL, operators, batch execution and the runtime.

Public API::

    from headwater.streams import Topology, agg, InProcessTestDriver
"""

from headwater.streams import aggregate as agg
from headwater.streams.sink import Sink
from headwater.streams.testing import InProcessTestDriver
from headwater.streams.topology import Stream, Topology, TopologyError

__all__ = ["InProcessTestDriver", "Sink", "Stream", "Topology", "TopologyError", "agg"]
