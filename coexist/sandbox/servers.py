"""The local sandbox: a private PostgreSQL (the PSA) and a private MariaDB (the legacy ERP).

Both run from the system's binaries on free loopback ports with their data under
`<data_dir>/sandbox/`. Their ports, pids and generated passwords live in `state.json`
(mode 0600) so every other command finds them without flags. Stopping is always by pid.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from cdc import pgddl
from cdc.config import MariaDBSource, PostgresSource
from coexist.config import Settings
from core.errors import TerminalError

PSA_DB = "psa"
ERP_DB = "erp"
APP_USER = "coexist"
CDC_USER = "coexist_cdc"
SQL_DIR = Path(__file__).resolve().parents[2] / "sql"


class SandboxError(TerminalError):
    """The sandbox could not do what was asked; the message says what to do."""


@dataclass
class ServerState:
    port: int
    pid: int | None
    data_dir: str
    socket_dir: str
    log_file: str
    app_password: str
    cdc_password: str
    # The superuser's (postgres / root) password; empty only in sandboxes made before logins were required.
    admin_password: str = ""


@dataclass
class SandboxState:
    root: str
    postgres: ServerState
    mariadb: ServerState
    created_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, root: Path) -> SandboxState | None:
        path = root / "state.json"
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return cls(
            root=raw["root"],
            postgres=ServerState(**raw["postgres"]),
            mariadb=ServerState(**raw["mariadb"]),
            created_at=raw.get("created_at", 0.0),
        )

    def save(self) -> None:
        path = Path(self.root) / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Free to listen on, as the servers do it (SO_REUSEADDR: a port in TIME_WAIT is reusable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _is_root() -> bool:
    return os.geteuid() == 0


def _as_user(user: str, argv: list[str]) -> list[str]:
    """Database servers refuse to run as root: drop to their own system user when we are root."""
    return ["runuser", "-u", user, "--", *argv] if _is_root() else argv


def _chown(path: Path, user: str) -> None:
    if _is_root():
        shutil.chown(path, user=user, group=None)


def _make_traversable(path: Path) -> None:
    """The postgres/mysql users must reach their data dir through every parent."""
    if not _is_root():
        return
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            try:
                os.chmod(parent, mode | 0o001)
            except PermissionError as exc:
                raise SandboxError(f"{parent} is not traversable by the database users: {exc}") from None


def pid_alive(pid: int | None, needle: str) -> bool:
    """True when `pid` runs and its command line mentions `needle` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if ") Z" in stat:
            return False
    except OSError:
        return False
    return needle in cmdline


def stop_pid(pid: int | None, needle: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Stop a process by pid and wait for it to go; SIGKILL after `timeout`. True if it was running."""
    if not pid_alive(pid, needle):
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, needle):
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not pid_alive(pid, needle):
            break
        time.sleep(0.05)
    return True


def orphans_in(data_dir: str) -> list[int]:
    """Pids whose working directory is `data_dir`: PostgreSQL backends left behind by a killed postmaster."""
    target = os.path.realpath(data_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/cwd") == target:
                found.append(int(entry))
        except OSError:
            continue
    return found


def reap_orphans(data_dir: str) -> None:
    for pid in orphans_in(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while orphans_in(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)


def _pg_bindir() -> Path:
    with contextlib.suppress(FileNotFoundError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not found:
        raise SandboxError("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    return Path(found[0]).parent


def _mariadb_bin(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SandboxError(f"MariaDB binary {name} not found: apt-get install mariadb-server")


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


def _short_socket_dir(owner: str) -> str:
    """Unix socket paths are capped at 107 bytes, so sockets live in a short temp dir."""
    path = Path(tempfile.mkdtemp(prefix=f"cx-{owner[:2]}-", dir="/tmp"))
    os.chmod(path, 0o755)
    _chown(path, owner)
    return str(path)


# ---------------------------------------------------------------- PostgreSQL


def _pg_connect(state: ServerState, dbname: str = "postgres") -> psycopg.Connection:
    """The superuser, over the socket, with its password (the sandbox trusts no local account)."""
    return psycopg.connect(
        host=state.socket_dir,
        port=state.port,
        dbname=dbname,
        user="postgres",
        password=state.admin_password or None,
        autocommit=True,
    )


def _pg_ready(state: ServerState) -> bool:
    try:
        with _pg_connect(state) as conn:
            conn.execute("select 1")
        return True
    except psycopg.Error:
        return False


def _pg_start(state: ServerState) -> None:
    bindir = _pg_bindir()
    data = Path(state.data_dir)
    if not Path(state.socket_dir).is_dir():
        state.socket_dir = _short_socket_dir("postgres")
    opts = (
        f"-c listen_addresses=127.0.0.1 -c port={state.port} -c unix_socket_directories={state.socket_dir} "
        "-c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 "
        "-c shared_buffers=128MB -c fsync=on -c max_connections=60"
    )
    try:
        _run(
            _as_user(
                "postgres",
                [str(bindir / "pg_ctl"), "-D", str(data), "-l", state.log_file, "-o", opts, "-w", "-t", "60", "start"],
            ),
            "pg_ctl start",
        )
    except SandboxError as exc:
        tail = "\n".join(Path(state.log_file).read_text(errors="replace").splitlines()[-8:])
        raise SandboxError(f"{exc}\nlog tail ({state.log_file}):\n{tail}") from None
    pid_file = data / "postmaster.pid"
    state.pid = int(pid_file.read_text().splitlines()[0])


def _pg_init(root: Path) -> ServerState:
    bindir = _pg_bindir()
    data = root / "postgres"
    data.mkdir(parents=True, exist_ok=True)
    _make_traversable(data)
    _chown(data, "postgres")
    os.chmod(data, 0o700)
    log = root / "postgres.log"
    log.touch()
    _chown(log, "postgres")
    admin_password = secrets.token_urlsafe(18)
    # The superuser's password reaches initdb through a file only its user can read, removed right after.
    pwfile = root / ".pg-superuser"
    pwfile.write_text(admin_password + "\n")
    os.chmod(pwfile, 0o600)
    _chown(pwfile, "postgres")
    try:
        _run(
            _as_user(
                "postgres",
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ],
            ),
            "initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    return ServerState(
        port=free_port(),
        pid=None,
        data_dir=str(data),
        socket_dir=_short_socket_dir("postgres"),
        log_file=str(log),
        app_password=secrets.token_urlsafe(18),
        cdc_password=secrets.token_urlsafe(18),
        admin_password=admin_password,
    )


def _pg_provision(state: ServerState) -> None:
    with _pg_connect(state) as conn:
        for user, password, extra in (
            (APP_USER, state.app_password, "CREATEDB"),
            (CDC_USER, state.cdc_password, "REPLICATION"),
        ):
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(f"{verb} ROLE {user} LOGIN {extra} PASSWORD '{password}'")
        if not conn.execute("select 1 from pg_database where datname = %s", (PSA_DB,)).fetchone():
            conn.execute(f"CREATE DATABASE {PSA_DB} OWNER {APP_USER}")
    with _pg_connect(state, PSA_DB) as conn:
        conn.execute(f"GRANT CONNECT ON DATABASE {PSA_DB} TO {CDC_USER}")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {CDC_USER}")
        conn.execute(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {APP_USER} IN SCHEMA public GRANT SELECT ON TABLES TO {CDC_USER}"
        )
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {CDC_USER}")
        conn.execute(f"ALTER SCHEMA public OWNER TO {APP_USER}")
        # FOR ALL TABLES needs a superuser; Debezium then runs with publication.autocreate.mode=disabled.
        if not conn.execute("SELECT 1 FROM pg_publication WHERE pubname = 'coexist_pub'").fetchone():
            conn.execute("CREATE PUBLICATION coexist_pub FOR ALL TABLES")
        pgddl.install(conn, "public", grant_to=CDC_USER)  # DROP/RENAME TABLE into the stream


# ---------------------------------------------------------------- MariaDB


def _my_cnf(state: ServerState) -> Path:
    return Path(state.data_dir).parent / "mariadb.cnf"


def _write_my_cnf(state: ServerState) -> None:
    data = Path(state.data_dir)
    _my_cnf(state).write_text(
        "\n".join(
            [
                "[mariadbd]",
                f"datadir={data}",
                f"socket={state.socket_dir}/mysqld.sock",
                f"port={state.port}",
                "bind-address=127.0.0.1",
                f"pid-file={data}/mariadbd.pid",
                f"log-error={state.log_file}",
                "server_id=1",
                f"log_bin={data}/mysql-bin",
                "binlog_format=ROW",
                "binlog_row_image=FULL",
                "binlog_row_metadata=FULL",
                "gtid_strict_mode=ON",
                "character-set-server=utf8mb4",
                "collation-server=utf8mb4_unicode_ci",
                "skip-name-resolve",
                "local_infile=1",
                "max_allowed_packet=256M",
                "innodb_buffer_pool_size=256M",
                "innodb_flush_log_at_trx_commit=1",
                "sync_binlog=1",
                "max_connections=100",
                "",
            ]
        )
    )


def _my_connect(state: ServerState, database: str | None = None, password: str | None = None) -> pymysql.Connection:
    """root over the socket, with its password (a fresh server's root has none until provisioning sets it)."""
    return pymysql.connect(
        unix_socket=f"{state.socket_dir}/mysqld.sock",
        user="root",
        password=state.admin_password if password is None else password,
        database=database,
        autocommit=True,
        connect_timeout=3,
    )


def _my_ready(state: ServerState) -> bool:
    try:
        with _my_connect(state) as conn, conn.cursor() as cur:
            cur.execute("select 1")
        return True
    except pymysql.err.OperationalError as exc:
        return bool(exc.args and exc.args[0] == 1045)  # it answers; the root password is set at provisioning
    except pymysql.Error:
        return False


def _my_init(root: Path) -> ServerState:
    data = root / "mariadb"
    data.mkdir(parents=True, exist_ok=True)
    _make_traversable(data)
    log = root / "mariadb.log"
    log.touch()
    if _is_root():
        for path in (data, log):
            shutil.chown(path, user="mysql", group="mysql")
    state = ServerState(
        port=free_port(),
        pid=None,
        data_dir=str(data),
        socket_dir=_short_socket_dir("mysql"),
        log_file=str(log),
        app_password=secrets.token_urlsafe(18),
        cdc_password=secrets.token_urlsafe(18),
        admin_password=secrets.token_urlsafe(18),
    )
    argv = [
        _mariadb_bin("mariadb-install-db"),
        f"--datadir={data}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--skip-name-resolve",
    ]
    if _is_root():
        argv.insert(1, "--user=mysql")
    _run(argv, "mariadb-install-db")
    return state


def _my_start(state: ServerState) -> None:
    if not Path(state.socket_dir).is_dir():
        state.socket_dir = _short_socket_dir("mysql")
    _write_my_cnf(state)
    argv = [_mariadb_bin("mariadbd"), f"--defaults-file={_my_cnf(state)}"]
    if _is_root():
        argv.append("--user=mysql")
    with open(state.log_file, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    state.pid = proc.pid
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(state.log_file).read_text(errors="replace")[-1500:]
            raise SandboxError(f"mariadbd exited with {proc.returncode}; log tail:\n{tail}")
        if _my_ready(state):
            return
        time.sleep(0.1)
    raise SandboxError(f"mariadbd did not answer within 60 s; see {state.log_file}")


def _my_root(state: ServerState) -> pymysql.Connection:
    """root with its password; on a fresh server (empty root password) set the password first."""
    try:
        return _my_connect(state)
    except pymysql.err.OperationalError as exc:
        if not (exc.args and exc.args[0] == 1045 and state.admin_password):
            raise
    conn = _my_connect(state, password="")
    with conn.cursor() as cur:
        cur.execute("SET sql_log_bin = 0")  # passwords never reach the binlog that capture reads
        cur.execute(f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{state.admin_password}'")
        cur.execute("SELECT user, host FROM mysql.user WHERE user IN ('root', '') AND host <> 'localhost'")
        for user, host in cur.fetchall():
            cur.execute("DROP USER %s@%s", (user, host))
        cur.execute("DELETE FROM mysql.global_priv WHERE user = ''")
        cur.execute("FLUSH PRIVILEGES")
    return conn


def _my_provision(state: ServerState) -> None:
    grants = "SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR, LOCK TABLES"
    with _my_root(state) as conn, conn.cursor() as cur:
        cur.execute("SET sql_log_bin = 0")  # account statements (with passwords) stay out of the binlog
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {ERP_DB} CHARACTER SET utf8mb4")
        for user, password in ((APP_USER, state.app_password), (CDC_USER, state.cdc_password)):
            # Passwords come from token_urlsafe: only [A-Za-z0-9_-], safe to inline.
            cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(f"ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON {ERP_DB}.* TO '{APP_USER}'@'%'")
        cur.execute(f"GRANT FILE ON *.* TO '{APP_USER}'@'%'")
        cur.execute(f"GRANT {grants} ON *.* TO '{CDC_USER}'@'%'")
        cur.execute("FLUSH PRIVILEGES")


# ---------------------------------------------------------------- public API


def _servers_alive(state: SandboxState) -> tuple[bool, bool]:
    return pid_alive(state.postgres.pid, "postgres"), pid_alive(state.mariadb.pid, "mariadbd")


def _pid_from_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _adopt_running(state: SandboxState) -> None:
    """A server restarted from outside (`pg_ctl restart`) runs under a new pid: adopt it from its own pid file,
    never take it for an orphan."""
    for server, pid_file, needle in (
        (state.postgres, Path(state.postgres.data_dir) / "postmaster.pid", "postgres"),
        (state.mariadb, Path(state.mariadb.data_dir) / "mariadbd.pid", "mariadbd"),
    ):
        if pid_alive(server.pid, needle):
            continue
        running = _pid_from_file(pid_file)
        if running and pid_alive(running, needle):
            server.pid = running
            state.save()


def up(settings: Settings) -> SandboxState:
    """Start (or adopt) both servers; idempotent. Recovers from a crash by restarting on the same data."""
    root = settings.sandbox_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    state = SandboxState.load(root)
    if state is None:
        state = SandboxState(root=str(root), postgres=_pg_init(root), mariadb=_my_init(root))
        state.save()
    _adopt_running(state)
    pg_alive, my_alive = _servers_alive(state)
    if not pg_alive:
        reap_orphans(state.postgres.data_dir)
        # A killed postmaster can linger as a zombie, which PostgreSQL takes for a live server.
        (Path(state.postgres.data_dir) / "postmaster.pid").unlink(missing_ok=True)
        for stale in Path(state.postgres.socket_dir).glob(".s.PGSQL.*"):
            stale.unlink(missing_ok=True)
        if not port_is_free(state.postgres.port):
            state.postgres.port = free_port()
        _pg_start(state.postgres)
        state.save()
    if not my_alive:
        if not port_is_free(state.mariadb.port):
            state.mariadb.port = free_port()
        stale = Path(state.mariadb.data_dir) / "mariadbd.pid"
        stale.unlink(missing_ok=True)
        _my_start(state.mariadb)
        state.save()
    _pg_provision(state.postgres)
    _my_provision(state.mariadb)
    apply_schemas(state)
    return state


def down(settings: Settings) -> dict[str, bool]:
    """Stop both servers by pid. Returns which were running. Safe after a crash or a second call."""
    root = settings.sandbox_dir.resolve()
    state = SandboxState.load(root)
    if state is None:
        return {"postgres": False, "mariadb": False}
    # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients to leave.
    stopped = {
        "postgres": stop_pid(state.postgres.pid, "postgres", signal.SIGINT),
        "mariadb": stop_pid(state.mariadb.pid, "mariadbd", signal.SIGTERM),
    }
    reap_orphans(state.postgres.data_dir)
    state.postgres.pid = None
    state.mariadb.pid = None
    state.save()
    return stopped


def destroy(settings: Settings) -> None:
    """Stop both servers and delete their data."""
    down(settings)
    state = SandboxState.load(settings.sandbox_dir.resolve())
    if state is not None:
        for server in (state.postgres, state.mariadb):
            shutil.rmtree(server.socket_dir, ignore_errors=True)
    shutil.rmtree(settings.sandbox_dir, ignore_errors=True)


def load_state(settings: Settings) -> SandboxState | None:
    return SandboxState.load(settings.sandbox_dir.resolve())


def require_state(settings: Settings) -> SandboxState:
    state = load_state(settings)
    if state is None:
        raise SandboxError(f"no sandbox under {settings.sandbox_dir}: run `coexist sandbox up` first")
    return state


def sandbox_sources(state: SandboxState) -> dict[str, PostgresSource | MariaDBSource]:
    """The sources that every command uses when there is no configuration file."""
    return {
        "psa": PostgresSource(
            kind="postgres",
            port=state.postgres.port,
            database=PSA_DB,
            user=CDC_USER,
            password=state.postgres.cdc_password,
        ),
        "erp": MariaDBSource(
            kind="mariadb",
            port=state.mariadb.port,
            database=ERP_DB,
            user=CDC_USER,
            password=state.mariadb.cdc_password,
        ),
    }


def pg_app_conninfo(state: SandboxState) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": state.postgres.port,
        "dbname": PSA_DB,
        "user": APP_USER,
        "password": state.postgres.app_password,
    }


def my_app_conninfo(state: SandboxState) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": state.mariadb.port,
        "database": ERP_DB,
        "user": APP_USER,
        "password": state.mariadb.app_password,
    }


def pg_app_connect(state: SandboxState, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(**pg_app_conninfo(state), autocommit=autocommit)


def my_app_connect(state: SandboxState, autocommit: bool = True) -> pymysql.Connection:
    return pymysql.connect(**my_app_conninfo(state), autocommit=autocommit, local_infile=True, charset="utf8mb4")


def apply_schemas(state: SandboxState) -> None:
    """Create the PSA and ERP schemas if they are not there yet."""
    with pg_app_connect(state) as conn:
        present = conn.execute("select to_regclass('public.time_entries')").fetchone()
        if present is None or present[0] is None:
            conn.execute((SQL_DIR / "psa_schema.sql").read_text())
    with my_app_connect(state) as conn, conn.cursor() as cur:
        cur.execute("show tables like 'labor_postings'")
        if cur.fetchone() is None:
            for statement in _split_sql((SQL_DIR / "erp_schema.sql").read_text()):
                cur.execute(statement)
    with _pg_connect(state.postgres, PSA_DB) as conn:
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {CDC_USER}")


def reset_data(state: SandboxState) -> None:
    """Drop and recreate both schemas (used by `seed --reset`)."""
    with pg_app_connect(state) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    # The new schema lost the default privileges that let the capture user read new tables.
    _pg_provision(state.postgres)
    with my_app_connect(state) as conn, conn.cursor() as cur:
        cur.execute("SET FOREIGN_KEY_CHECKS = 0")
        cur.execute("SHOW TABLES")
        for (table,) in cur.fetchall():
            cur.execute(f"DROP TABLE `{table}`")
    apply_schemas(state)


def _split_sql(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [chunk.strip() for chunk in "\n".join(lines).split(";") if chunk.strip()]


def table_counts(state: SandboxState) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"psa": {}, "erp": {}}
    with pg_app_connect(state) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.tables where table_schema='public' "
                "and table_type='BASE TABLE' order by 1"
            ).fetchall()
        ]
        for table in tables:
            row = conn.execute(f'select count(*) from "{table}"').fetchone()
            counts["psa"][table] = int(row[0]) if row else 0
    with my_app_connect(state) as conn, conn.cursor() as cur:
        cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
        for table, _kind in sorted(cur.fetchall()):
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            fetched = cur.fetchone()
            counts["erp"][table] = int(fetched[0]) if fetched else 0
    return counts


def status(settings: Settings, with_counts: bool = True) -> dict[str, Any]:
    """What `coexist sandbox status` prints: URLs, ports, pids, liveness, row counts."""
    state = load_state(settings)
    report: dict[str, Any] = {
        "data_dir": str(settings.sandbox_dir.resolve()),
        "warehouse": str(settings.warehouse_path.resolve()),
        "initialised": state is not None,
    }
    if state is None:
        return report
    pg_alive, my_alive = _servers_alive(state)
    pg_up = pg_alive and _pg_ready(state.postgres)
    my_up = my_alive and _my_ready(state.mariadb)
    report["postgres"] = {
        "role": "PSA",
        "up": pg_up,
        "pid": state.postgres.pid if pg_alive else None,
        "port": state.postgres.port,
        "url": f"postgresql://{APP_USER}@127.0.0.1:{state.postgres.port}/{PSA_DB}",
        "cdc_url": f"postgresql://{CDC_USER}@127.0.0.1:{state.postgres.port}/{PSA_DB}",
        "data_dir": state.postgres.data_dir,
        "log": state.postgres.log_file,
    }
    report["mariadb"] = {
        "role": "ERP",
        "up": my_up,
        "pid": state.mariadb.pid if my_alive else None,
        "port": state.mariadb.port,
        "url": f"mysql://{APP_USER}@127.0.0.1:{state.mariadb.port}/{ERP_DB}",
        "cdc_url": f"mysql://{CDC_USER}@127.0.0.1:{state.mariadb.port}/{ERP_DB}",
        "data_dir": state.mariadb.data_dir,
        "log": state.mariadb.log_file,
    }
    if with_counts and pg_up and my_up:
        report["row_counts"] = table_counts(state)
    return report
