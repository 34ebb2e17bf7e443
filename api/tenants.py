"""Who a request's key belongs to: the admin (API_KEY) or a tenant of API_KEYS_FILE.

The file holds one key per line, `<tenant> <key>` or `<tenant> sha256:<64 hex digits>`, with blank lines and `#`
comments. It is re-read when its modification time (or size) changes, so keys are added and revoked without a
restart. Keys are looked up by their SHA-256: the file's plain keys are hashed once when it is read, and the
lookup compares digests, never the key text itself. A tenant's name, never its key, goes into records and logs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ADMIN_TENANT = "admin"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Tenant:
    """The caller of a request. `admin` (API_KEY) sees every tenant's work; a tenant only its own."""

    name: str
    admin: bool = False

    def owns(self, owner: str | None) -> bool:
        """Whether this caller may see a thing recorded with `owner` (None: made before tenants, admin's)."""
        return self.admin or (owner is not None and owner == self.name)


ADMIN = Tenant(ADMIN_TENANT, admin=True)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys_file(text: str) -> dict[str, str]:
    """Key digest → tenant name; a malformed line is logged (by line number, never its content) and skipped."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not TENANT_PATTERN.match(parts[0]) or parts[0] == ADMIN_TENANT:
            log.warning(
                "API_KEYS_FILE line %d skipped: write `<tenant> <key>` or `<tenant> sha256:<hex>`, the tenant being"
                " letters, digits, '.', '_' or '-' (not %r, which is API_KEY's)",
                number,
                ADMIN_TENANT,
            )
            continue
        tenant, secret = parts
        if secret.startswith("sha256:"):
            digest = secret.removeprefix("sha256:").lower()
            if not _HEX_DIGEST.match(digest):
                log.warning("API_KEYS_FILE line %d skipped: sha256: must be followed by 64 hex digits", number)
                continue
        else:
            digest = key_digest(secret)
        if digest in keys and keys[digest] != tenant:
            log.warning("API_KEYS_FILE line %d skipped: its key is already tenant %s's", number, keys[digest])
            continue
        keys[digest] = tenant
    return keys


class TenantDirectory:
    """Resolves a key to its tenant, re-reading API_KEYS_FILE whenever it changed.

    Args:
        admin_key: API_KEY, the admin's key (None: no admin).
        keys_file: API_KEYS_FILE (None: the admin key only).
    """

    def __init__(self, *, admin_key: str | None, keys_file: Path | None) -> None:
        self.admin_key = admin_key
        self.keys_file = Path(keys_file) if keys_file is not None else None
        self._keys: dict[str, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        """Read the file again when its mtime or size changed; a missing file means no tenant keys."""
        if self.keys_file is None:
            return
        try:
            stat = self.keys_file.stat()
        except OSError:
            if self._stamp != (-1, -1):  # once per disappearance, not on every request
                log.warning("API_KEYS_FILE cannot be read: no tenant key is accepted until it is back")
            self._keys, self._stamp = {}, (-1, -1)
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                keys = parse_keys_file(self.keys_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                log.warning("API_KEYS_FILE could not be read as UTF-8 text; keeping the keys read before")
                return
            self._keys, self._stamp = keys, stamp
            log.info("API_KEYS_FILE read: %d key(s) of %d tenant(s)", len(keys), len(set(keys.values())))

    def resolve(self, provided: str) -> Tenant | None:
        """The tenant whose key `provided` is, or None."""
        # Constant-time comparison: the time taken says nothing about how much of the key matched.
        if self.admin_key and secrets.compare_digest(provided.encode(), self.admin_key.encode()):
            return ADMIN
        self._reload()
        digest = key_digest(provided)  # a dict lookup by the key's hash: its timing says nothing about the key
        tenant = self._keys.get(digest)
        return Tenant(tenant) if tenant is not None else None
