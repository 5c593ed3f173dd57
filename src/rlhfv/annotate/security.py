"""Passwords (argon2id) and session tokens (random, stored as their sha256)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory defaults

# verified against when the user name is unknown, so a login takes as long either way
_DUMMY_HASH = _hasher.hash("not a real password")


def hash_password(password: str) -> str:
    """An argon2id hash; it carries its own cost parameters, which verification reuses."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A 256-bit random session token, shown to the client once."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps: a token has 256 bits of entropy, so a fast hash suffices
    (argon2 is for low-entropy passwords) and lookups stay cheap on every request."""
    return hashlib.sha256(token.encode()).hexdigest()
