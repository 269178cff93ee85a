"""Operations: request ids, access logs, health and readiness, metrics, docs assets, the
command line's help, and the container files (Docker cannot run here: their structure is
checked instead).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from aurion.cli import build_parser
from aurion.docs import ASSET_NAMES
from aurion.observability import JsonFormatter, TextFormatter
from aurion.settings import Settings
from harness.processes import free_port
from tests.support import ROOT, Factory, make_settings, started_app

CHILDREN_ROUTE = "/api/v2/conversations/{conversation_id}/children"


def child_url(conversation_id: object) -> str:
    return f"/api/v2/conversations/{conversation_id}/children"


# ---------------------------------------------------------------- request ids


class TestRequestId:
    async def test_a_valid_id_is_echoed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:01.2_x"})
        assert response.headers["x-request-id"] == "lb-7f3a:01.2_x"

    async def test_one_is_generated_when_absent(self, client: httpx.AsyncClient) -> None:
        first = (await client.get("/healthz")).headers["x-request-id"]
        second = (await client.get("/healthz")).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", first)
        assert first != second

    @pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", 'quote"d'])
    async def test_an_unsafe_id_is_replaced(self, client: httpx.AsyncClient, bad: str) -> None:
        response = await client.get("/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])

    async def test_errors_carry_it_too(self, client: httpx.AsyncClient) -> None:
        unauthenticated = await client.get(
            f"/api/v2/conversations/{uuid.uuid4()}", headers={"X-Request-ID": "req-401"}
        )
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["x-request-id"] == "req-401"
        missing = await client.get("/no/such/page", headers={"X-Request-ID": "req-404"})
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "req-404"


# ---------------------------------------------------------------- access log


def access_records(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    """The access-log records of one request (its fields are the record's extras)."""
    return [
        r
        for r in caplog.records
        if r.name == "aurion.access" and vars(r).get("request_id") == request_id
    ]


class TestAccessLog:
    async def test_one_json_line_per_request_without_token_or_body(
        self,
        client: httpx.AsyncClient,
        create_parent: Factory,
        auth: dict[str, str],
        workspace: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        parent = await create_parent()
        caplog.set_level(logging.INFO, logger="aurion.access")
        secret_subject = f"Customer card 4111-{uuid.uuid4().hex[:8]}"
        response = await client.post(
            f"{child_url(parent['id'])}?utm=tracking-{uuid.uuid4().hex[:6]}",
            json={"subject": secret_subject},
            headers={**auth, "X-Request-ID": "access-log-test"},
        )
        assert response.status_code == 201

        records = access_records(caplog, "access-log-test")
        assert len(records) == 1
        line = json.loads(JsonFormatter().format(records[0]))
        assert line["msg"] == "request"
        assert line["level"] == "info"
        assert line["request_id"] == "access-log-test"
        assert line["method"] == "POST"
        assert line["route"] == CHILDREN_ROUTE  # the template, not the id
        assert line["status"] == 201
        assert line["workspace_id"] == workspace
        assert isinstance(line["duration_ms"], float)
        text_line = json.dumps(line)
        token = auth["Authorization"].removeprefix("Bearer ")
        assert token not in text_line
        assert secret_subject not in text_line
        assert "utm=" not in text_line
        assert parent["id"] not in text_line

        # The same record as a person reads it in development (AURION_LOG_FORMAT=text).
        readable = TextFormatter().format(records[0])
        assert "INFO  aurion.access request method=POST route=" in readable
        assert "status=201" in readable
        assert f"workspace_id={workspace}" in readable
        assert readable.count("\n") == 0
        assert not readable.startswith("{")
        assert token not in readable
        assert secret_subject not in readable

    @pytest.mark.parametrize(
        ("env", "log_format", "as_json"),
        [
            ("production", None, True),
            ("development", None, False),
            ("test", None, False),
            ("development", "json", True),
            ("production", "text", False),
        ],
    )
    def test_json_in_production_text_in_development(
        self,
        env: Literal["development", "test", "production"],
        log_format: Literal["json", "text"] | None,
        as_json: bool,
    ) -> None:
        settings = Settings.model_construct(env=env, log_format=log_format)
        assert settings.logs_as_json is as_json

    async def test_refusals_name_the_workspace_of_a_valid_token(
        self,
        client: httpx.AsyncClient,
        token_for: Any,
        workspace: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="aurion.access")
        read_only = {"Authorization": f"Bearer {token_for(workspace, 'conversations:read')}"}
        response = await client.post(
            child_url(uuid.uuid4()),
            json={"subject": "x"},
            headers={**read_only, "X-Request-ID": "refusal-log-test"},
        )
        assert response.status_code == 403
        (record,) = access_records(caplog, "refusal-log-test")
        assert vars(record)["workspace_id"] == workspace
        assert vars(record)["status"] == 403

    async def test_unknown_paths_are_logged_under_one_route_label(
        self, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="aurion.access")
        await client.get(f"/wp-admin/{uuid.uuid4()}.php", headers={"X-Request-ID": "scan-test"})
        (record,) = access_records(caplog, "scan-test")
        assert vars(record)["route"] == "<unmatched>"
        assert vars(record)["status"] == 404
        assert vars(record)["workspace_id"] is None


# ---------------------------------------------------------------- OpenTelemetry

# Run in a process of its own: an OpenTelemetry SDK provider, once set, is global for good.
_TRACED_REQUEST = """
import asyncio, json, sys
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.support import make_settings, started_app

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

async def main() -> None:
    settings = make_settings(sys.argv[1], opentelemetry=sys.argv[2] == "on")
    async for app in started_app(settings):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
    print(json.dumps([span.name for span in exporter.get_finished_spans()]))

asyncio.run(main())
"""


class TestOpenTelemetry:
    """FastAPI's native OpenTelemetry reports requests to the configured (global) providers
    when AURION_OPENTELEMETRY is true, and costs nothing per request when it is not."""

    @pytest.mark.parametrize("setting", ["on", "off"])
    def test_spans_only_when_turned_on(self, database_url: str, setting: str) -> None:
        done = subprocess.run(
            [sys.executable, "-c", _TRACED_REQUEST, database_url, setting],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        spans = json.loads(done.stdout.strip().splitlines()[-1])
        if setting == "on":
            assert any("/healthz" in name for name in spans), spans
        else:
            assert spans == []


# ---------------------------------------------------------------- health and readiness


class TestHealth:
    async def test_healthz_answers_without_the_database(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz_when_the_database_is_at_head(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/readyz")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ready"
        assert body["database"] == "ok"
        assert len(body["migrations"]) == 1

    async def test_readyz_is_503_when_the_database_is_unreachable(self) -> None:
        unreachable = f"postgresql://aurion@127.0.0.1:{free_port()}/aurion"
        settings = make_settings(unreachable, db_connect_timeout_seconds=1)
        async for app in started_app(settings):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                response = await client.get("/readyz")
                health = await client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "2"
        assert health.status_code == 200  # alive, just not ready

    async def test_readyz_is_503_while_migrations_are_pending(
        self, engine: AsyncEngine, database_url: str
    ) -> None:
        name = f"aurion_unmigrated_{uuid.uuid4().hex[:8]}"
        admin = await engine.connect()
        try:
            await admin.execution_options(isolation_level="AUTOCOMMIT")
            try:
                await admin.execute(text(f'CREATE DATABASE "{name}"'))
            except Exception as exc:  # an external server may not allow it
                pytest.skip(f"cannot create a database on this server: {exc}")
            url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
            async for app in started_app(make_settings(url)):
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://t"
                ) as client:
                    response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["code"] == "migrations_pending"
        finally:
            await admin.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.close()


# ---------------------------------------------------------------- metrics


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def child_key(name: str, status: str = "201", **extra: str) -> tuple[str, Any]:
    labels = {"method": "POST", "route": CHILDREN_ROUTE, "status": status, **extra}
    return (name, tuple(sorted(labels.items())))


class TestMetrics:
    async def test_requests_are_counted_and_timed_per_route_template(
        self, client: httpx.AsyncClient, create_parent: Factory, auth: dict[str, str]
    ) -> None:
        parent = await create_parent()
        before = samples((await client.get("/metrics")).text)
        for subject in ("one", "two"):
            created = await client.post(
                child_url(parent["id"]), json={"subject": subject}, headers=auth
            )
            assert created.status_code == 201
        missing = await client.post(child_url(uuid.uuid4()), json={"subject": "x"}, headers=auth)
        assert missing.status_code == 404

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        after = samples(response.text)

        def delta(key: tuple[str, Any]) -> float:
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert delta(child_key("aurion_http_requests_total")) == 2
        assert delta(child_key("aurion_http_requests_total", status="404")) == 1
        assert delta(child_key("aurion_http_request_duration_seconds_count")) == 2
        assert delta(child_key("aurion_http_request_duration_seconds_bucket", le="+Inf")) == 2
        assert delta(child_key("aurion_http_request_duration_seconds_sum")) > 0

    async def test_unknown_paths_share_one_label(self, client: httpx.AsyncClient) -> None:
        probe = f"/scan/{uuid.uuid4().hex}"
        await client.get(probe)
        exposition = (await client.get("/metrics")).text
        assert probe not in exposition
        assert 'route="<unmatched>",status="404"' in exposition

    async def test_pool_connections_in_use_and_idle(self, client: httpx.AsyncClient) -> None:
        await client.get("/readyz")  # at least one connection has been opened and returned
        found = samples((await client.get("/metrics")).text)
        in_use = found[("aurion_db_pool_connections_in_use", ())]
        idle = found[("aurion_db_pool_connections_idle", ())]
        assert in_use >= 0
        assert idle >= 1
        assert found[("aurion_db_pool_size", ())] == 20


# ---------------------------------------------------------------- docs, served locally


class TestDocsAssets:
    @pytest.mark.parametrize("page", ["/docs", "/redoc"])
    async def test_pages_load_nothing_from_elsewhere(
        self, client: httpx.AsyncClient, page: str
    ) -> None:
        response = await client.get(page)
        assert response.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", response.text)
        urls += re.findall(r"""url: ?["']([^"']+)""", response.text)
        assert urls
        assert all(url.startswith("/") for url in urls), urls

    @pytest.mark.parametrize("name", ASSET_NAMES)
    async def test_every_asset_is_served(self, client: httpx.AsyncClient, name: str) -> None:
        response = await client.get(f"/docs/assets/{name}")
        assert response.status_code == 200
        assert len(response.content) > 1000
        assert "max-age" in response.headers["cache-control"]

    async def test_nothing_else_on_disk_is_reachable(self, client: httpx.AsyncClient) -> None:
        for path in ("/docs/assets/..%2F__init__.py", "/docs/assets/core.py"):
            assert (await client.get(path)).status_code == 404

    async def test_openapi_json_is_the_document(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        assert response.json()["info"]["title"] == "Aurion Conversations API"


# ---------------------------------------------------------------- command line


class TestCommandLineHelp:
    def test_aurion_help_lists_every_command(self) -> None:
        aurion = Path(sys.executable).with_name("aurion")
        result = subprocess.run(
            [str(aurion), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0
        for command in ("serve", "db", "token", "seed", "DATABASE_URL", "examples:"):
            assert command in result.stdout

    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["serve"], ["--host", "--port", "--workers", "--migrate", "SIGTERM", "/metrics"]),
            (["db"], ["upgrade", "purge-keys", "distribute"]),
            (["db", "distribute"], ["--shard-count", "Idempotent", "no Citus extension"]),
            (["db", "upgrade"], ["--revision", "once per deploy"]),
            (["token"], ["--workspace", "--sub", "--scope", "--ttl", "AURION_JWT_SECRET"]),
            (["seed"], ["--workspace", "print only its id"]),
        ],
    )
    def test_each_command_explains_itself(
        self, argv: list[str], expected: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*argv, "--help"])
        assert exited.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())
        for word in expected:
            assert word in shown, word


# ---------------------------------------------------------------- containers


class TestContainerFiles:
    def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck(self) -> None:
        dockerfile = (ROOT / "Dockerfile").read_text()
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", dockerfile, re.MULTILINE)
        assert stages == ["build", "runtime"]
        runtime = dockerfile.split("AS runtime", 1)[1]
        assert "COPY --from=build /opt/venv /opt/venv" in runtime
        user = re.findall(r"^USER\s+(\S+)", runtime, re.MULTILINE)
        assert user
        assert user[-1].split(":")[0] not in {"root", "0"}
        assert re.search(r"^HEALTHCHECK .*\n.*/healthz", runtime, re.MULTILINE)
        assert 'ENTRYPOINT ["aurion"]' in runtime
        assert '"--host", "0.0.0.0"' in runtime
        # What `aurion db upgrade` and /readyz read from the working directory.
        assert "COPY alembic.ini" in runtime
        assert "COPY migrations ./migrations" in runtime

    def test_dockerignore_keeps_what_the_build_needs(self) -> None:
        lines = (ROOT / ".dockerignore").read_text().splitlines()
        ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
        assert {".git", ".venv", ".data", "tests"} <= ignored
        assert not {"src", "pyproject.toml", "README.md", "alembic.ini", "migrations"} & ignored

    def test_compose_orders_postgres_migrate_api_by_health(self) -> None:
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        services = compose["services"]
        assert set(services) == {"postgres", "migrate", "api"}

        postgres = services["postgres"]
        assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

        migrate = services["migrate"]
        assert migrate["command"] == ["db", "upgrade"]
        assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert migrate["restart"] == "no"

        api = services["api"]
        assert api["command"][:3] == ["serve", "--host", "0.0.0.0"]
        assert api["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        for service in (migrate, api):
            env = service["environment"]
            assert env["DATABASE_URL"].startswith("postgresql://")
            assert "@postgres:5432/" in env["DATABASE_URL"]
            assert env["AURION_ENV"] == "production"
            # Required, never defaulted: production refuses a development secret.
            assert env["AURION_JWT_SECRET"].startswith("${AURION_JWT_SECRET:?")
        assert api["stop_grace_period"] == "30s"


# ---------------------------------------------------------------- README


class TestReadme:
    def test_every_setting_is_in_the_configuration_table(self) -> None:
        readme = (ROOT / "README.md").read_text()
        for name, field in Settings.model_fields.items():
            alias = field.validation_alias
            env = "DATABASE_URL" if alias is not None else f"AURION_{name.upper()}"
            assert f"`{env}`" in readme, f"add {env} to README.md's Configuration table"

    def test_every_error_code_is_in_the_errors_table(self) -> None:
        readme = (ROOT / "README.md").read_text()
        document = json.loads((ROOT / "openapi.json").read_text())
        codes = {
            example["value"]["code"]
            for item in document["paths"].values()
            for op in item.values()
            for response in op["responses"].values()
            for example in response.get("content", {})
            .get("application/json", {})
            .get("examples", {})
            .values()
            if isinstance(example["value"].get("detail"), str)
        }
        assert "conversation_not_found" in codes
        for code in sorted(codes):
            assert f"`{code}`" in readme, f"add {code} to README.md's Errors table"


async def test_a_405_lists_exactly_the_methods_its_path_serves(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    """RFC 9110 §15.5.6: ``Allow`` names the methods the resource supports; each must then be
    answered by something other than 405."""
    created = await client.post("/api/v2/conversations", json={"subject": "p"}, headers=auth)
    assert created.status_code == 201, created.text
    paths = {
        f"/api/v2/conversations/{created.json()['id']}/children": {"GET", "POST"},
        "/api/v2/conversations": {"POST"},
    }
    for path, served in paths.items():
        refused = await client.request("PUT", path, headers=auth, json={})
        assert refused.status_code == 405, path
        allowed = {m.strip() for m in refused.headers["allow"].split(",")}
        assert allowed == served, (path, allowed)
        for method in allowed:
            answered = await client.request(method, path, headers=auth, json={"subject": "c"})
            assert answered.status_code != 405, (path, method)
