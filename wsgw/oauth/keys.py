"""The token signing key: one PEM (PKCS#8, unencrypted) private key file, Ed25519 or RSA.

The file is the gateway's most sensitive secret, so it is born with mode 0600 (the mode is
given to ``os.open``; a chmod after writing would leave a window where it is readable) and
a replacement is written next to it and renamed over it, never rewritten in place.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from wsgw.errors import ConfigError

KeyAlgorithm = Literal["ed25519", "rsa"]

RSA_GENERATED_BITS = 3072  # NIST's recommendation for keys meant to live past 2030
RSA_MIN_BITS = 2048  # RFC 7518 §3.3: RS256 keys MUST be 2048 bits or larger

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


@dataclass(frozen=True, slots=True)
class SigningKey:
    private_key: PrivateKey
    public_key: PublicKey
    algorithm: str  # JWS "alg": "EdDSA" or "RS256"
    key_id: str  # JWS "kid": RFC 7638 thumbprint of the public key

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 7517), e.g. for a JWKS endpoint."""
        return {
            **_jwk_members(self.public_key),
            "kid": self.key_id,
            "alg": self.algorithm,
            "use": "sig",
        }


def generate_signing_key(
    path: str | os.PathLike[str], algorithm: KeyAlgorithm = "ed25519", force: bool = False
) -> None:
    """Create a new private key file at ``path``.

    Raises FileExistsError if the file exists and ``force`` is false, ValueError for an
    unknown algorithm, OSError when the file cannot be written.
    """
    path = Path(path)
    private_key: PrivateKey
    if algorithm == "ed25519":
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "rsa":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_GENERATED_BITS)
    else:
        raise ValueError(f"unknown key algorithm {algorithm!r} (expected ed25519 or rsa)")
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    _make_private_dirs(path.parent)
    if not force:
        _write_new(path, pem)  # O_EXCL: refusing to overwrite is the kernel's check, no race
        return
    # mkstemp opens with O_EXCL and mode 0600 too, under a name no stale file can block.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _write_fd(fd, pem)
        os.replace(tmp_name, path)  # atomic: readers see the old key or the new one, never half
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _make_private_dirs(directory: Path) -> None:
    """Create missing directories with mode 0700, existing ones keep their owner's choice.

    ``Path.mkdir(parents=True, mode=...)`` applies the mode only to the last directory;
    intermediate ones get the umask default, so each level is created here explicitly.
    """
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        _write_fd(fd, data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_fd(fd: int, data: bytes) -> None:
    """Write ``data`` durably to ``fd`` and close it."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a private key file; ConfigError (naming the file) if it is unusable."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read signing key: {exc.strerror or exc}"]) from None
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(
            [f"{path}: signing key is encrypted; a passwordless PEM key is required"]
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        # Deliberately not the library's message: it may quote bytes of the key file.
        raise ConfigError([f"{path}: not a PEM private key"]) from None
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    elif isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < RSA_MIN_BITS:
            raise ConfigError(
                [
                    f"{path}: RSA signing key has {private_key.key_size} bits; "
                    f"at least {RSA_MIN_BITS} are required"
                ]
            )
        algorithm = "RS256"
    else:
        raise ConfigError(
            [
                f"{path}: unsupported signing key type "
                f"{type(private_key).__name__}; use Ed25519 or RSA "
                f"(wsgw keys init --algorithm ed25519|rsa)"
            ]
        )
    public_key = private_key.public_key()
    return SigningKey(private_key, public_key, algorithm, jwk_thumbprint(public_key))


def jwk_thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 JWK SHA-256 thumbprint, base64url without padding (43 characters)."""
    members = _jwk_members(public_key)
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode("ascii")
    return _b64url(hashlib.sha256(canonical).digest())


def _jwk_members(public_key: PublicKey) -> dict[str, str]:
    """The required members of the public JWK (RFC 7638 §3.2), nothing else."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    numbers = public_key.public_numbers()
    return {
        "e": _b64url(_uint_bytes(numbers.e)),
        "kty": "RSA",
        "n": _b64url(_uint_bytes(numbers.n)),
    }


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
