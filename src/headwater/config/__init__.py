"""Configuration: one frozen settings model and its loader (see :mod:`.settings`)."""

from headwater.config.settings import Settings, load_settings, read_profile

__all__ = ["Settings", "load_settings", "read_profile"]
