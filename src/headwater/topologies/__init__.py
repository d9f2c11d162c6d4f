"""Domain pipelines built with the DSL (ingestion, correlation, analytics, anomaly: growing)."""
