"""An app configured as production would be: RS256 public key, issuer and audience checked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from aurion.settings import Settings
from tests.conftest import app_client, make_settings
from tests.security.keys import AUDIENCE, ISSUER, RSA_PUBLIC


@pytest.fixture(scope="session")
def rsa_settings(database_url: str) -> Settings:
    # The HS256 secret stays configured too: the algorithm-confusion attack needs both.
    return make_settings(
        database_url, jwt_public_key=RSA_PUBLIC, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )


@pytest.fixture(scope="session")
async def rsa_client(rsa_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(rsa_settings) as client:
        yield client
