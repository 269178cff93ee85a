"""An app configured as production would be: RS256 public key, issuer and audience checked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from aurion.settings import Settings
from tests.security.keys import AUDIENCE, ISSUER, RSA_PUBLIC
from tests.support import make_settings, started_app


@pytest.fixture(scope="session")
def rsa_settings(database_url: str) -> Settings:
    # The HS256 secret stays configured too: the algorithm-confusion attack needs both.
    return make_settings(
        database_url, jwt_public_key=RSA_PUBLIC, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )


@pytest.fixture(scope="session")
async def rsa_app(rsa_settings: Settings) -> AsyncIterator[FastAPI]:
    async for app in started_app(rsa_settings):
        yield app


@pytest.fixture(scope="session")
async def rsa_client(rsa_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=rsa_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
