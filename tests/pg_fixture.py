"""A throwaway PostgreSQL server for tests and benchmarks: initdb in a temp folder, pg_ctl on
a free local port (127.0.0.1 only, unix socket inside the folder), stopped and deleted after.

Debian's server binaries live in /usr/lib/postgresql/<version>/bin; initdb refuses to run
as root, so as root the folder is given to the ``postgres`` user and the binaries run as it
(``runuser``). ``unavailable()`` says why no server can start here (None when one can).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL server bin folder ($PG_BIN first), or None."""
    if os.environ.get("PG_BIN") and (Path(os.environ["PG_BIN"]) / "initdb").exists():
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """Why a throwaway server cannot run here, or None."""
    if bin_dir() is None:
        return "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 missing: pip install 'modelzip[distributed]'"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], log: Path | None = None) -> None:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout)[-1500:]
        if log is not None and log.exists():
            tail += "\n" + log.read_text()[-1500:]
        raise RuntimeError(f"{' '.join(args)} failed ({out.returncode}): {tail}")


@contextmanager
def postgres() -> Iterator[str]:
    """Start a server; yields the admin URL ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    bins = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="modelzip-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    started = False
    try:
        _run([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--no-sync", "--no-instructions"])
        opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=200 -c synchronous_commit=off")
        _run([str(bins / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log), "-w",
              "-t", "60", "start"], log)
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            try:
                _run([str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            except RuntimeError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def new_database(admin_url: str, name: str) -> str:
    """Create an empty database ``name`` on the server; returns its URL."""
    import psycopg2

    con = psycopg2.connect(admin_url)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def wait_for(predicate, timeout: float = 60.0, poll: float = 0.1) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(poll)
    return False
