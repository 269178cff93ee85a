"""Bearer-token authentication: verification, the Principal, scopes."""

from aurion.auth.dependencies import ReadPrincipal, WritePrincipal, bearer_scheme
from aurion.auth.principal import Principal

__all__ = ["Principal", "ReadPrincipal", "WritePrincipal", "bearer_scheme"]
