"""data.service: a dispatcher and two workers started by `alexnet-tf data-service` as local processes on
127.0.0.1 (stopped by pid with SIGTERM, which must end them cleanly); an epoch in distributed_epoch mode
visits every example once (ids counted at the training process), training runs with data.service set,
and after kill -9 a resumed run continues exactly at the checkpoint's step while the interrupted epoch's
first steps are drawn again (what docs/distribute.md states). The command's one-line errors need no server."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.__main__ import main as cli
from alexnet_tf.data import prepared, service, sharding
from alexnet_tf.data.pipeline import TrainSource
from alexnet_tf.train_input import Plan
from conftest import ROOT, run_main, tiny_overrides
from test_sharding import config, digest, prepared_dir, seeded_ids  # noqa: F401  (prepared_dir: a fixture)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(role, port, log, *extra):
    return subprocess.Popen([sys.executable, "-m", "alexnet_tf", "data-service", role, "--port", str(port), *extra],
                            cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_for(log, text, proc, seconds=120):
    deadline = time.time() + seconds
    while text not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


@pytest.fixture(scope="module")
def dispatcher(tmp_path_factory):
    """grpc://127.0.0.1:PORT of a dispatcher with two workers; each server must stop with status 0 on SIGTERM
    (the dispatcher, worker 1) or SIGINT (worker 0)."""
    logs = tmp_path_factory.mktemp("service")
    port = free_port()
    servers = [start("dispatcher", port, logs / "dispatcher.log")]
    wait_for(logs / "dispatcher.log", "serving on port", servers[0])
    for i in range(2):
        servers.append(start("worker", free_port(), logs / f"worker{i}.log", "--dispatcher", f"127.0.0.1:{port}",
                             "--host", "127.0.0.1"))
    for i in range(2):
        wait_for(logs / f"worker{i}.log", "serving on port", servers[i + 1])
    yield f"grpc://127.0.0.1:{port}"
    stops = [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]  # Ctrl-C stops a worker as SIGTERM does
    for server, signum in zip(servers, stops):
        server.send_signal(signum)
    statuses = [server.wait(timeout=60) for server in servers]
    names = ["dispatcher.log", "worker0.log", "worker1.log"]
    assert statuses == [0, 0, 0], [(logs / n).read_text()[-2000:] for n in names]
    for name, signum in zip(names, stops):
        assert f"stopped ({signum.name})" in (logs / name).read_text()


@pytest.mark.slow
def test_an_epoch_visits_every_example_once(dispatcher, prepared_dir, tmp_path, monkeypatch):  # noqa: F811
    """In-memory arrays by index and prepared shards by file: the ids the training process receives in one
    epoch of distributed_epoch are the training set, each once (and again in the next epoch)."""
    monkeypatch.setenv(sharding.TRACE_ENV, str(tmp_path))
    n = 64
    arrays = TrainSource(seeded_ids, arrays=(np.zeros((n, 1), np.uint8), np.arange(n)))
    plan = Plan(batch=16, steps=4, epochs=2, seed=0, shuffle_buffer=8)
    for epoch in (0, 1):
        got = [int(x) for images, _ in service.epoch_dataset(arrays, plan, dispatcher, epoch, 0).as_numpy_iterator()
               for x in images]
        assert sorted(got) == list(range(n)), got
    trace = [json.loads(line) for name in os.listdir(tmp_path) for line in open(tmp_path / name)]
    assert sorted(p for r in trace for p in r["positions"]) == sorted(list(range(n)) * 2)
    train, _, _ = prepared.prepared_source(config(prepared_dir))
    records = TrainSource(lambda xy, seed: digest(*xy), split=train)
    everything = [int(digest(image, 0)[0]) for image, _ in train.dataset().as_numpy_iterator()]
    got = [int(x) for images, _ in service.epoch_dataset(records, plan, dispatcher, 0, 0).as_numpy_iterator() for x in images]
    assert sorted(got) == sorted(everything) and len(set(got)) == n


def service_run(tmp_path, dispatcher, *extra, driver=()):
    """train.py with data.service on the tiny synthetic run (64 images, 4 steps of 16 per epoch, 2 epochs),
    its trained ids traced into tmp_path/trace."""
    os.makedirs(tmp_path / "trace", exist_ok=True)
    sets = tiny_overrides(**{"data.service": dispatcher, "train.epochs": 2, "train.checkpoint_every": 3})
    program = [os.path.join(ROOT, "tests", "crash_driver.py"), *driver, "--"] if driver else [os.path.join(ROOT, "train.py")]
    return subprocess.run([sys.executable, *program, "--run-dir", str(tmp_path / "run"),
                           *[a for o in [*sets, *extra] for a in ("--set", o)]], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, sharding.TRACE_ENV: str(tmp_path / "trace")}, timeout=600)


def trained(tmp_path):
    """{pid file: {(epoch, position): id}} of the batches each training process took from the service."""
    out = {}
    for name in os.listdir(tmp_path / "trace"):
        lines = [json.loads(line) for line in open(tmp_path / "trace" / name)]
        out[name] = {(r["epoch"], p): x for r in lines for p, x in zip(r["positions"], r["ids"])}
    return out


@pytest.mark.slow
def test_kill_9_and_resume_with_the_service(dispatcher, tmp_path):
    """Killed after global step 7 (checkpoints after steps 3, 4 and 6), the rerun resumes at step 6 = step 2 of
    epoch 2 and trains steps 7 and 8 from a new job for epoch 2 that starts at position 2 x 16 of the epoch's
    order: the 32 examples not yet due, each once. Which 32 the killed process had trained first is up to the
    service's order: how many of them the resumed part repeats is counted and printed (-s)."""
    killed = service_run(tmp_path, dispatcher, driver=["--kill-at-step", "7"])
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    before = trained(tmp_path)
    (first,) = before.values()
    assert sorted(set(e for e, _ in first)) == [0, 1]
    assert sorted(first[(0, p)] for p in range(64)) == list(range(64))  # the uninterrupted epoch 1: all, once
    resumed = service_run(tmp_path, dispatcher)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "ckpt-6: 1 of 2 epochs done and 2 of 4 steps of epoch 2" in resumed.stdout
    (second,) = [v for k, v in trained(tmp_path).items() if k not in before]
    assert sorted(second) == [(1, p) for p in range(32, 64)]          # steps 3 and 4 of epoch 2 only
    after = [second[(1, p)] for p in range(32, 64)]
    kept = [first[(1, p)] for p in range(32)]                           # steps 1 and 2, in ckpt-6
    # the new job visits the epoch's order from position 2 x 16 on: the 32 examples not yet due, each once
    due = np.random.default_rng([0, 1]).permutation(64)[32:]            # train.seed 0, epoch index 1
    assert sorted(after) == sorted(due.tolist())
    assert len(set(kept)) == 32
    print(f"interrupted epoch: {len(set(kept) & set(after))} of the 32 examples trained after the resume had been "
          f"trained before it; {64 - len(set(kept) | set(after))} of the 64 not trained in that epoch")
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "last")).endswith("ckpt-8")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2


def test_a_port_in_use_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run_main(capsys, cli, ["data-service", "dispatcher", "--port", port])
    assert status == 1 and out == "" and err == f"error: --port {port} cannot be bound (Address already in use); " \
                                                "expected a free port (another server listens there?)\n"


def test_an_unreachable_dispatcher_is_one_line(capsys):
    port = free_port()
    status, out, err = run_main(capsys, cli, ["data-service", "worker", "--port", free_port(), "--dispatcher",
                                              f"127.0.0.1:{port}", "--wait", "1"])
    assert status == 1 and out == "", err
    assert err == (f"error: --dispatcher 127.0.0.1:{port}: no tf.data service dispatcher answers there after 1 s "
                   f"(Connection refused); expected `alexnet-tf data-service dispatcher --port {port}` running on "
                   "127.0.0.1\n")


@pytest.mark.slow
def test_training_with_an_unreachable_service_is_one_line(tmp_path, capsys):
    from alexnet_tf import train_command
    port = free_port()
    status, out, err = run_main(capsys, train_command.main, [
        "--run-dir", tmp_path, *[a for o in tiny_overrides(**{"data.service": f"grpc://127.0.0.1:{port}"})
                                 for a in ("--set", o)]])
    assert status == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: data.service = grpc://127.0.0.1:{port}: no tf.data service dispatcher answers there")


def test_the_servers_need_valid_arguments(capsys):
    for argv, fragment in [(["worker", "--port", "5050"], "needs --dispatcher HOST:PORT"),
                           (["dispatcher", "--port", "70000"], "--port 70000; expected a port in 1..65535"),
                           (["worker", "--port", "5050", "--dispatcher", "nowhere"], "expected HOST:PORT")]:
        status, out, err = run_main(capsys, cli, ["data-service", *argv])
        assert status == 2 and err.count("\n") == 1 and fragment in err, err
