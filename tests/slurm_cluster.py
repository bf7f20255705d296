"""A real one-node Slurm on this machine, for tests/test_slurm.py: munged, slurmctld and slurmd.

Debian's slurm-wlm and munge (scripts/get_slurm.sh, part of `make test`'s set-up) with a generated
slurm.conf in a temporary directory: the node's CPUs, NodeName and SlurmctldHost from `hostname -s`,
proctrack/linuxproc and task/none (no cgroups needed), the state and spool directories, logs and a
fresh munge key in that directory, and free ports. munged runs as the munge user, slurmctld and slurmd
as root, each in the foreground so that its pid is the daemon's; `stop` ends them by those pids.

`start` raises SlurmUnavailable with one line saying why when Slurm cannot be brought up.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "scancel", "squeue", "sinfo")


class SlurmUnavailable(Exception):
    """Slurm could not be brought up here; the message is one line."""


def free_ports(count):
    """`count` distinct TCP ports that are free on every interface now (bound, read, released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class OneNodeSlurm:
    """The daemons and the environment (SLURM_CONF) that the Slurm commands need to reach them."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="alexnet-slurm-")
        os.chmod(self.directory, 0o755)  # munged (user munge) must reach its socket in here
        self.node = socket.gethostname().split(".")[0]  # `hostname -s`
        self.conf = os.path.join(self.directory, "slurm.conf")
        self.socket = os.path.join(self.directory, "munge", "munge.socket")
        self.processes = {}

    @property
    def env(self):
        """os.environ without any Slurm variable of an enclosing job, plus SLURM_CONF."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        return {**env, "SLURM_CONF": self.conf}

    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def log_tail(self, name):
        try:
            with open(self.path(f"{name}.log"), errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def start(self, timeout=60):
        if os.geteuid() != 0:
            raise SlurmUnavailable("the Slurm tests start slurmd and munged (as user munge) and need root; run them as root")
        missing = [name for name in DAEMONS + CLIENTS if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]
        if missing:
            raise SlurmUnavailable(f"{', '.join(missing)} not installed: run `sh scripts/get_slurm.sh` (apt packages slurm-wlm, munge)")
        try:
            munge = pwd.getpwnam("munge")
        except KeyError:
            raise SlurmUnavailable("no user munge: the munge package is not installed (sh scripts/get_slurm.sh)") from None
        self._start_munged(munge)
        self._write_conf()
        for daemon in ("slurmctld", "slurmd"):
            self._launch(daemon, [daemon, "-D"] + (["-i"] if daemon == "slurmctld" else []))
        self._wait_idle(timeout)
        return self

    def _launch(self, name, args, **popen):
        log = open(self.path(f"{name}.log"), "w")
        try:
            self.processes[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                    cwd=self.directory, **popen)
        finally:
            log.close()

    def _start_munged(self, munge):
        os.mkdir(self.path("munge"), 0o755)
        with open(self.path("munge", "munge.key"), "wb") as f:
            f.write(os.urandom(128))
        for p in (self.path("munge"), self.path("munge", "munge.key")):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        os.chmod(self.path("munge", "munge.key"), 0o600)
        files = {"key-file": "munge.key", "log-file": "munged.log", "pid-file": "munged.pid", "seed-file": "munged.seed"}
        args = ["munged", "--foreground", f"--socket={self.socket}"] + [f"--{k}={self.path('munge', v)}" for k, v in files.items()]
        self._launch("munged", args, user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        deadline = time.time() + 15
        while not os.path.exists(self.socket):
            if self.processes["munged"].poll() is not None or time.time() > deadline:
                raise SlurmUnavailable(f"munged did not start: {self.log_tail('munged')}")
            time.sleep(0.1)

    def _write_conf(self):
        controller, node = free_ports(2)
        d = self.directory
        lines = {
            "ClusterName": "alexnettest", "SlurmctldHost": self.node, "SlurmctldPort": controller, "SlurmdPort": node,
            "SlurmUser": "root", "SlurmdUser": "root", "AuthType": "auth/munge", "AuthInfo": f"socket={self.socket}",
            "CredType": "cred/munge", "StateSaveLocation": f"{d}/state", "SlurmdSpoolDir": f"{d}/spool",
            "SlurmctldPidFile": f"{d}/slurmctld.pid", "SlurmdPidFile": f"{d}/slurmd.pid",
            "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none", "SwitchType": "switch/none",
            "MpiDefault": "none", "ReturnToService": 2, "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_CPU",
            "JobCompType": "jobcomp/none", "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "NodeName": f"{self.node} CPUs={os.cpu_count()} State=UNKNOWN",
            "PartitionName": f"test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        }
        os.mkdir(f"{d}/state")
        os.mkdir(f"{d}/spool")
        with open(self.conf, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in lines.items())

    def _wait_idle(self, timeout):
        """Until sinfo reports the node idle (slurmd registered with slurmctld)."""
        deadline, state = time.time() + timeout, ""
        while time.time() < deadline:
            for name, p in self.processes.items():
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with status {p.returncode}: {self.log_tail(name)}")
            result = subprocess.run(["sinfo", "-h", "-n", self.node, "-o", "%T"], capture_output=True, text=True,
                                    env=self.env, timeout=30)
            state = (result.stdout.strip() or result.stderr.strip()).splitlines()[-1:] or [""]
            if state[0] == "idle":
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"node {self.node} not idle after {timeout} s (sinfo: {state[0]!r}; "
                               f"slurmd: {self.log_tail('slurmd')})")

    def stop(self):
        """Cancel what is left of the jobs, then end the daemons by pid (TERM, then KILL after 10 s)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.processes.get(name)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
