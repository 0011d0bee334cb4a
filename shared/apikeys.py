"""API keys as the server keeps them: SHA-256 digests, never the keys themselves.

API_KEYS holds plain keys (convenient for one host); API_KEYS_FILE holds one
hex digest per line (`printf %s "$KEY" | sha256sum`), so a leaked file or
settings dump reveals no key, optionally followed by what the key may do
(shared.keypolicy). Both are read at start; errors never echo a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from shared.keypolicy import DEFAULT_POLICY, OPEN_POLICY, KeyPolicy, parse_policy

# The caller when authentication is off: every job belongs to it.
ANONYMOUS = "anonymous"
# Keys shorter than this are guessable by brute force over HTTP.
MIN_API_KEY_CHARS = 16
# The caller's identity is this many hex characters of its key's digest: short
# enough for logs and Redis key names, long enough (64 bits) never to collide.
OWNER_ID_CHARS = 16

_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def owner_id(digest: str) -> str:
    """The stable, non-secret identity of a key: the first characters of its digest."""
    return digest[:OWNER_ID_CHARS]


def check_plain_key(key: str) -> None:
    """Refuse keys that are guessable or cannot travel in a header. Never echoes the key."""
    if len(key) < MIN_API_KEY_CHARS:
        raise ValueError(
            f"API_KEYS entries must be at least {MIN_API_KEY_CHARS} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ValueError("API_KEYS entries must be printable ASCII without spaces")


def split_api_keys(value: str) -> list[str]:
    """API_KEYS: comma separated, surrounding spaces ignored."""
    return [key.strip() for key in value.split(",") if key.strip()]


def read_key_file(path: Path) -> dict[str, KeyPolicy]:
    """The entries of an API_KEYS_FILE: each digest (lower-cased) and its key's policy.

    A line is a digest, then optional settings (shared.keypolicy); `#` starts a
    comment. Raises ValueError naming the file and the line (never its
    content: a plain key pasted by mistake must not reach the logs).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"API_KEYS_FILE {path} cannot be read: {exc.strerror}") from None
    entries: dict[str, KeyPolicy] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        digest, *fields = words
        if not _HEX_DIGEST.match(digest):
            raise ValueError(
                f"API_KEYS_FILE {path} line {number}: expected a SHA-256 hex digest "
                "(64 hex characters), not a key"
            )
        try:
            entries[digest.lower()] = parse_policy(fields)
        except ValueError as exc:
            raise ValueError(f"API_KEYS_FILE {path} line {number}: {exc}") from None
    if not entries:
        # An empty file would silently leave the API open.
        raise ValueError(f"API_KEYS_FILE {path} holds no key digests")
    return entries


class KeyRing:
    """The accepted keys, held as SHA-256 digests only, and what each may do."""

    def __init__(self, keys: Mapping[str, KeyPolicy] | Iterable[str]):
        policies = keys if isinstance(keys, Mapping) else dict.fromkeys(keys, DEFAULT_POLICY)
        self._digests = [bytes.fromhex(d) for d in sorted(policies)]
        self._policies = {owner_id(d): policy for d, policy in policies.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def owner_of(self, key: str) -> str | None:
        """The identity of `key`, or None when it is not one of ours.

        Every digest is compared, in constant time, so the answer's timing says
        nothing about which (or how much of a) key matched.
        """
        digest = hashlib.sha256(key.encode()).digest()
        match = None
        for candidate in self._digests:
            if hmac.compare_digest(candidate, digest):
                match = candidate
        return owner_id(match.hex()) if match is not None else None

    def policy(self, owner: str) -> KeyPolicy:
        """What `owner` may do; with keys off, the single trusted user may do everything."""
        if not self.enabled:
            return OPEN_POLICY
        return self._policies.get(owner, DEFAULT_POLICY)
