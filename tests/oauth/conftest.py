"""Keys are generated once per session: RSA generation costs ~0.5 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsgw.oauth.keys import SigningKey, generate_signing_key, load_signing_key

ISSUER = "https://gw.test"


def _make(tmp_path_factory: pytest.TempPathFactory, algorithm: str) -> SigningKey:
    path = Path(tmp_path_factory.mktemp("keys")) / f"{algorithm}.pem"
    generate_signing_key(path, algorithm)  # type: ignore[arg-type]
    return load_signing_key(path)


@pytest.fixture(scope="session")
def ed_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return _make(tmp_path_factory, "ed25519")


@pytest.fixture(scope="session")
def other_ed_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return _make(tmp_path_factory, "ed25519")


@pytest.fixture(scope="session")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return _make(tmp_path_factory, "rsa")


@pytest.fixture(params=["ed25519", "rsa"])
def any_key(request: pytest.FixtureRequest, ed_key: SigningKey, rsa_key: SigningKey) -> SigningKey:
    return ed_key if request.param == "ed25519" else rsa_key


class FakeClock:
    """A settable clock, so expiry tests take no wall time."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
