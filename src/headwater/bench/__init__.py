"""The benchmark harness behind ``headwater bench SUITE``.

Suites (see docs/benchmarks.md):

- ``serde`` (:mod:`.serde_suite`): in-process decode/encode rates of headwater's per-record and
  columnar Avro paths vs confluent-kafka's serializers, plus the generator's produce rate;
- ``engine`` (:mod:`.engine_suite`): workloads W0 (consume + decode ceiling), W1 (stateless
  Avro -> validate -> map -> Avro) and W2 (count per key) run by headwater and peer engines, each
  run a subprocess measured from outside (throughput, latency, CPU, peak RSS, agreement).

Every run writes ``benchmarks/results/<suite>-<UTC stamp>.json`` plus a Markdown table and PNG
charts next to it (:mod:`.report`, :mod:`.charts`).
"""

from headwater.bench.report import BenchReport, ResultRow

__all__ = ["BenchReport", "ResultRow"]
