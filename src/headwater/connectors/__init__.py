"""Connectors: the edges of the engine (dead-letter queue today; lake and read models next)."""
