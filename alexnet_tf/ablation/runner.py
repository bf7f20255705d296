"""Running the study: train what is missing (train.py in subprocesses, one run at a time or `jobs` at
once, resumable), measure every finished run, write the report."""

import os
import queue
import time

from alexnet_tf import machine
from alexnet_tf.ablation.processes import StudyLock, child_env, start_training, wait_any
from alexnet_tf.ablation.records import (add_attempt, measure_finished, measured_by_study, measurement, read_record,
                                         record_path, run_failure, write_failure, write_result)
from alexnet_tf.ablation.report import minutes, seeds_text, write_report
from alexnet_tf.ablation.results import ArmRuns
from alexnet_tf.ablation.study import BASE_CONFIG, CONSTANT_LR, CONSTANT_LR_SEEDS, DEFAULT_SEEDS, plan
from alexnet_tf.config import load_config
from alexnet_tf.errors import ConfigError, UserError
from alexnet_tf.run_dir import read_json


def _metrics(run_dir):
    """The run's metrics.json (train.py writes it last), {} before the run has finished."""
    path = os.path.join(run_dir, "metrics.json")
    return read_json(path) if os.path.isfile(path) else {}


def _status(p, results_dir):
    """'done', 'failed' (diverged) or 'todo'. A record in `results_dir` settles it; a stale one (measured under
    other values) or none leaves it to the run directory. One-line errors: a record or run directory holding
    another config, a record that disagrees with its run directory, a stale record whose run directory is gone."""
    path = record_path(results_dir, p.arm.name, p.seed)
    record = read_record(path, p.config)
    metrics = _metrics(p.run_dir)
    if record is not None and record.failed:
        return "failed"
    if record is not None and not record.stale:
        if metrics and metrics["val_top1_error"] != record.result.val_top1_error:
            raise ConfigError(f"{path} and {p.run_dir} disagree (val top-1 error "
                              f"{record.result.val_top1_error:.4%} vs {metrics['val_top1_error']:.4%}): the run was "
                              "trained again after it was recorded; remove the record to record the new run")
        return "done"
    if record is not None and not metrics:
        raise ConfigError(f"{path} was measured under other values ({record.measurement} instead "
                          f"of {measurement()}) and its run directory {p.run_dir} is gone; measure it where its run "
                          "directory is, or remove the record to train the run again")
    saved = os.path.join(p.run_dir, "config.yaml")
    if os.path.isfile(saved) and load_config(saved).to_dict() != p.config.to_dict():
        raise ConfigError(f"{p.run_dir} holds a run with another config than this study's "
                          f"{p.arm.name} arm (a different budget, --config or --set?); use another --runs-dir")
    if metrics:
        return "done"
    if run_failure(p.run_dir):
        return "failed"
    return "todo"


# The first words of training.TrainingDiverged's message (train.py exits 1 with it; tests/test_training.py
# checks the words). Only a diverged run is recorded as failed and never retried: train.py's other exits with
# status 1 (no data, an unreadable checkpoint, a full disk) are the machine's, and stop the study instead.
DIVERGED = "training stopped: loss became"


# Training images/s of the full budget's base arm on a quiet 2-core machine, by the widest vector ISA (oneDNN
# on; measured: docs/ablation.md). Time scales with multiply-adds per image; evaluation is ~1/3 of a step.
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


def run_study(config_path=BASE_CONFIG, budget="full", seeds=None, runs_dir="runs/ablation", out="REPRODUCTION.md",
              arms=None, extra=(), train=True, command=None, log=print, results_dir=None, jobs=1, more=None,
              fig1=None, constant=None):
    """Train what is missing, record and measure every finished run, write the report. Returns the results
    ({arm name: ArmRuns}). `results_dir` (default RUNS_DIR/results) holds the records (records.py): the study's durable part.
    `jobs` runs train at once, each on cores // jobs intra-op threads (docs/ablation.md: 2 one-thread runs
    finish ~1.4x sooner than one after the other on 2 cores). `more` ({arm: n}) gives some arms more seeds
    (study.seeds_per_arm: the second stage). `fig1` and `constant` (load_constant_lr): the four-layer net's
    summary and claim 1b's runs, for the report."""
    seeds = DEFAULT_SEEDS[budget] if seeds is None else seeds
    runs_dir = os.path.abspath(runs_dir)
    results_dir = os.path.abspath(results_dir or os.path.join(runs_dir, "results"))
    config_path = os.path.abspath(config_path)
    planned = plan(config_path, budget, seeds, runs_dir, arms, extra, more)
    status = {p.run_dir: _status(p, results_dir) for p in planned}
    todo = [p for p in planned if status[p.run_dir] == "todo"]
    n_arms = len({p.arm.name for p in planned})
    log(f"ablation study: {n_arms} arm{'s' if n_arms != 1 else ''}, {seeds_text(seeds, more)} = {len(planned)} runs in {runs_dir} "
        f"({os.path.relpath(config_path)}, budget {budget}); {len(planned) - len(todo)} finished or failed, {len(todo)} to train")
    if train and todo:
        with StudyLock(runs_dir), StudyLock(results_dir):  # two studies on one results directory would train the same runs
            _train_all(planned, todo, status, config_path, results_dir, log, jobs)
    results = collect(planned, results_dir)
    write_report(results, planned, out, config_path, budget, seeds, command or "python -m alexnet_tf ablate", more, fig1,
                 constant)
    log(f"wrote {out}")
    return results


def load_constant_lr(results_dir, config_path=BASE_CONFIG, budget="full", extra=()):
    """{arm name: ArmRuns} of claim 1b's runs, read from their records in `results_dir` only: the base and tanh
    arms at seeds 0..CONSTANT_LR_SEEDS-1, trained with study.CONSTANT_LR on top of `extra` (docs/ablation.md
    gives the command). A seed without a record counts as missing; a record of another config, or one
    measured under other values, is a one-line error."""
    if not os.path.isdir(results_dir):
        raise ConfigError(f"--constant-lr {results_dir}: no such directory; expected the --results directory of the "
                          "constant-rate base and tanh runs (docs/ablation.md, claim 1b)")
    # the configs to check the records against (the run directories it names are not read)
    planned = plan(os.path.abspath(config_path), budget, CONSTANT_LR_SEEDS, results_dir, ["base", "tanh"],
                   list(extra) + list(CONSTANT_LR))
    results = {}
    for p in planned:
        arm = results.setdefault(p.arm.name, ArmRuns(p.arm))
        path = record_path(results_dir, p.arm.name, p.seed)
        try:
            record = read_record(path, p.config)
        except ConfigError as e:
            raise ConfigError(f"--constant-lr {results_dir}: {e.detail} (the runs must be this study's --config, "
                              f"--budget {budget} and --set, plus {' '.join(CONSTANT_LR)})") from None
        if record is None:
            arm.missing += 1
        elif record.stale and not record.failed:
            raise ConfigError(f"--constant-lr {path}: measured under other values than today's; expected a current "
                              "record: measure it again with the constant-rate command of docs/ablation.md")
        else:
            _add(arm, p.seed, record, path)
    if not any(arm.records for arm in results.values()):
        raise ConfigError(f"--constant-lr {results_dir}: no base or tanh record; expected RESULTS/base/seedK.json "
                          "and RESULTS/tanh/seedK.json")
    return results


def usable_cores():
    """The cores this process may run on (its CPU affinity, where the OS tells), for --jobs."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _expected_total(estimates, jobs, threads):
    each = machine.intra_op_threads(child_env(threads))  # what each child runs on (the user's setting wins)
    return (f"expected total: {minutes(sum(estimates.values()))} for {len(estimates)} runs one at a time "
            f"(from multiply-adds at {base_train_rate()} img/s for the base arm on a quiet 2-core "
            f"{'/'.join(machine.isa()) or 'x86'} machine; slower under load)"
            + (f"; {jobs} at a time, {each} intra-op thread{'s' if each != 1 else ''} each" if threads else ""))


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
    log(_expected_total(estimates, jobs, threads))
    trainings = _Trainings(planned, status, estimates, config_path, results_dir, log, jobs, threads)
    try:
        while trainings.fill():
            trainings.record_next()
    finally:
        trainings.stop_children()
    if trainings.stop is not None:
        raise trainings.stop


class _Trainings:
    """The train.py runs of one _train_all: started in plan order, `jobs` at once, each recorded as it ends, and
    this study's measured pace (wall seconds per estimated second) for the times it prints."""

    def __init__(self, planned, status, estimates, config_path, results_dir, log, jobs, threads):
        self.planned, self.status, self.estimates, self.config_path = planned, status, estimates, config_path
        self.results_dir, self.log, self.jobs, self.threads = results_dir, log, jobs, threads
        self.waiting, self.running, self.ended, self.stop = list(enumerate(planned, 1)), {}, queue.Queue(), None
        self.started, self.spent, self.spent_estimate = time.time(), 0.0, 0.0
        self.width = len(str(len(planned)))

    def fill(self):
        """Start runs until `jobs` train at once (none once a run has stopped the study); True while any trains."""
        while self.waiting and self.stop is None and len(self.running) < self.jobs:
            self._start(*self.waiting.pop(0))
        return bool(self.running)

    def _start(self, i, p):
        tag = f"[{i:>{self.width}}/{len(self.planned)}] {p.arm.name} seed {p.seed}"
        if self.status[p.run_dir] != "todo":
            self.log(f"{tag}: skipped ({'finished' if self.status[p.run_dir] == 'done' else 'failed'} before)")
            return
        # the multiply-add estimate is for one run alone on a quiet machine; once a run has finished, scale it by
        # this study's measured pace (which includes load and the runs sharing the cores under --jobs)
        pace = self.spent / self.spent_estimate if self.spent_estimate else None
        expected = (f"~{minutes(self.estimates[p.run_dir] * pace)} at this study's pace" if pace
                    else f"~{minutes(self.estimates[p.run_dir])} alone on a quiet machine")
        self.log(f"{tag}: training in {p.run_dir} (tail -f train.log there), expected {expected}")
        self.running[start_training(p.run_dir, p.overrides, self.config_path, self.threads, self.ended)] = (p, tag)

    def record_next(self):
        """Wait for the next run to end and record it. One that stops the study lets the others go on."""
        t, rc, wall, cpu, last = wait_any(self.ended)
        p, tag = self.running.pop(t)
        if rc == 0:
            self.fill()  # the freed core trains the next run while this one is measured
        try:
            result = _finish(p, tag, rc, wall, cpu, last, t.started, self.results_dir, self.log, self.threads)
        except (ConfigError, StudyInterrupted) as e:
            self.stop = self.stop or e
            if self.running:
                self.log(f"{e.detail}; waiting for the {len(self.running)} run(s) in progress to finish")
            return
        if result is None:  # diverged: recorded as failed
            return
        self.spent += wall
        self.spent_estimate += self.estimates[p.run_dir]
        self.log(f"{tag}: done in {minutes(wall)}: val top-1 error {result.val_top1_error:.2%}, "
                 f"training images {result.train_top1_error:.2%}; elapsed {minutes(time.time() - self.started)}"
                 + ("" if self.stop else f", remaining ~{minutes(self._remaining())}"))

    def _remaining(self):
        """Estimate-seconds still to train, at this study's measured seconds per estimate-second, `jobs` at once."""
        left = sum(self.estimates[q.run_dir] for _, q in self.waiting if self.status[q.run_dir] == "todo")
        left += sum(self.estimates[q.run_dir] for q, _ in self.running.values())
        return left * self.spent / self.spent_estimate / min(self.jobs, max(1, len(self.running) + len(self.waiting)))

    def stop_children(self):
        """Stop the runs still in progress, which is only after an error of the study itself (they resume later)."""
        for t in self.running:
            t.proc.terminate()
        while self.running:
            self.running.pop(wait_any(self.ended)[0])


def _finish(p, tag, rc, wall, cpu, last, started, results_dir, log, threads=None):
    """Record one ended train.py: its measured ArmResult, or None when it diverged (recorded as failed).
    ConfigError (rc 2, the same for every seed) or StudyInterrupted (killed, or the machine's fault: the next
    invocation resumes it from its checkpoint) when it stops the study."""
    diverged = rc == 1 and last.startswith(DIVERGED)  # recorded, not retried by the next invocation
    add_attempt(p.run_dir, {"what": "train.py", "returncode": rc, "started": started, "wall_seconds": wall,
                            "cpu_seconds": cpu}, failed=last if diverged else None)
    if rc == 2:
        raise ConfigError(f"{p.arm.name} seed {p.seed} was refused by train.py: {last}")
    if diverged:
        info = dict(machine.summary(), intra_op_threads=machine.intra_op_threads(child_env(threads)))  # the child's
        write_failure(record_path(results_dir, p.arm.name, p.seed), p.config, machine.describe(info), last)
        log(f"{tag}: FAILED: {last}")
        return None
    if rc != 0:
        raise StudyInterrupted(f"{tag}: train.py ended with status {rc} ({last}); run the same command again to resume")
    result = measure_finished(p.run_dir)
    write_result(record_path(results_dir, p.arm.name, p.seed), p.config, result)
    return result


class StudyInterrupted(UserError, RuntimeError):
    """A training subprocess was killed; finished runs are kept and the next invocation resumes."""


def collect(planned, results_dir):
    """{arm name: ArmRuns} of the planned runs, from their records. A finished run without a current record
    (trained before records existed, by hand, or measured under other values) is measured and recorded here,
    unless its study is still measuring it."""
    results = {}
    for p in planned:
        arm = results.setdefault(p.arm.name, ArmRuns(p.arm))
        path = record_path(results_dir, p.arm.name, p.seed)
        record = _current_record(p, path, results_dir)
        if not _usable(record):
            arm.missing += 1
        else:
            _add(arm, p.seed, record, path)
    return results


def _add(arm, seed, record, path):
    """A usable record (records.read_record) into its ArmRuns: a finished run's result, or a diverged seed."""
    if record.failed:
        arm.failed.append((seed, record.failed))
    else:
        arm.runs.append(record.result)
    arm.records.append(path)


def _current_record(p, path, results_dir):
    """The run's record, written first from its run directory when it has none the report can read."""
    record = read_record(path, p.config)
    if _usable(record):
        return record
    status = _status(p, results_dir)
    if status == "done" and _measured_by_its_study(p.run_dir):
        write_result(path, p.config, measure_finished(p.run_dir))
    elif status == "failed":  # diverged: train.py wrote no metrics.json, which would name the machine
        write_failure(path, p.config, "unknown", run_failure(p.run_dir))
    return read_record(path, p.config)


def _usable(record):
    """A record the report can read: a failed run's (its failure does not depend on the measurement) or a current one."""
    return record is not None and bool(record.failed or not record.stale)


def _measured_by_its_study(run_dir):
    """False while another process's study holds the runs directory's lock and has not yet measured this run:
    it appends the train.py attempt and the clean evaluation to RUN/ablation.json after train.py wrote
    metrics.json, and a record made in between would miss both (and race its writes)."""
    if StudyLock(os.path.dirname(os.path.dirname(run_dir))).holder() is None:
        return True
    return measured_by_study(run_dir)
