"""The PostgreSQL store behind `make server`: a data folder under the server's root, listening on 127.0.0.1
alone, behind passwords (scram-sha-256).

At its first start two passwords are drawn and written to `<root>/pgpass`, in libpq's password-file format,
readable by the owner alone: one for `tfrexp_admin`, the superuser that makes the store, and one for `mlflow`,
the role MLflow logs in as, which owns its database and is no superuser. Clients (psql here, the MLflow server)
find them through PGPASSFILE, so no password is ever on a command line. PostgreSQL refuses to run as root, so
under root its server programs run as the user `postgres`, which owns the data folder.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from tfrexp.errors import TfrexpError

PG_USER = "postgres"  # the unprivileged user the PostgreSQL packages create, for running it under root
ADMIN = "tfrexp_admin"  # the superuser: makes the role and the database, nothing else
DATABASE = "mlflow"  # both MLflow's database and its role (no superuser)
STUDIES = "optuna"  # the database of Optuna searches (hydra.sweeper.storage), owned by the same role
PASSWORDS = "pgpass"


class ServerError(TfrexpError):
    """The tracking server cannot be started; the message names the value or program at fault."""


def bindir() -> Path:
    """PostgreSQL's programs: where pg_config says they are, else the newest /usr/lib/postgresql/*/bin."""
    candidates = []
    if shutil.which("pg_config"):
        # pg_config also ships with the client library alone, whose bindir may have no initdb.
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda path: [int(part) for part in path.parent.name.split(".")
                                                       if part.isdigit()], reverse=True)
    for found_bindir in candidates:
        if (found_bindir / "initdb").is_file() and (found_bindir / "pg_ctl").is_file():
            return found_bindir
    raise ServerError("no PostgreSQL server found: neither `pg_config --bindir` nor /usr/lib/postgresql/*/bin has "
                      "initdb and pg_ctl (install the postgresql package)")


def client_environment(root: Path) -> dict[str, str]:
    """What a client of this store needs in its environment: where the passwords are."""
    return {"PGPASSFILE": str(root / PASSWORDS)}


def backend_uri(pg_port: int) -> str:
    # The driver of the `server` extra (psycopg 3), named: SQLAlchemy 2.0 would pick psycopg2. No password here:
    # libpq reads it from PGPASSFILE.
    return f"postgresql+psycopg://{DATABASE}@127.0.0.1:{pg_port}/{DATABASE}"


def study_storage_uri(pg_port: int) -> str:
    """Where searches keep their Optuna studies, for every job of a sweep to reach (hydra.sweeper.storage); the
    password, again, from PGPASSFILE."""
    return f"postgresql+psycopg://{DATABASE}@127.0.0.1:{pg_port}/{STUDIES}"


def start(root: Path, pg_port: int, durable: bool) -> None:
    """Make the store at its first start (passwords, data folder, role, database), then start it."""
    data = root / "pgdata"
    _prepare_data_folder(data)
    if not (data / "PG_VERSION").is_file():
        _make_store(root, data, durable)
    elif not (root / PASSWORDS).is_file():
        raise ServerError(f"{data} was made by an earlier tfrexp, with no password: stop it (python -m "
                          f"tfrexp.tracking.server stop --root {root}) and delete {data} to start afresh (its runs "
                          "are lost)")
    # TCP on loopback only, and no Unix socket (-k ''): nothing else on the machine needs one, and a socket
    # path under a deep checkout can pass the 107-byte limit of socket names.
    options = f"-c listen_addresses=127.0.0.1 -p {pg_port} -k ''" + ("" if durable else " -c fsync=off")
    _run([bindir() / "pg_ctl", "-D", data, "-l", data / "postgresql.log", "-w", "-o", options, "start"],
         f"starting PostgreSQL on 127.0.0.1:{pg_port}", root, log=data / "postgresql.log")
    _ensure_database(root, pg_port)


def is_running(root: Path) -> bool:
    data = root / "pgdata"
    return (data / "PG_VERSION").is_file() and _as_postgres([bindir() / "pg_ctl", "-D", data, "status"],
                                                           root).returncode == 0


def stop(root: Path) -> bool:
    """Stop the store of root if it runs; whether it did."""
    if not is_running(root):
        return False
    data = root / "pgdata"
    _run([bindir() / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], f"pg_ctl stop -D {data}", root)
    return True


def _make_store(root: Path, data: Path, durable: bool) -> None:
    """Draw the passwords, then initdb with the superuser's; its first password file goes as soon as it is read."""
    passwords = {ADMIN: secrets.token_urlsafe(24), DATABASE: secrets.token_urlsafe(24)}
    _write_private(root / PASSWORDS, "".join(f"127.0.0.1:*:*:{role}:{word}\n" for role, word in passwords.items()))
    first = root / ".initdb-password"
    _write_private(first, passwords[ADMIN] + "\n", owner=_pg_user() if os.geteuid() == 0 else None)
    try:
        _run([bindir() / "initdb", "-D", data, "-U", ADMIN, f"--pwfile={first}", "--auth=scram-sha-256", "-E", "UTF8",
              "--locale=C.UTF-8", *([] if durable else ["--no-sync"])], f"initdb -D {data}", root)
    finally:
        first.unlink(missing_ok=True)


def _ensure_database(root: Path, pg_port: int) -> None:
    """MLflow's role, its database and the studies' database, unless they exist (a restart keeps the store). The SQL goes through
    stdin, since a password in a command line is visible to every local account."""
    word = next(line.rsplit(":", 1)[1] for line in (root / PASSWORDS).read_text().splitlines()
                if line.split(":")[3] == DATABASE)
    _psql(root, pg_port, f"""
        SELECT 'CREATE ROLE {DATABASE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE'
        WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{DATABASE}') \\gexec
        ALTER ROLE {DATABASE} PASSWORD '{word}';
        SELECT 'CREATE DATABASE {DATABASE} OWNER {DATABASE}'
        WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{DATABASE}') \\gexec
        SELECT 'CREATE DATABASE {STUDIES} OWNER {DATABASE}'
        WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{STUDIES}') \\gexec
    """)


def _psql(root: Path, pg_port: int, script: str) -> None:
    """Run SQL as the superuser, over TCP with its password from the file (psql is a client: it runs as us)."""
    command = [str(bindir() / "psql"), "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p",
               str(pg_port), "-U", ADMIN, "-d", "postgres", "-f", "-"]
    done = subprocess.run(command, input=script, capture_output=True, text=True, cwd=root,
                          env={**os.environ, **client_environment(root)})
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ServerError(f"making MLflow's role and database failed: {lines[0]}")


def _write_private(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    """A file only its owner can read, created so from the start."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        raise ServerError(f"PostgreSQL refuses to run as root and there is no user {PG_USER!r} to run it "
                          f"(install the postgresql package, or run as an unprivileged user)") from None


def _prepare_data_folder(data: Path) -> None:
    data.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() != 0:
        return
    user = _pg_user()
    os.chown(data, user.pw_uid, user.pw_gid)
    data.chmod(0o700)
    if _as_postgres(["test", "-w", data, "-a", "-x", data], data.parent).returncode != 0:
        raise ServerError(f"the user {PG_USER!r} cannot reach {data}: every folder above it needs o+x "
                          f"(or choose another --root)")


def _as_postgres(command: list, cwd: Path) -> subprocess.CompletedProcess:
    """A command as the user PostgreSQL runs as: `postgres` under root (PostgreSQL refuses root), else us.
    cwd is a folder that user can enter: some PostgreSQL programs complain about one they cannot."""
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *map(str, command)], capture_output=True, text=True, cwd=cwd)


def _run(command: list, what: str, cwd: Path, log: Path | None = None) -> subprocess.CompletedProcess:
    done = _as_postgres(command, cwd)
    if done.returncode != 0:
        # The first line: PostgreSQL's programs print the error, then hints.
        output = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise ServerError(f"{what} failed: {output.splitlines()[0]}" + (f" (see {log})" if log else ""))
    return done
