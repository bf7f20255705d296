"""Running the study: train what is missing (train.py in subprocesses, one run at a time or `jobs` at
once, resumable), measure every finished run, write the report."""

import os
import queue
import subprocess
import sys
import threading
import time

from alexnet_tf import machine
from alexnet_tf.ablation.measure import measure_run, read_json, write_json
from alexnet_tf.ablation.records import measurement, read_record, record_path, trained_on, write_record
from alexnet_tf.ablation.report import minutes, write_report
from alexnet_tf.ablation.study import BASE_CONFIG, DEFAULT_SEEDS, ROOT, plan, seeds_text
from alexnet_tf.config import ConfigError, load_config


def _status(p, results_dir):
    """'done', 'failed' (diverged) or 'todo'. A record in `results_dir` settles it; a stale one (measured under
    other values) or none leaves it to the run directory. One-line errors: a record or run directory holding
    another config, a record that disagrees with its run directory, a stale record whose run directory is gone."""
    path = record_path(results_dir, p.arm.name, p.seed)
    record = read_record(path, p.config)
    metrics = read_json(os.path.join(p.run_dir, "metrics.json"))
    if record is not None and record["failed"]:
        return "failed"
    if record is not None and not record["stale"]:
        if metrics and metrics["val_top1_error"] != record["measured"]["val_top1_error"]:
            raise ConfigError(f"config error: {path} and {p.run_dir} disagree (val top-1 error "
                              f"{record['measured']['val_top1_error']:.4%} vs {metrics['val_top1_error']:.4%}): the run was "
                              "trained again after it was recorded; remove the record to record the new run")
        return "done"
    if record is not None and not metrics:
        raise ConfigError(f"config error: {path} was measured under other values ({record.get('measurement')} instead "
                          f"of {measurement()}) and its run directory {p.run_dir} is gone; measure it where its run "
                          "directory is, or remove the record to train the run again")
    saved = os.path.join(p.run_dir, "config.yaml")
    if os.path.isfile(saved) and load_config(saved).to_dict() != p.config.to_dict():
        raise ConfigError(f"config error: {p.run_dir} holds a run with another config than this study's "
                          f"{p.arm.name} arm (a different budget, --config or --set?); use another --runs-dir")
    if metrics:
        return "done"
    if read_json(os.path.join(p.run_dir, "ablation.json")).get("failed"):
        return "failed"
    return "todo"


# The first words of training.TrainingDiverged's message (train.py exits 1 with it; tests/test_training.py
# checks the words). Only a diverged run is recorded as failed and never retried: train.py's other exits with
# status 1 (no data, an unreadable checkpoint, a full disk) are the machine's, and stop the study instead.
DIVERGED = "training stopped: loss became"


# Training images/s of the full budget's base arm on a quiet 2-core machine, by the widest vector ISA
# (oneDNN on): 1,250 on the AVX-512 Xeon (the lead's measurement), 700 on the AVX2-only EPYC (its base
# seed 0 took 7.5 min, 2026-12-03). Time scales with multiply-adds per image; evaluation is ~1/3 of a step.
BASE_TRAIN_RATES = {"AVX-512": 1250, "AVX2": 700}
BASE_MULTIPLY_ADDS = 19_536_128
RUN_OVERHEAD_SECONDS = 20  # start-up, data, final save (the study's runs skip the SavedModel export)


def base_train_rate(isa=None):
    """BASE_TRAIN_RATES for this CPU (`isa`: machine.isa()'s list); a CPU without AVX2 gets the AVX2 rate."""
    isa = machine.isa() if isa is None else isa
    return BASE_TRAIN_RATES["AVX-512" if "AVX-512" in isa else "AVX2"]


def estimate_seconds(config, val_images=10000, rate=None):
    """Expected wall time of one run on a quiet 2-core machine, from the model's multiply-adds at `rate`
    base-arm training images/s (base_train_rate() when None)."""
    import keras

    from alexnet_tf.config_checks import FASHION_MNIST_SIZES, source_training_images
    from alexnet_tf.model import build_model
    from alexnet_tf.perf.speed import multiply_adds

    keras.backend.clear_session()
    per_image = multiply_adds(build_model(config)) / BASE_MULTIPLY_ADDS / (rate or base_train_rate())  # seconds per training image
    d, t = config.data, config.train
    train_images = source_training_images(d) or FASHION_MNIST_SIZES["train"]  # file sources: unknown before TF; estimated at Fashion-MNIST's
    train_images = d.train_examples or train_images
    steps = train_images // d.batch_size
    steps = min(steps, t.steps_per_epoch) if t.steps_per_epoch else steps
    val = min(val_images, t.val_steps * d.batch_size) if t.val_steps else val_images
    per_epoch = steps * d.batch_size * per_image + val * per_image / 3
    return RUN_OVERHEAD_SECONDS + t.epochs * per_epoch + train_images * per_image / 3


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
            raise ConfigError(f"config error: another ablation study (pid {pid}) is using {os.path.dirname(self.path)}; "
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


def run_study(config_path=BASE_CONFIG, budget="full", seeds=None, runs_dir="runs/ablation", out="REPRODUCTION.md",
              arms=None, extra=(), train=True, command=None, log=print, results_dir=None, jobs=1, more=None):
    """Train what is missing, record and measure every finished run, write the report. Returns the per-arm
    results. `results_dir` (default RUNS_DIR/results) holds the records (records.py): the study's durable part.
    `jobs` runs train at once, each on cores // jobs intra-op threads (docs/ablation.md: 2 one-thread runs
    finish ~1.4x sooner than one after the other on 2 cores). `more` ({arm: n}) gives some arms more seeds
    (study.seeds_per_arm: the second stage)."""
    seeds = DEFAULT_SEEDS[budget] if seeds is None else seeds
    runs_dir = os.path.abspath(runs_dir)
    results_dir = os.path.abspath(results_dir or os.path.join(runs_dir, "results"))
    config_path = os.path.abspath(config_path)
    planned = plan(config_path, budget, seeds, runs_dir, arms, extra, more)
    status = {p.run_dir: _status(p, results_dir) for p in planned}
    todo = [p for p in planned if status[p.run_dir] == "todo"]
    n_arms = len({p.arm.name for p in planned})
    log(f"ablation study: {n_arms} arms, {seeds_text(seeds, more)} = {len(planned)} runs in {runs_dir} "
        f"({os.path.relpath(config_path)}, budget {budget}); {len(planned) - len(todo)} finished or failed, {len(todo)} to train")
    if train and todo:
        with StudyLock(runs_dir), StudyLock(results_dir):  # two studies on one results directory would train the same runs
            _train_all(planned, todo, status, config_path, results_dir, log, jobs)
    results = collect(planned, results_dir)
    write_report(results, planned, out, config_path, budget, seeds, command or "python -m alexnet_tf ablate", more)
    log(f"wrote {out}")
    return results


def usable_cores():
    """The cores this process may run on (its CPU affinity, where the OS tells), for --jobs."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _train_all(planned, todo, status, config_path, results_dir, log, jobs=1):
    """Train the runs in `todo` in plan order, `jobs` at a time, printing progress and the time left. A run
    that stops the study (a config error, a killed or failed train.py) lets the others in progress finish
    and be recorded first; an error of the study itself (or Ctrl-C) stops them, to resume from their
    checkpoints, before the locks are released."""
    by_arm = {}  # every seed of an arm costs the same
    for p in todo:
        if p.arm.name not in by_arm:
            by_arm[p.arm.name] = estimate_seconds(p.config)
    estimates = {p.run_dir: by_arm[p.arm.name] for p in todo}
    threads = max(1, usable_cores() // jobs) if jobs > 1 else None
    each = machine.intra_op_threads(child_env(threads))  # what each child runs on (the user's setting wins)
    log(f"expected total: {minutes(sum(estimates.values()))} for {len(todo)} runs one at a time "
        f"(from multiply-adds at {base_train_rate()} img/s for the base arm on a quiet 2-core {'/'.join(machine.isa()) or 'x86'} "
        "machine; slower under load)" + (f"; {jobs} at a time, {each} intra-op thread{'s' if each != 1 else ''} each"
                                         if threads else ""))
    started, spent, spent_estimate = time.time(), 0.0, 0.0
    waiting, running, ended, stop = list(enumerate(planned, 1)), {}, queue.Queue(), None
    width = len(str(len(planned)))

    def fill():
        while waiting and stop is None and len(running) < jobs:
            i, p = waiting.pop(0)
            tag = f"[{i:>{width}}/{len(planned)}] {p.arm.name} seed {p.seed}"
            if status[p.run_dir] != "todo":
                log(f"{tag}: skipped ({'finished' if status[p.run_dir] == 'done' else 'failed'} before)")
                continue
            # the multiply-add estimate is for one run alone on a quiet machine; once a run has finished, scale it by
            # this study's measured pace (which includes load and the runs sharing the cores under --jobs)
            pace = spent / spent_estimate if spent_estimate else None
            expected = (f"~{minutes(estimates[p.run_dir] * pace)} at this study's pace" if pace
                        else f"~{minutes(estimates[p.run_dir])} alone on a quiet machine")
            log(f"{tag}: training in {p.run_dir} (tail -f train.log there), expected {expected}")
            running[start_training(p.run_dir, p.overrides, config_path, threads, ended)] = (p, tag)

    try:
        while True:
            fill()
            if not running:
                break
            t, rc, wall, cpu, last = wait_any(ended)
            p, tag = running.pop(t)
            if rc == 0:
                fill()  # the freed core trains the next run while this one is measured
            try:
                m = _finish(p, tag, rc, wall, cpu, last, t.started, results_dir, log, threads)
            except (ConfigError, StudyInterrupted) as e:
                stop = stop or e
                if running:
                    log(f"{tag}: {e}; waiting for the {len(running)} run(s) in progress to finish")
                continue
            if m is None:  # diverged: recorded as failed
                continue
            spent += wall
            spent_estimate += estimates[p.run_dir]
            # estimate-seconds still to train, at this study's measured seconds per estimate-second, `jobs` at once
            left = sum(estimates[q.run_dir] for _, q in waiting if status[q.run_dir] == "todo")
            left += sum(estimates[q.run_dir] for q, _ in running.values())
            remaining = left * spent / spent_estimate / min(jobs, max(1, len(running) + len(waiting)))
            log(f"{tag}: done in {minutes(wall)}: val top-1 error {m['val_top1_error']:.2%}, "
                f"training images {m['train_top1_error']:.2%}; elapsed {minutes(time.time() - started)}"
                + ("" if stop else f", remaining ~{minutes(remaining)}"))
    finally:
        for t in running:  # only after an error of the study itself: stop the children, which resume later
            t.proc.terminate()
        while running:
            running.pop(wait_any(ended)[0])
    if stop is not None:
        raise stop


def _finish(p, tag, rc, wall, cpu, last, started, results_dir, log, threads=None):
    """Record one ended train.py: its measure_run numbers, or None when it diverged (recorded as failed).
    ConfigError (rc 2, the same for every seed) or StudyInterrupted (killed, or the machine's fault: the next
    invocation resumes it from its checkpoint) when it stops the study."""
    record = read_json(os.path.join(p.run_dir, "ablation.json"))
    record.setdefault("attempts", []).append({"what": "train.py", "returncode": rc, "started": started,
                                              "wall_seconds": wall, "cpu_seconds": cpu})
    diverged = rc == 1 and last.startswith(DIVERGED)
    if diverged:  # recorded, not retried by the next invocation: the arm diverges at this seed
        record["failed"] = last
    write_json(os.path.join(p.run_dir, "ablation.json"), record)
    if rc == 2:
        raise ConfigError(f"config error: {p.arm.name} seed {p.seed} was refused by train.py: {last}")
    if diverged:
        info = dict(machine.summary(), intra_op_threads=machine.intra_op_threads(child_env(threads)))  # the child's
        write_record(record_path(results_dir, p.arm.name, p.seed), p.config, machine.describe(info), failed=last)
        log(f"{tag}: FAILED: {last}")
        return None
    if rc != 0:
        raise StudyInterrupted(f"{tag}: train.py ended with status {rc} ({last}); run the same command again to resume")
    m = measure_run(p.run_dir)
    write_record(record_path(results_dir, p.arm.name, p.seed), p.config, trained_on(p.run_dir), measured=m)
    return m


class StudyInterrupted(RuntimeError):
    """A training subprocess was killed; finished runs are kept and the next invocation resumes."""


def collect(planned, results_dir):
    """{arm name: {"arm": Arm, "runs": [measure_run(...) per finished seed], "seeds": [...], "failed": [(seed, why)],
    "missing": n, "records": [record path per finished or failed seed], "machines": [who trained each finished
    seed]}}. A finished run without a current record (trained before records existed, by hand, or measured
    under other values) is measured and recorded here, unless its study is still measuring it."""
    results = {}
    for p in planned:
        r = results.setdefault(p.arm.name, {"arm": p.arm, "runs": [], "seeds": [], "failed": [], "missing": 0,
                                            "records": [], "machines": [], "config": p.config})
        path = record_path(results_dir, p.arm.name, p.seed)
        record = read_record(path, p.config)
        if not _usable(record):
            status = _status(p, results_dir)
            if status == "done" and _measured_by_its_study(p.run_dir):
                write_record(path, p.config, trained_on(p.run_dir), measured=measure_run(p.run_dir))
            elif status == "failed":
                write_record(path, p.config, trained_on(p.run_dir),
                             failed=read_json(os.path.join(p.run_dir, "ablation.json"))["failed"])
            record = read_record(path, p.config)
        if not _usable(record):
            r["missing"] += 1
        elif record["failed"]:
            r["failed"].append((p.seed, record["failed"]))
            r["records"].append(path)
        else:
            r["runs"].append(record["measured"])
            r["seeds"].append(p.seed)
            r["records"].append(path)
            r["machines"].append(record["machine"])
    return results


def _usable(record):
    """A record the report can read: a failed run's (its failure does not depend on the measurement) or a current one."""
    return record is not None and bool(record["failed"] or not record["stale"])


def _measured_by_its_study(run_dir):
    """False while another process's study holds the runs directory's lock and has not yet measured this run:
    it appends the train.py attempt and the clean evaluation to RUN/ablation.json after train.py wrote
    metrics.json, and a record made in between would miss both (and race its writes)."""
    if StudyLock(os.path.dirname(os.path.dirname(run_dir))).holder() is None:
        return True
    study = read_json(os.path.join(run_dir, "ablation.json"))
    return "clean" in study and any(a["what"] == "train.py" and a["returncode"] == 0 for a in study.get("attempts", []))
