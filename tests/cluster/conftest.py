"""Cluster tests run against the real Redis (tests/redis_support.py: fail in CI, else skip)."""

from tests.redis_support import private_redis, redis_prefix, redis_url

__all__ = ["private_redis", "redis_prefix", "redis_url"]
