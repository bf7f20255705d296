"""The strategies against one-device training on the same global batches (2 logical CPUs, local workers).

Reference: `train` with distribute.strategy=default in this process. Every strategy reads the same
global batches (deterministic tf.data order) with dropout off, for 8 steps (2 epochs of 4), with a
mid-epoch checkpoint every 3 steps. Tolerances: `towers` computes the very same ops on other
devices, so its weights must match to float32 round-off (atol 1e-6; observed: identical); `mirrored`
and `multi_worker` add two half-batch gradients instead of summing one batch (observed max
difference ~3e-8 after 8 steps; atol 1e-6); the two workers of a multi-worker job must be identical.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
import alexnet_tf.optim  # noqa: F401  (registers the custom classes for load_model)
from alexnet_tf import distribute
from conftest import ROOT, run_main, tiny_overrides

OVERRIDES = tiny_overrides(**{"model.dropout": 0.0, "train.deterministic": True, "train.epochs": 2,
                               "train.checkpoint_every": 3})
ATOL = 1e-6


def config(*extra):
    return alexnet_tf.load_config(None, OVERRIDES + list(extra))


def final_weights(run_dir):
    return keras.saving.load_model(os.path.join(run_dir, "model.keras")).get_weights()


def checkpoint_weights(checkpoint):
    """The model weights of a recovery checkpoint (e.g. a non-chief worker's)."""
    model = alexnet_tf.build_model(config())
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    return model.get_weights()


def max_difference(a, b):
    assert len(a) == len(b)
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Final weights of one-device training (default strategy), in this process."""
    from alexnet_tf.training import train
    run_dir = str(tmp_path_factory.mktemp("default"))
    train(config(), run_dir, verbose=0)
    return final_weights(run_dir)


def run_python(code, timeout=240, env=None):
    """Run `code` in a fresh Python (TensorFlow not yet initialised, so the CPU can be split)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


SETUP = f"""
    import json, sys
    import alexnet_tf
    from alexnet_tf.training import train
    OVERRIDES = {OVERRIDES!r}
"""


@pytest.mark.slow
def test_mirrored_two_replicas_match_default(reference, tmp_path):
    out = run_python(SETUP + f"""
    import numpy as np, tensorflow as tf
    from alexnet_tf.layers import ReplicaDropout
    cfg = alexnet_tf.load_config(None, OVERRIDES + ["distribute.strategy=mirrored", "distribute.logical_cpus=2"])
    train(cfg, {str(tmp_path)!r}, verbose=0)

    # ReplicaDropout: the same inputs on both replicas must get different masks
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = ReplicaDropout(0.5, seed=1)
    masks = strategy.run(lambda: layer(tf.ones((4, 64)), training=True) > 0)
    m0, m1 = [t.numpy() for t in strategy.experimental_local_results(masks)]
    print(json.dumps({{"equal": bool((m0 == m1).all()), "kept": float(m0.mean())}}))
    """)
    dropout = json.loads(out.strip().splitlines()[-1])
    assert not dropout["equal"] and 0.3 < dropout["kept"] < 0.7
    assert "strategy: mirrored, 2 replica(s) on ['/device:CPU:0', '/device:CPU:1']" in out
    assert max_difference(final_weights(str(tmp_path)), reference) < ATOL
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["strategy"] == "mirrored" and metrics["replicas"] == 2


# Op names in the placement log carry the Keras layer name (tf.function name scopes):
# alexnet_1/conv2_1_1/convolution (forward), gradients/alexnet_1/conv2_1_1/convolution_grad/... (backward)
_PLACED = re.compile(r"^(\S+): \((\w+)\): /job:localhost/replica:0/task:0/device:CPU:(\d)$")
# (fc8 and the concatenations have no tower suffix; "fc8_1" is fc8 with Keras's scope counter)
_TOWER_OP = re.compile(r"(?:^|/)(?:conv\d|lrn\d|pool\d|fc[67]|dropout[67]|flatten)_(\d)(?:_\d+)?/")


@pytest.mark.slow
def test_towers_place_forward_and_backward_on_their_device_and_match_default(reference, tmp_path):
    out = run_python(SETUP + f"""
    import tensorflow as tf
    from alexnet_tf import distribute
    distribute.split_cpu(2)
    tf.debugging.set_log_device_placement(True)  # before the runtime starts: logs every op of every function
    cfg = alexnet_tf.load_config(None, OVERRIDES + ["distribute.strategy=towers", "distribute.logical_cpus=2"])
    train(cfg, {str(tmp_path)!r}, verbose=0)
    """)
    placed = [m.groups() for m in map(_PLACED.match, out.splitlines()) if m]
    forward, backward, misplaced = {0: 0, 1: 0}, {0: 0, 1: 0}, []
    for name, op_type, device in placed:
        tower = _TOWER_OP.search(name)
        if tower is None or op_type in ("_Arg", "_Retval", "_DeviceArg", "_DeviceRetval", "NoOp"):
            continue
        tower = int(tower.group(1))
        (backward if name.startswith("gradients/") else forward)[tower] += 1
        if int(device) != tower:
            misplaced.append((name, op_type, device))
    assert not misplaced, misplaced[:20]
    # not vacuous: every tower has forward and gradient ops (the training step and the validation step)
    assert min(forward.values()) > 50 and min(backward.values()) > 50, (forward, backward)
    for kind in ("Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput", "MatMul", "ReluGrad"):
        assert {int(d) for n, t, d in placed if t == kind and _TOWER_OP.search(n)} == {0, 1}, kind
    # the shared layers (fc8, the concatenations) run on the default device
    assert {d for n, t, d in placed if "/fc8_1/" in n or "/concat3_1/" in n} == {"0"}
    # each tower's momentum update runs next to its weights: optimizer ops on both devices
    assert {d for n, t, d in placed if n.startswith("paper_sgd/") and t.startswith("Assign")} == {"0", "1"}
    assert max_difference(final_weights(str(tmp_path)), reference) < ATOL


def worker_command(tmp_path, worker, *extra, driver_args=()):
    """train.py (or the crash driver) for one worker, on the reference config plus `extra` overrides."""
    config_file = tmp_path / "config.yaml"
    if not config_file.exists():
        from alexnet_tf.config import dump
        dump(config(), str(config_file))
    args = [sys.executable]
    args += [os.path.join(ROOT, "tests", "crash_driver.py"), *driver_args, "--"] if driver_args else [os.path.join(ROOT, "train.py")]
    args += ["--config", str(config_file), "--run-dir", str(tmp_path / f"w{worker}")]
    # train.export on: the job must show that only the chief exports. Replicated input: every worker reads
    # the global batches one device reads, so the job can equal one-device training (tests/test_sharding.py
    # runs distribute.input sharded, the multi_worker default)
    for o in ["distribute.strategy=multi_worker", "distribute.input=replicated", "train.export=true", *extra]:
        args += ["--set", o]
    return args


def start_workers(tmp_path, count=2, extra=(), driver_args=None):
    procs, envs = [], []
    for i, tf_config in enumerate(distribute.local_tf_configs(count)):
        env = {**os.environ, "TF_CONFIG": tf_config}
        log = open(tmp_path / f"worker{i}.log", "w")
        args = (driver_args or {}).get(i, ())
        procs.append(subprocess.Popen(worker_command(tmp_path, i, *extra, driver_args=args), cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
        envs.append(env)
    return procs, envs


def log(tmp_path, i):
    return (tmp_path / f"worker{i}.log").read_text()


def wait_all(procs, tmp_path, timeout=240):
    try:
        for i, p in enumerate(procs):
            assert p.wait(timeout=timeout) == 0, log(tmp_path, i)[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)


def assert_job_matches(tmp_path, reference):
    chief = final_weights(str(tmp_path / "w0"))
    worker = checkpoint_weights(tf.train.latest_checkpoint(str(tmp_path / "w1" / "checkpoints" / "worker-1")))
    assert max_difference(chief, worker) == 0.0  # the all-reduce gives both workers the same update
    assert max_difference(chief, reference) < ATOL
    # only the chief writes TensorBoard logs, model files, exports and metrics
    # its own lock file (one writer per run directory and worker) and its recovery checkpoints, nothing else
    assert sorted(os.listdir(tmp_path / "w1")) == [".lock-worker-1", "checkpoints"]
    assert os.listdir(tmp_path / "w1" / "checkpoints") == ["worker-1"]
    for name in ("metrics.json", "model.keras", "export", "tb", "config.yaml", "checkpoints/last", "checkpoints/best"):
        assert (tmp_path / "w0" / name).exists(), name


@pytest.mark.slow
def test_multi_worker_two_processes_match_single_process(reference, tmp_path):
    procs, _ = start_workers(tmp_path)
    wait_all(procs, tmp_path)
    assert "worker 0 of 2" in log(tmp_path, 0) and "worker 1 of 2" in log(tmp_path, 1)
    assert_job_matches(tmp_path, reference)


@pytest.mark.slow
def test_multi_worker_killed_worker_rejoins(reference, tmp_path):
    """Worker 1 is killed -9 after global step 5 and restarted with the same TF_CONFIG; worker 0 loses
    its peer, restarts itself from its checkpoint (step 4) and waits; the job ends as if uninterrupted."""
    marker = tmp_path / "killed"
    procs, envs = start_workers(tmp_path, extra=["distribute.collective_timeout=60"],
                                driver_args={1: ["--kill-at-step", "5", "--once", str(marker)]})
    try:
        assert procs[1].wait(timeout=240) == -signal.SIGKILL, log(tmp_path, 1)[-3000:]
        assert "kill -9 after global step 5" in log(tmp_path, 1)
        os.rename(tmp_path / "worker1.log", tmp_path / "worker1-killed.log")
        with open(tmp_path / "worker1.log", "w") as out:  # the same command again
            procs[1] = subprocess.Popen(worker_command(tmp_path, 1, "distribute.collective_timeout=60"), cwd=ROOT,
                                        env=envs[1], stdout=out, stderr=subprocess.STDOUT)
    finally:
        wait_all(procs, tmp_path)
    chief_log = log(tmp_path, 0)
    assert "lost a peer worker" in chief_log and "restarting this worker from its last checkpoint" in chief_log
    assert "resuming from" in chief_log and "ckpt-4" in chief_log.split("resuming from")[1].splitlines()[0]
    assert "worker-1/ckpt-4" in log(tmp_path, 1)
    assert_job_matches(tmp_path, reference)


def test_multi_worker_without_tf_config_is_a_config_error(tmp_path, capsys, monkeypatch):
    from alexnet_tf import train_command
    monkeypatch.delenv("TF_CONFIG", raising=False)
    status, out, err = run_main(capsys, train_command.main, ["--run-dir", tmp_path,
                                                             "--set", "distribute.strategy=multi_worker"])
    assert status == 2 and out == ""  # before the config is even printed, so before TensorFlow starts
    assert err.count("\n") == 1 and "needs the environment variable TF_CONFIG" in err


@pytest.mark.parametrize("overrides, fragment", [
    (["distribute.strategy=towers", "model.towers=1"], "needs the two-tower model; got model.towers = 1"),
    (["distribute.strategy=towers", "distribute.devices=['/gpu:0']"], "has 1 devices, expected 2"),
    (["distribute.devices=['/gpu:0', '/gpu:1']"], "strategy = default runs on one device"),
    (["distribute.strategy=mirrored", "distribute.devices=['/gpu:0', '/gpu:0']"], "a list of distinct device names"),
    (["distribute.strategy=multi_worker", "distribute.devices=['/gpu:0']"], "expected [] (each worker uses"),
    (["distribute.strategy=pipeline"], "expected one of default, mirrored, towers, hybrid, multi_worker"),
])
def test_distribute_config_errors(overrides, fragment):
    from alexnet_tf.config import ConfigError
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        alexnet_tf.load_config(None, overrides)


def test_an_absent_device_is_a_config_error_not_a_silent_cpu_run(tmp_path, capsys):
    """distribute.devices = ['/gpu:7'] on a machine without it used to train on the CPU without a word
    (soft placement); now train.py exits 2 in one line naming the device and the ones that exist."""
    from alexnet_tf import train_command
    from conftest import run_main
    status, out, err = run_main(capsys, train_command.main, [
        "--run-dir", tmp_path / "run", *[a for o in tiny_overrides(**{"distribute.devices": "['/gpu:7']"})
                                        for a in ("--set", o)]])
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith("config error: distribute.devices names '/gpu:7', which this machine does not have; "
                               "expected some of /cpu:0"), lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_multi_worker_signal_to_one_worker_stops_all_at_the_same_step(tmp_path):
    """SIGTERM to worker 1 only (a preempted VM): both workers learn of it at the same step (they compare
    flags every training.SIGNAL_CHECK_STEPS steps and at epoch ends), both save that step and exit 143
    (one line each); the same two commands again resume from that step on both and the job ends as the
    one-device run does. 6 epochs of 4 steps, so that the signal lands well before the last check."""
    from alexnet_tf.training import train
    epochs = ["train.epochs=6"]
    train(config(*epochs), str(tmp_path / "default"), verbose=0)
    reference = final_weights(str(tmp_path / "default"))
    procs, envs = start_workers(tmp_path, extra=epochs, driver_args={1: ["--print-steps"]})
    try:
        deadline = time.time() + 240
        while "global step 2" not in log(tmp_path, 1):
            assert time.time() < deadline and procs[1].poll() is None, log(tmp_path, 1)[-3000:]
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)
        statuses = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    assert statuses == [128 + signal.SIGTERM] * 2, [log(tmp_path, i)[-2000:] for i in (0, 1)]
    chief = tf.train.latest_checkpoint(str(tmp_path / "w0" / "checkpoints" / "last"))
    worker = tf.train.latest_checkpoint(str(tmp_path / "w1" / "checkpoints" / "worker-1"))
    step = chief.rsplit("-", 1)[1]
    assert worker.endswith(f"ckpt-{step}") and int(step) < 24, (chief, worker)
    for i, saved in enumerate((chief, worker)):
        lines = log(tmp_path, i).strip().splitlines()
        stopped = f"SIGTERM: stopped after saving {saved}; rerun the same command to resume"
        assert lines.count(stopped) == 1, lines[-10:]
        # nothing of the training after it: only, at times, TensorFlow's own C++ log of its coordination
        # heartbeat failing once the other worker has exited first ("E0000 ... Failed to send RPC ...")
        after = lines[lines.index(stopped) + 1:]
        # then the next commands (stdout): the curves so far and this worker's command line, which resumes it
        steps = after.index("next:")
        assert after[steps + 2].endswith(f"--run-dir {tmp_path / f'w{i}'} --set distribute.strategy=multi_worker "
                                         "--set distribute.input=replicated --set train.export=true --set train.epochs=6"
                                         "    # resumes from the last "
                                         "checkpoint"), after
        after = after[:steps] + after[steps + 3:]
        assert not [line for line in after if re.search(r"global step|loss:|epoch|SIGTERM|val top-1", line)], after
    for i in (0, 1):
        os.rename(tmp_path / f"worker{i}.log", tmp_path / f"worker{i}-signalled.log")
    procs = []
    for i in (0, 1):
        with open(tmp_path / f"worker{i}.log", "w") as out:
            procs.append(subprocess.Popen(worker_command(tmp_path, i, *epochs), cwd=ROOT, env=envs[i], stdout=out,
                                          stderr=subprocess.STDOUT))
    wait_all(procs, tmp_path)
    assert f"ckpt-{step}" in log(tmp_path, 0).split("resuming from")[1].splitlines()[0]
    assert_job_matches(tmp_path, reference)
