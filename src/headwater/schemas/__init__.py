"""Avro schemas of the domain, the registry cache and the serde (see docs/serde.md, docs/catalog.md)."""
