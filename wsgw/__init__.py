"""wsgw: a high-throughput WebSocket API gateway."""

__version__ = "0.1.0"
