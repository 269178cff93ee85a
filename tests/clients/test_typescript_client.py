"""TypeScript types generated from openapi.json with openapi-typescript compile with a typed
call of createChildConversation (tests/clients/ts/call.ts), under ``tsc --noEmit --strict``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.e2e.live import npm_ci, require_node

TS = Path(__file__).resolve().parent / "ts"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    node = str(Path(require_node()).with_name("node"))
    return subprocess.run(
        [node, *args], cwd=TS, capture_output=True, text=True, timeout=300, check=False
    )


def test_generated_types_compile_with_a_typed_child_call() -> None:
    npm_ci(TS)
    schema = TS / "generated" / "schema.d.ts"
    generated = run(
        "node_modules/openapi-typescript/bin/cli.js", str(ROOT / "openapi.json"), "-o", str(schema)
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "createChildConversation: {" in schema.read_text()

    compiled = run("node_modules/typescript/bin/tsc", "--noEmit", "-p", ".")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
