"""A real SLURM cluster on loopback for the cluster-recipe tests: munged, slurmctld and one
slurmd from Debian's packages (slurm-wlm, munge: .ci/system-packages, installed by `make
system-deps`), with their own key, socket, ports and state under a temporary folder. No cgroups:
processes are tracked by process group (proctrack/pgid, so a job's background processes end with
it), no task binding, no accounting. The daemons run as root, as SLURM's do; the fixture skips,
saying why, where the binaries are missing or we are not root."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mc_engine.run.processes import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "sinfo", "squeue", "scancel", "srun")
#: The test partition: named as the README's dask-jobqueue recipe names its queue.
PARTITION = "cpu"
NODE = "localhost"
#: Seconds from SIGTERM to SIGKILL when a job is cancelled or reaches its time limit (SLURM's
#: default is 30; what a run needs to write the trials it received is well under a second).
KILL_WAIT_S = 10
START_TIMEOUT_S = 60.0

CONF = """\
ClusterName=mctest
SlurmctldHost={node}
SlurmctldAddr=127.0.0.1
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait={kill_wait}
MinJobAge=300
InactiveLimit=0
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None
            and not Path("/usr/sbin", name).exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return int(total_kb / 1024 * 0.9)


class Slurm:
    """The running cluster: ``env`` (SLURM_CONF and the munge socket) for its commands."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.procs: list[subprocess.Popen] = []

    def command(self, *args: str, check: bool = True, timeout_s: float = 60.0,
                **kwargs) -> str:
        """Run a SLURM client command (sinfo, squeue, ...) on this cluster; its stdout."""
        kwargs.setdefault("env", self.env)
        done = subprocess.run([_binary(args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout_s, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}: "
                                 f"{done.stderr.strip()}\n{self.logs()}")
        return done.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs pending or running."""
        return self.command("squeue", "-h", "-o", "%i").split()

    def wait_until_idle(self, timeout_s: float = 60.0) -> None:
        """Wait until no job is left (cancelled ones take up to KillWait to end)."""
        deadline = time.monotonic() + timeout_s
        while self.jobs():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still there after {timeout_s:.0f} s: "
                                     f"{self.command('squeue')}")
            time.sleep(0.2)

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def start(self) -> None:
        root = self.root
        for folder in ("munge", "state", "spool", "log"):
            (root / folder).mkdir(mode=0o700)
        (root / "munge").chmod(0o755)   # clients reach the socket through it
        (root / "slurm.conf").write_text(CONF.format(
            node=NODE, partition=PARTITION, root=root, ctld_port=free_port(),
            d_port=free_port(), kill_wait=KILL_WAIT_S, cpus=os.cpu_count() or 1,
            memory_mb=_memory_mb()))
        munge = root / "munge"
        subprocess.run([_binary("mungekey"), "--create", "--keyfile", str(munge / "key")],
                       check=True, capture_output=True)
        log = open(root / "log" / "daemons.out", "ab")   # noqa: SIM115 (kept for the daemons)
        common = {"env": self.env, "stdout": log, "stderr": subprocess.STDOUT,
                  "start_new_session": True}
        self.procs.append(subprocess.Popen(
            [_binary("munged"), "--foreground", "--force", f"--socket={munge / 'socket'}",
             f"--key-file={munge / 'key'}", f"--pid-file={munge / 'pid'}",
             f"--seed-file={munge / 'seed'}", f"--log-file={root / 'log' / 'munged.log'}"],
            **common))
        self._wait_for(lambda: (munge / "socket").exists(), "munged's socket")
        self.procs.append(subprocess.Popen([_binary("slurmctld"), "-D", "-i"], **common))
        self.procs.append(subprocess.Popen([_binary("slurmd"), "-D", "-N", NODE], **common))
        self._wait_for(self._node_idle, f"node {NODE} idle in sinfo")

    def _node_idle(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[0]} exited {proc.returncode}\n{self.logs()}")
        out = self.command("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        return f"{NODE} idle" in out

    def _wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {START_TIMEOUT_S:.0f} s\n{self.logs()}")
            time.sleep(0.2)

    def stop(self) -> None:
        try:
            if self.procs and self.procs[-1].poll() is None:
                self.command("scancel", "--user", "root", check=False)
                self.wait_until_idle(timeout_s=KILL_WAIT_S + 20)
        finally:
            for proc in reversed(self.procs):   # slurmd, slurmctld, munged
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Iterator[Slurm]:
    """A one-node SLURM cluster (partition "cpu", this machine's CPUs and memory) for the
    session, torn down at its end."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"SLURM is not installed (missing {', '.join(missing)}): install the "
                    f"Debian packages slurm-wlm and munge (.ci/system-packages; `make "
                    f"system-deps` does it where we are root)")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster runs slurmd and slurmctld as root; not root here")
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
