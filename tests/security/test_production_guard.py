"""AURION_ENV=production refuses weak token configuration, in one clear line (issue #3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aurion.settings import DEV_JWT_SECRET

AURION = str(Path(sys.executable).with_name("aurion"))
STRONG = "k3y-" + "x" * 40


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AURION_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [AURION, *args],
        env={**clean, "AURION_ENV": "production", "AURION_DATA_DIR": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"AURION_JWT_SECRET": DEV_JWT_SECRET}, "AURION_JWT_SECRET is the development secret"),
        ({}, "no token verification key is configured"),
        ({"AURION_JWT_SECRET": ""}, "no token verification key is configured"),
        ({"AURION_JWT_SECRET": "short-secret"}, "at least 32 characters"),
        # A public key alone does not help if only HS256 is allowed.
        ({"AURION_JWT_PUBLIC_KEY": "pem", "AURION_JWT_ALGORITHMS": "HS256"},
         "no token verification key is configured"),
        ({"AURION_JWT_SECRET": STRONG, "AURION_JWT_ALGORITHMS": "HS256,none"},
         "unsupported JWT algorithm(s) NONE"),
    ],
)  # fmt: skip
def test_the_service_refuses_to_start_with_one_line(env: dict[str, str], reason: str) -> None:
    assert_one_line_refusal(run(["serve", "--port", "0"], **env), reason)


def test_every_command_refuses_the_same_way() -> None:
    result = run(["token", "--workspace", "w", "--sub", "s"], AURION_JWT_SECRET=DEV_JWT_SECRET)
    assert_one_line_refusal(result, "AURION_JWT_SECRET is the development secret")


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("aurion: error: invalid configuration: ")
    assert reason in lines[0]
    assert "Traceback" not in result.stderr
    # The secret itself is never echoed.
    assert DEV_JWT_SECRET not in result.stderr
    assert "short-secret" not in result.stderr


def test_a_strong_configuration_is_accepted() -> None:
    """The control: the same command with a proper secret works."""
    result = run(["token", "--workspace", "w", "--sub", "s"], AURION_JWT_SECRET=STRONG)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2


def test_an_unset_secret_never_falls_back_to_the_dev_secret_in_production() -> None:
    """With only a public key configured, the built-in dev secret must not enable HS256."""
    from aurion.settings import Settings

    settings = Settings(env="production", jwt_public_key="-----BEGIN PUBLIC KEY-----")
    assert settings.jwt_secret is None
    development = Settings(env="development")
    assert development.jwt_secret == DEV_JWT_SECRET
