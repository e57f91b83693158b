"""A throwaway PostgreSQL server for tests, started from Debian's server binaries.

``running_server()`` makes a cluster in a new temporary directory (``initdb``, trust
authentication), runs ``postgres`` on a private Unix socket in that directory (no TCP
port, so nothing can clash with another server or another test run) and, on exit, stops
it and deletes the directory. ``PostgresServer.new_database()`` creates one fresh, empty
database per call and returns its SQLAlchemy URL; ``engines_disposed()`` closes the
connections a test's engines left open to it.

PostgreSQL refuses to run as root, so under root the cluster belongs to, and the server
runs as, the ``postgres`` user that Debian's package creates (``nobody`` if it is
missing). The server is this process's own child and is told to quit if this process
dies, so even a killed test run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

NOT_INSTALLED = (
    "PostgreSQL server not installed: run `make test`, which installs Debian's postgresql"
)
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file; the server listens on no TCP port
# Durability is worthless for a database deleted at the end of the run.
SERVER_OPTIONS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}
PR_SET_PDEATHSIG = 1


class PostgresError(RuntimeError):
    """The test server could not be set up."""


def server_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: Debian's newest, else the ``PATH``'s."""

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.parent.parent.name))

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=version)
    found = [p for p in found if (p.parent / "initdb").is_file()]
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb", path=str(Path(on_path).parent)):
        return Path(on_path).parent
    return None


def _owner() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as; ``None``: as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError("running as root and there is no postgres or nobody user")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM this child (the postmaster) when the test process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class PostgresServer:
    """One running cluster; see ``running_server``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.owner = _owner()
        self.base = Path(tempfile.mkdtemp(prefix="facetrace-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)

    def _as_owner(self) -> dict[str, Any]:
        """subprocess arguments that run a command as the owner, in a clean environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", TZ="UTC")
        kw: dict[str, Any] = {"cwd": self.base, "env": env}
        if self.owner is not None:
            env.update(HOME=str(self.base), USER=self.owner.pw_name, LOGNAME=self.owner.pw_name)
            kw.update(user=self.owner.pw_uid, group=self.owner.pw_gid, extra_groups=[])
        return kw

    def start(self) -> None:
        if self.owner is not None:
            os.chown(self.base, self.owner.pw_uid, self.owner.pw_gid)
        init = subprocess.run(
            [
                str(self.bindir / "initdb"),
                f"--pgdata={self.data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            **self._as_owner(),
        )
        if init.returncode != 0:
            raise PostgresError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = {**SERVER_OPTIONS, "unix_socket_directories": str(self.base), "port": PORT}
        args = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for name, value in options.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                **self._as_owner(),
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self.proc.returncode}:\n{self._log()}")
            try:
                psycopg.connect(self.conninfo("postgres"), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PostgresError(f"postgres did not start:\n{self._log()}") from None
                time.sleep(0.05)

    def _log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def conninfo(self, dbname: str) -> str:
        return f"host={self.base} port={PORT} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy (psycopg 3) URL of database ``dbname`` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={self.base}&port={PORT}"

    def new_database(self) -> str:
        """Create a new, empty database and return its SQLAlchemy URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and delete its files."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=30)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def engines_disposed() -> Iterator[None]:
    """On exit, dispose of every SQLAlchemy engine that connected meanwhile, so that no
    pooled connection is left to be garbage-collected later with a ResourceWarning."""
    engines: set[Engine] = set()

    def seen(conn: Connection) -> None:
        engines.add(conn.engine)

    event.listen(Engine, "engine_connect", seen)
    try:
        yield
    finally:
        event.remove(Engine, "engine_connect", seen)
        for engine in engines:
            engine.dispose()


@contextlib.contextmanager
def running_server(bindir: Path | None = None) -> Iterator[PostgresServer]:
    """A started server, stopped and deleted on exit (``PostgresError`` if it cannot)."""
    bindir = bindir or server_bindir()
    if bindir is None:
        raise PostgresError(NOT_INSTALLED)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
