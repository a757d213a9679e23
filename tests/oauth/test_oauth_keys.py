from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from wsgw.errors import ConfigError
from wsgw.oauth.keys import generate_signing_key, jwk_thumbprint, load_signing_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write_pem(path: Path, key, encryption=None) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            encryption or serialization.NoEncryption(),
        )
    )


def test_ed25519_key_is_private_pkcs8_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "nested" / "signing.pem"
    old_umask = os.umask(0)  # a permissive umask must not widen the file's mode
    try:
        generate_signing_key(path)
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert _mode(path.parent.parent) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    key = load_signing_key(path)
    assert key.algorithm == "EdDSA"
    assert isinstance(key.private_key, ed25519.Ed25519PrivateKey)
    assert isinstance(key.public_key, ed25519.Ed25519PublicKey)
    assert len(key.key_id) == 43
    assert load_signing_key(path).key_id == key.key_id  # stable across loads


def test_rsa_key(rsa_key) -> None:
    assert rsa_key.algorithm == "RS256"
    assert isinstance(rsa_key.private_key, rsa.RSAPrivateKey)
    assert rsa_key.private_key.key_size >= 2048
    assert rsa_key.public_jwk()["kty"] == "RSA"


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_signing_key(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_signing_key(path)
    with pytest.raises(FileExistsError):
        generate_signing_key(path, "rsa")
    assert path.read_bytes() == before


def test_refuses_to_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.pem"
    link = tmp_path / "k.pem"
    link.symlink_to(target)  # dangling: O_EXCL must still refuse, not create the target
    with pytest.raises(FileExistsError):
        generate_signing_key(link)
    assert not target.exists()


def test_force_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_signing_key(path)
    first = load_signing_key(path).key_id
    path.chmod(0o644)  # the replacement must not inherit a loosened mode
    generate_signing_key(path, force=True)
    assert load_signing_key(path).key_id != first
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temp file left


def test_existing_parent_mode_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    generate_signing_key(tmp_path / "k.pem")
    assert _mode(tmp_path) == 0o755


def test_unknown_algorithm(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_signing_key(tmp_path / "k.pem", "dsa")  # type: ignore[arg-type]
    assert not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_bad_file_is_config_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_signing_key(path)
    assert str(path) in info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.pem"
    with pytest.raises(ConfigError) as info:
        load_signing_key(path)
    assert str(path) in str(info.value)


def test_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "enc.pem"
    _write_pem(
        path, ed25519.Ed25519PrivateKey.generate(), serialization.BestAvailableEncryption(b"pw")
    )
    with pytest.raises(ConfigError, match="encrypted") as info:
        load_signing_key(path)
    assert str(path) in str(info.value)


def test_other_key_types_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    _write_pem(path, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match="unsupported signing key type") as info:
        load_signing_key(path)
    assert str(path) in str(info.value)


def test_small_rsa_refused(tmp_path: Path) -> None:
    path = tmp_path / "small.pem"
    _write_pem(path, rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ConfigError, match="2048") as info:
        load_signing_key(path)
    assert str(path) in str(info.value)


def _b64url_int(text: str) -> int:
    import base64

    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def test_thumbprint_rfc7638_rsa_vector() -> None:
    # RFC 7638 §3.1
    n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"  # noqa: E501
    public = rsa.RSAPublicNumbers(_b64url_int("AQAB"), _b64url_int(n)).public_key()
    assert jwk_thumbprint(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_rfc8037_ed25519_vector() -> None:
    # RFC 8037 Appendix A.3
    import base64

    x = base64.urlsafe_b64decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    public = ed25519.Ed25519PublicKey.from_public_bytes(x)
    assert jwk_thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
