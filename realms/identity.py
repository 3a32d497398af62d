"""This realm's identity (DESIGN.md section 8): slug, name, URL and its Ed25519 key pair.

The key is made on first start under the data folder (0600, created exclusively, so the web
process and a worker starting together agree on one key) unless REALM_PRIVATE_KEY holds it.
Its fingerprint, "SHA256:" and the unpadded base64 of the SHA-256 of the raw public key (the
form ssh-keygen prints), is the key id peers check when they pair and when they verify."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class Identity:
    slug: str
    name: str
    url: str
    key: Ed25519PrivateKey
    public_key: str  # raw, base64url without padding
    fingerprint: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint_of(raw: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
    return f"SHA256:{digest}"


def public_key_from(text: str) -> Ed25519PublicKey:
    """A peer's key as it publishes it (raw, base64url); ValueError if it is not one."""
    raw = b64url_decode(text)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


@cache
def me() -> Identity:
    key = _private_key()
    raw = raw_public(key.public_key())
    return Identity(
        slug=settings.REALM_SLUG,
        name=settings.REALM_NAME,
        url=settings.REALM_URL,
        key=key,
        public_key=b64url(raw),
        fingerprint=fingerprint_of(raw),
    )


def _private_key() -> Ed25519PrivateKey:
    pem = settings.REALM_PRIVATE_KEY.encode() or _key_file_pem()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ImproperlyConfigured(f"The realm's private key does not load: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured("The realm's private key must be an Ed25519 key.")
    return key


def _key_file_pem() -> bytes:
    path = settings.REALM_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Written whole under another name, then linked into place: link() fails if the
        # name exists, so two processes starting together end up with the same key, and
        # neither ever reads a half-written file.
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process of this realm made it first: use theirs
        finally:
            temporary.unlink()
    return path.read_bytes()
