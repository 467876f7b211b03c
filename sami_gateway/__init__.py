"""sami-gateway: a SAMI-compatible synchronous invoke gateway."""

__version__ = "0.1.0"
