"""The study's child processes: train.py runs started in the background and reaped by a thread of their own,
and the lock that keeps two studies off one runs directory."""

import os
import queue
import subprocess
import sys
import threading
import time

from alexnet_tf.ablation.study import ROOT
from alexnet_tf.errors import ConfigError


def _die_with_parent():
    """In the child: get SIGTERM when the study process dies (Linux), so a killed study leaves no orphan
    training into its run directory; the next invocation resumes the run from its last checkpoint."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class StudyLock:
    """RUNS_DIR/.lock holding the study's pid: two studies on one runs directory would train the same runs."""

    def __init__(self, runs_dir):
        self.path = os.path.join(runs_dir, ".lock")

    def holder(self):
        """The pid of another live process holding the lock, else None."""
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and pid != os.getpid() and _alive(pid) else None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        pid = self.holder()
        if pid:
            raise ConfigError(f"another ablation study (pid {pid}) is using {os.path.dirname(self.path)}; "
                              "wait for it or use another --runs-dir")
        with open(self.path, "w") as f:
            f.write(str(os.getpid()))
        return self

    def __exit__(self, *exc):
        if os.path.isfile(self.path):
            os.remove(self.path)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Training:
    """One train.py subprocess (start_training). A thread of its own reaps it with wait4 the moment it exits,
    so its wall and CPU seconds are its own even while the study measures another run or others train."""

    def __init__(self, proc, run_dir, started, ended):
        self.proc, self.run_dir, self.started, self.result = proc, run_dir, started, None
        threading.Thread(target=self._reap, args=(ended,), daemon=True).start()

    def _reap(self, ended):
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        self.result = (self.proc.returncode, time.time() - self.started, usage.ru_utime + usage.ru_stime)
        ended.put(self)

    def last_line(self):
        with open(os.path.join(self.run_dir, "train.log")) as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else ""


def start_training(run_dir, overrides, config_path, threads=None, ended=None):
    """Start train.py on one run (output appended to RUN/train.log; a rerun resumes from its last checkpoint);
    it is put on the queue `ended` when it exits. `threads`: TensorFlow's intra-op threads for the child
    (TF_NUM_INTRAOP_THREADS, one inter-op thread) when several runs share the cores; None leaves TensorFlow's
    default (every core). What the user set in the environment wins either way."""
    os.makedirs(run_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--config", config_path, "--run-dir", run_dir]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(child_env(threads), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    with open(os.path.join(run_dir, "train.log"), "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        # started from this (the main) thread: PR_SET_PDEATHSIG fires when the thread that forked the child ends
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
    return Training(proc, run_dir, time.time(), queue.Queue() if ended is None else ended)


def child_env(threads=None):
    """The environment of a train.py child that runs on `threads` intra-op threads (None: TensorFlow's default)."""
    env = dict(os.environ)
    if threads:
        env.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
        env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    return env


def wait_any(ended):
    """The next training to exit from the queue `ended`: (training, returncode, wall, cpu, last line of its
    train.log)."""
    t = ended.get()
    return (t, *t.result, t.last_line())


def train_subprocess(run_dir, overrides, config_path):
    """Train one run with train.py in a subprocess and wait for it; returns (returncode, wall, cpu, last line)."""
    ended = queue.Queue()
    start_training(run_dir, overrides, config_path, ended=ended)
    return wait_any(ended)[1:]
