"""A throwaway PostgreSQL server for tests: ``initdb`` into a temporary folder, ``pg_ctl start`` on a
free port of 127.0.0.1, removed at the end.

    with throwaway_postgres() as pg:
        pg.url        # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres (trust auth)
        pg.stop()     # an outage: the server goes away (the data folder stays)
        pg.start()    # back on the same port with the same data

It needs the server binaries (Debian: ``apt-get install postgresql``; found in
``/usr/lib/postgresql/*/bin`` or on PATH). PostgreSQL refuses to run as root, so as root the server
runs as the ``postgres`` system user (``runuser -u postgres --``), in a folder that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from processes import free_port

HOW_TO_GET_ONE = (
    "`apt-get install postgresql` (the tests then start a throwaway server with its initdb and pg_ctl), "
    "or start one at 127.0.0.1:5432 with a database `test` for user postgres, "
    "or set TUWEN_TEST_POSTGRES_URL=postgresql+psycopg://USER@HOST:PORT/DB"
)


class PostgresUnavailable(RuntimeError):
    """No server binaries, or they would not start: the message says why and how to get them."""


def server_bindir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl`` (the newest of /usr/lib/postgresql/*/bin, else PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    for folder in reversed(found):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(os.path.realpath(initdb)).parent
    return None


class Postgres:
    """One throwaway server: ``url``, ``port``, ``data``; ``start()`` and ``stop()`` (idempotent)."""

    def __init__(self, bindir: Path, folder: Path, port: int, run_as: str | None):
        self.bindir, self.folder, self.port, self.run_as = bindir, folder, port, run_as
        self.data = folder / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [str(self.bindir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.folder)
        except (OSError, subprocess.TimeoutExpired) as exc:  # no runuser, or a server that hangs
            raise PostgresUnavailable(f"{tool} could not run: {exc}") from exc
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
            )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start (or restart after ``stop()``) on the same port with the same data; waits until ready."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -F -c max_connections=100"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop at once (``-m immediate``: like a crash or a cut network, no goodbye to the clients)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """A fresh server, started; stopped and its folder removed on exit. Raises
    ``PostgresUnavailable`` (with how to get one) when there are no binaries or it will not start."""
    bindir = server_bindir()
    if bindir is None:
        raise PostgresUnavailable(f"no PostgreSQL server binaries (initdb, pg_ctl): {HOW_TO_GET_ONE}")
    run_as = None
    folder = Path(tempfile.mkdtemp(prefix="tuwen-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresUnavailable(
                f"running as root and no `postgres` user to run the server as: {HOW_TO_GET_ONE}"
            ) from None
        run_as = "postgres"
        os.chmod(folder, 0o700)
        os.chown(folder, user.pw_uid, user.pw_gid)
    server = Postgres(bindir, folder, free_port(), run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
