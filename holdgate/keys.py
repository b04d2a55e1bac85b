"""Ed25519 keys: the worker signs, everyone else only verifies.

A shared secret let any runtime that could verify a verdict also mint one.
Now the worker alone holds a private key; runtimes, executors and auditors
hold public keys and can check, never forge.  Operators and approvers sign
their own records (control, approvals, published policies) with keys of their
own, verified the same way.

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), so any
language's crypto library and ``openssl`` read them.  A key's id is
``ed25519:`` + the first 16 hex of SHA-256 over its raw 32-byte public key:
signatures name the key that made them, so several keys can be trusted at once
while one is rotated out.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from holdgate.errors import ConfigError

__all__ = ["Signer", "TrustStore", "generate_keypair", "key_id_of", "load_signer",
           "load_public_key"]


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """A private key that signs exact bytes; its `key_id` travels with every signature."""

    key: Ed25519PrivateKey = field(repr=False)
    key_id: str

    @classmethod
    def generate(cls) -> Signer:
        """A fresh key that lives only in memory (tests, throwaway demos)."""
        key = Ed25519PrivateKey.generate()
        return cls(key, key_id_of(key.public_key()))

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.key.public_key()


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """The private key at `path` (PEM, unencrypted); refuses files others can read."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read private key {p}: {exc.strerror}; create one with "
                          "`holdgate keys generate`") from None
    if os.name == "posix" and p.stat().st_mode & 0o077:
        raise ConfigError(f"private key {p} is readable by others (mode "
                          f"{oct(p.stat().st_mode & 0o777)}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{p} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{p} is not an Ed25519 private key")
    return Signer(key, key_id_of(key.public_key()))


def load_public_key(source: str | os.PathLike[str] | bytes) -> Ed25519PublicKey:
    """A public key from a PEM file path or PEM bytes."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a PEM public key ({source!r:.60}): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{source!r:.60} is not an Ed25519 public key")
    return key


class TrustStore:
    """Public keys trusted to sign, by key id: several at once, for rotation."""

    #: Verified tree heads remembered (`verify(remember=True)`): a batch of verdicts
    #: arrives within milliseconds, so a few thousand cover every batch in flight.
    REMEMBER = 4096

    def __init__(self, keys: Iterable[Ed25519PublicKey] = ()) -> None:
        self._keys = {key_id_of(k): k for k in keys}
        self._verified: dict[tuple[str, bytes, bytes], None] = {}

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike[str]]) -> TrustStore:
        """Every ``*.pub``/``*.pem`` public key of the given files and folders."""
        keys = []
        for raw in paths:
            p = Path(raw)
            files = sorted(p.glob("*.pub")) + sorted(p.glob("*.pub.pem")) if p.is_dir() \
                else [p]
            if p.is_dir() and not files:
                raise ConfigError(f"no *.pub key files in {p}")
            for f in files:
                try:
                    keys.append(load_public_key(f))
                except OSError as exc:
                    raise ConfigError(f"cannot read public key {f}: {exc.strerror}") from None
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, key_id: str | None, data: bytes, signature: bytes | None, *,
               remember: bool = False) -> str | None:
        """None when `signature` by `key_id` over `data` verifies, else why it does not.

        `remember`: `data` is a small batch tree head that other records will
        present again; a success is kept (bounded, oldest forgotten first) so
        the batch's other records skip the ~130 µs check.  Only successes are
        kept, keyed by the exact key id, bytes and signature, so what is
        remembered can never make a different claim pass.
        """
        if not signature or not key_id:
            return "unsigned"
        key = self._keys.get(key_id)
        if key is None:
            return f"signed by unknown key {key_id}"
        memo = (key_id, data, signature)
        if remember and memo in self._verified:
            return None
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return f"signature by {key_id} does not verify"
        if remember:
            self._verified[memo] = None
            if len(self._verified) > self.REMEMBER:
                try:   # threads may share a store: losing a race only forgets one more
                    del self._verified[next(iter(self._verified))]
                except (KeyError, StopIteration, RuntimeError):
                    pass
        return None


def generate_keypair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path, str]:
    """Write ``<name>.key`` (mode 600) and ``<name>.pub``; returns (private, public, key id)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{name}.key", out / f"{name}.pub"
    if private.exists():
        raise ConfigError(f"{private} exists; refusing to overwrite a private key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, key_id_of(key.public_key())
