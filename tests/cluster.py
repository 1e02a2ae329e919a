"""A real one-node Slurm cluster and a real PostgreSQL server, started by the tests.

``slurm_cluster(root)`` starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge,
which ``make system-deps`` installs) with a configuration written under ``root``: this
machine as the only node with its cores and memory, no cgroups (``proctrack/linuxproc``,
``task/none``), no accounting database (``sacct`` then asks slurmctld, and the jobs stay
listed for ``MinJobAge`` seconds after they end), free ports, everything under ``root``. It
yields the environment the clients need (``SLURM_CONF``) and shuts the daemons down on exit.
The configuration is also put where Slurm's commands look without ``SLURM_CONF``
(/etc/slurm/slurm.conf, as a Debian install has it), unless another one is there already.
The daemons run as the test's user: root on CI (``.ci/run``), as Slurm's ``SlurmUser``.

``postgres_server()`` initialises a PostgreSQL cluster owned by the ``postgres`` system user (PostgreSQL refuses to run as root), starts it on 127.0.0.1 at a
free port and yields a ``postgresql://`` URI of a fresh database with a password user.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by asrflow's tests/cluster.py for a one-node test cluster; removed when it stops\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, what: str, log: Path | None = None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not come up in {timeout_s:.0f} s\n{tail}")
        time.sleep(0.3)


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def slurm_conf(root: Path, cpus: int, memory_mb: int) -> str:
    host = socket.gethostname()
    user = getpass.getuser()
    return "\n".join([
        "ClusterName=asrflowtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={root}/munge.socket",
        "CredType=cred/munge",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "MinJobAge=3600",           # finished jobs stay visible to squeue/scontrol (no accounting DB)
        "ReturnToService=2",
        "MpiDefault=none",
        "KillWait=5",
        "OverTimeLimit=0",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@contextmanager
def slurm_cluster(root: Path) -> Iterator[dict[str, str]]:
    """A one-node Slurm cluster under ``root``; yields the clients' environment."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            raise RuntimeError(f"{tool} is not installed: `make system-deps` installs slurm-wlm and munge")
    root.mkdir(parents=True, exist_ok=True)
    for d in ("state", "spool", "log"):
        (root / d).mkdir(exist_ok=True)
    root.chmod(0o755)  # munge wants the socket's directory searchable by all
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(MARK + slurm_conf(root, os.cpu_count() or 1, int(_memory_mb() * 0.8)))
    # Also where Slurm's commands look by default: the Slurm executor's job steps run `srun`
    # with every SLURM_* variable but the job's identity removed, SLURM_CONF included.
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.read_text(errors="replace").startswith(MARK):
        raise RuntimeError(f"{SYSTEM_CONF} exists and is not this test's: a Slurm installation is configured "
                           "on this machine, and the test will not overwrite it")
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(conf, SYSTEM_CONF)
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    started: list[list[str]] = []
    try:
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={root}/munge.socket",
                        f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed",
                        f"--log-file={root}/log/munged.log"], check=True, capture_output=True)
        started.append(["munged", "--stop", f"--socket={root}/munge.socket"])
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, capture_output=True, env=full_env)
        started.append(["scontrol", "shutdown"])
        subprocess.run(["slurmd", "-f", str(conf)], check=True, capture_output=True, env=full_env)

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=full_env)
            return out.returncode == 0 and out.stdout.strip() == "idle"

        _wait(idle, "slurmctld and slurmd", root / "log/slurmctld.log")
        yield env
    finally:
        for cmd in reversed(started):  # `scontrol shutdown` stops slurmctld and every slurmd
            subprocess.run(cmd, capture_output=True, env=full_env)
        for pidfile in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            _kill_after(root / pidfile)
        if SYSTEM_CONF.exists() and SYSTEM_CONF.read_text(errors="replace").startswith(MARK):
            SYSTEM_CONF.unlink()


def _kill_after(pidfile: Path, grace_s: float = 10.0) -> None:
    """The daemon named by ``pidfile`` gone: given ``grace_s`` to exit, then SIGKILL."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def jobs(env: dict[str, str]) -> list[dict[str, str]]:
    """Every job slurmctld knows (finished ones for MinJobAge), as ``scontrol show job -o`` fields."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    rows = []
    for line in out.splitlines():
        if not line.strip() or line.startswith("No jobs"):
            continue
        fields: dict[str, str] = {}
        for word in line.split():
            k, _, v = word.partition("=")
            if k and _:
                fields[k] = v
        rows.append(fields)
    return rows


@contextmanager
def postgres_server(db: str = "mlflow", user: str = "asrflow", password: str = "s3cret-pw") -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 (its files in a fresh directory under /tmp, removed
    afterwards: pytest's own temporary directories are private to the test's user, and the
    server runs as ``postgres``); yields ``postgresql://user:password@host:port/db``."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"{PG_BIN}/initdb is missing: `make system-deps` installs postgresql")
    root = Path(tempfile.mkdtemp(prefix="asrflow-postgres-"))
    data, log = root / "pgdata", root / "postgres.log"
    as_pg: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL will not run as root: its own system user runs it
        shutil.chown(root, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pwfile = root / "superuser-password"
    pwfile.write_text("postgres-pw\n")
    if as_pg:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
                    f"--pwfile={pwfile}", "-E", "UTF8"], check=True, capture_output=True, text=True)
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                    "-c max_connections=200", "start"], check=True, capture_output=True, text=True)
    admin = {**os.environ, "PGPASSWORD": "postgres-pw"}
    psql = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
    try:
        subprocess.run([*psql, "-c", f"CREATE USER {user} WITH PASSWORD '{password}'",
                        "-c", f"CREATE DATABASE {db} OWNER {user}"], check=True, capture_output=True, env=admin)
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{db}"
    finally:
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
