"""A client of the arena gateway: `ArenaClient` (the REST API with retries and idempotent submits) and the
`arena remote` command line (`python -m arena_client`). Needs httpx only: no torch, no project code."""

from arena_client.client import ArenaClient, ArenaError, RetryPolicy

__all__ = ["ArenaClient", "ArenaError", "RetryPolicy"]
