"""distribute.input = sharded: each worker's part of an epoch, against hand counts and the files themselves.

In this process: the worker streams of data/sharding.py for k workers (tf.distribute.InputContext as
distribute_datasets_from_function makes them), over in-memory arrays and folder files (element-level)
and prepared TFRecord shards (file-level), with transforms that return each example's id, so the ids
are counted, not inferred. As local processes (slow): a two-worker job on prepared shards, its ids from
the decode path's trace (ALEXNET_TF_INPUT_TRACE), its input_stats.json files, and kill -9 of a worker.
"""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf import distribute
from alexnet_tf.__main__ import main as cli
from alexnet_tf.data import prepared, sharding
from alexnet_tf.data.pipeline import TrainSource
from alexnet_tf.data.sources import FolderSplit
from alexnet_tf.train_input import Plan
from conftest import ROOT, run_main, tiny_overrides
from fake_images import encode, pixels

CLASSES, PER_CLASS, SHARD = 4, 16, 8          # 64 training images in 8 prepared shards of 8
SETTINGS = {"data.source": "prepared", "data.resize": 48, "model.image_size": 40, "model.geometry": "small",
            "model.num_classes": CLASSES, "model.channels": 3, "model.width": 0.125, "model.fc_units": 16,
            "model.dropout": 0.0, "model.weight_init": "he_normal", "model.hidden_bias": 0.0, "data.scale": 0.02,
            "data.val_examples": 0, "data.batch_size": 16, "train.epochs": 2, "train.export": False,
            "train.deterministic": True, "train.checkpoint_every": 3}


def stream(source, plan, k, i, start=(0, 0)):
    """Worker i of k's batches [(images, labels)] as numpy, from `start` through the spare epoch."""
    context = tf.distribute.InputContext(num_input_pipelines=k, input_pipeline_id=i, num_replicas_in_sync=k)
    return list(sharding.worker_dataset(source, plan, context, start).as_numpy_iterator())


def ids_per_epoch(batches, plan, k):
    """{epoch: [ids]} of a stream from (0, 0): the first element of each batch is its ids."""
    per_epoch = plan.steps  # per-replica batches of one worker per epoch, one replica per worker
    return {e: np.concatenate([b[0] for b in batches[e * per_epoch:(e + 1) * per_epoch]]).tolist()
            for e in range(plan.epochs)}


def seeded_ids(xy, seed):
    """A transform that returns the examples' ids (the labels here) and the batch's augmentation seed."""
    ids = xy[1]
    return ids, tf.repeat(seed[None], tf.shape(ids)[0], axis=0)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_element_level_parts_of_an_epoch_are_disjoint_and_cover_it(k):
    """64 examples, global batch 16: each of k workers gets 64/k per epoch; together each example once."""
    n, batch = 64, 16
    source = TrainSource(seeded_ids, arrays=(np.zeros((n, 1), np.uint8), np.arange(n)))
    plan = Plan(batch=batch, steps=n // batch, epochs=3, seed=7, shuffle_buffer=1)
    parts = [ids_per_epoch(stream(source, plan, k, i), plan, k) for i in range(k)]
    for e in range(plan.epochs):
        union = [x for part in parts for x in part[e]]
        assert sorted(union) == list(range(n)), (e, union)          # all, none twice
        assert all(len(part[e]) == n // k for part in parts)
    if k > 1:  # a new permutation every epoch: a worker's part changes
        assert set(parts[0][0]) != set(parts[0][1])
    assert parts[0][0] != parts[0][1]


def test_a_resumed_stream_is_the_rest_of_the_uninterrupted_one():
    """From (epoch 1, step 2) the stream (ids and seeds) is the uninterrupted stream's from that step on."""
    n, batch, k = 64, 16, 2
    source = TrainSource(seeded_ids, arrays=(np.zeros((n, 1), np.uint8), np.arange(n)))
    plan = Plan(batch=batch, steps=n // batch, epochs=2, seed=3, shuffle_buffer=1)
    for i in range(k):
        whole, resumed = stream(source, plan, k, i), stream(source, plan, k, i, start=(1, 2))
        assert len(whole) == (plan.epochs + 1) * plan.steps  # the epochs and the spare one
        assert len(resumed) == len(whole) - plan.steps - 2
        for a, b in zip(whole[plan.steps + 2:], resumed):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
    # another train.seed: another order
    other = stream(source, plan._replace(seed=4), k, 0)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(other, stream(source, plan, k, 0)))


def test_folder_files_are_sharded_by_file_and_read_only_by_their_worker(tmp_path):
    """Each file's bytes name it: the ids a worker's transform sees are the files it read."""
    n, batch, k = 24, 8, 2
    paths = []
    for j in range(n):
        paths.append(str(tmp_path / f"{j:02d}.bin"))
        (tmp_path / f"{j:02d}.bin").write_bytes(str(j).encode())
    split = FolderSplit(paths, np.arange(n), "test")
    source = TrainSource(lambda xy, seed: (tf.strings.to_number(xy[0], tf.int64), xy[1]), split=split)
    plan = Plan(batch=batch, steps=n // batch, epochs=2, seed=0, shuffle_buffer=1)
    parts = [stream(source, plan, k, i) for i in range(k)]
    for e in range(plan.epochs):
        mine = [np.concatenate([b[0] for b in part[e * plan.steps:(e + 1) * plan.steps]]).tolist() for part in parts]
        assert sorted(mine[0] + mine[1]) == list(range(n)) and len(mine[0]) == len(mine[1]) == n // k
        for batches in parts:  # label and file agree: the transform got (bytes, label) of one file
            for images, labels in batches:
                np.testing.assert_array_equal(images, labels)


# === Prepared TFRecord shards: file-level ===

@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    """64 training images (4 classes x 16, distinct pixels) and 8 validation images prepared into 8 + 1 shards."""
    root = tmp_path_factory.mktemp("folder")
    seed = 0
    for split, count in (("train", PER_CLASS), ("val", 2)):
        for c in range(CLASSES):
            os.makedirs(root / split / f"c{c}")
            for j in range(count):
                (root / split / f"c{c}" / f"{j}.jpg").write_bytes(encode(pixels(48, 48, seed=seed), "jpeg"))
                seed += 1
    out = tmp_path_factory.mktemp("prepared") / "out"
    sets = [a for k, v in {**SETTINGS, "data.source": "folder", "data.path": root}.items() for a in ("--set", f"{k}={v}")]
    config_file = os.path.join(ROOT, "configs", "fashion_mnist.yaml")  # prepare reads the data keys, all set here
    assert cli(["prepare", "--config", config_file, *sets, "--out", str(out), "--shard-images", str(SHARD)]) == 0
    return out


def config(prepared_dir, **extra):
    return alexnet_tf.load_config(None, [f"{k}={v}" for k, v in {**SETTINGS, "data.path": prepared_dir, **extra}.items()])


def digest(image_bytes, label):
    return tf.strings.to_hash_bucket_fast(image_bytes, 2**62), label


def test_prepared_shards_are_read_whole_by_one_worker_each(prepared_dir):
    """Worker i of 2 reads shards i, i+2, ...: the ids it decodes are exactly those files' records (read with
    tf.data here), and the two parts are the training set once per epoch."""
    train, _, _ = prepared.prepared_source(config(prepared_dir))
    files = sharding.shard_files(train)
    assert [count for _, count in files] == [SHARD] * 8
    spec = {prepared.IMAGE: tf.io.FixedLenFeature([], tf.string), prepared.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    in_file = [{int(digest(r[prepared.IMAGE], 0)[0]) for r in tf.data.TFRecordDataset(path).map(
        lambda x: tf.io.parse_single_example(x, spec)).as_numpy_iterator()} for path, _ in files]
    source = TrainSource(lambda xy, seed: digest(*xy), split=train)
    plan = Plan(batch=16, steps=4, epochs=2, seed=0, shuffle_buffer=16)
    parts = [stream(source, plan, 2, i) for i in range(2)]
    for e in range(plan.epochs):
        mine = [[int(x) for b in part[e * 4:(e + 1) * 4] for x in b[0]] for part in parts]
        assert sorted(mine[0] + mine[1]) == sorted(set().union(*in_file))      # 64 distinct, each once
        for i in range(2):
            assert set(mine[i]) == set().union(*in_file[i::2])
    resumed = stream(source, plan, 2, 1, start=(1, 3))
    assert [b[0].tolist() for b in resumed] == [b[0].tolist() for b in parts[1][4 + 3:]]


def test_a_worker_without_shards_is_one_line(prepared_dir, tmp_path, capsys):
    """9 workers over 8 shards: worker 8 would read nothing; train.py says so in one line (exit 1)."""
    from alexnet_tf.train_input import Sharded
    from alexnet_tf.errors import UserError
    train, _, _ = prepared.prepared_source(config(prepared_dir))

    class Nine:
        replicas, workers, worker, is_chief = 9, 9, 8, False
    with pytest.raises(UserError, match=r"worker 8 of 9 has no training examples .*expected at least one shard per worker"):
        Sharded(TrainSource(None, split=train), Plan(18, 3, 1, 0, 1), None, Nine, str(tmp_path / "s.json"))


# === Config and resume across modes ===

@pytest.mark.parametrize("overrides, fragment", [
    ({"data.service": "localhost:5050"}, "data.service = 'localhost:5050'; expected grpc://HOST:PORT"),
    ({"data.service": "grpc://h:70000"}, "expected grpc://HOST:PORT"),
    ({"data.service": "grpc://h:5050", "distribute.strategy": "multi_worker"}, "expected one training process"),
    ({"data.service": "grpc://h:5050", "distribute.input": "sharded"}, "expected one of them"),
    ({"data.service": "grpc://h:5050", "data.source": "folder", "data.path": "x", "model.channels": 3},
     None),
    ({"data.service": "grpc://h:5050", "data.source": "tfds", "data.tfds_name": "x", "model.channels": 3},
     "prepare a tfds dataset first"),
    ({"distribute.input": "everywhere"}, "expected one of auto, sharded, replicated"),
])
def test_input_config_errors(overrides, fragment, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    from alexnet_tf.config import ConfigError
    items = tiny_overrides(**overrides)
    if fragment is None:
        alexnet_tf.load_config(None, items)
        return
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        alexnet_tf.load_config(None, items)


def test_sharded_batch_must_divide_over_the_workers_of_tf_config(monkeypatch):
    from alexnet_tf.config import ConfigError
    from alexnet_tf.input_modes import input_mode
    monkeypatch.setenv("TF_CONFIG", distribute.local_tf_configs(3)[0])
    with pytest.raises(ConfigError, match=r"data.batch_size = 16 with distribute.input = sharded over 3 workers; "
                                          r"expected a multiple of 3"):
        alexnet_tf.load_config(None, tiny_overrides(**{"distribute.strategy": "multi_worker"}))
    replicated = alexnet_tf.load_config(None, tiny_overrides(**{"distribute.strategy": "multi_worker",
                                                                 "distribute.input": "replicated"}))
    assert input_mode(replicated) == "replicated"
    assert input_mode(alexnet_tf.load_config(None, tiny_overrides(**{"data.batch_size": 12}))) == "replicated"


@pytest.mark.slow
def test_a_sharded_checkpoint_is_not_resumed_by_replicated_input(tmp_path, capsys):
    """A replicated run resumes a tf.data iterator; a checkpoint of sharded input has none: one line, exit 2.
    The other way round works: sharded input rebuilds its position from the epoch and step."""
    from alexnet_tf import train_command
    common = ["--run-dir", tmp_path, *[a for o in tiny_overrides(**{"train.epochs": 1}) for a in ("--set", o)]]
    status, _, err = run_main(capsys, train_command.main, [*common, "--set", "distribute.input=sharded"])
    assert status == 0, err
    status, out, err = run_main(capsys, train_command.main, [*common, "--set", "train.epochs=2"])
    assert status == 2 and err.count("\n") == 1, err
    assert "holds no tf.data iterator position (it was written with distribute.input = sharded" in err
    status, out, err = run_main(capsys, train_command.main, [*common, "--set", "train.epochs=2",
                                                            "--set", "distribute.input=sharded"])
    assert status == 0 and "resuming from" in out and "1 of 2 epochs done" in out, out + err


# === Two worker processes (TF_CONFIG on 127.0.0.1) ===

def worker_args(prepared_dir, run_dir, *extra, driver=()):
    """train.py (or the crash driver) on `config(prepared_dir)` under multi_worker, plus `extra` overrides."""
    from alexnet_tf.config import dump
    config_file = os.path.join(os.path.dirname(run_dir), "config.yaml")
    dump(config(prepared_dir, **{"distribute.strategy": "multi_worker"}), config_file)
    program = [os.path.join(ROOT, "tests", "crash_driver.py"), *driver, "--"] if driver else [os.path.join(ROOT, "train.py")]
    return [sys.executable, *program, "--config", config_file, "--run-dir", str(run_dir),
            *[a for o in extra for a in ("--set", o)]]


def run_job(prepared_dir, tmp_path, *extra, kill_worker_at=None, timeout=300):
    """Two workers (each its own run directory), ids traced into tmp_path/trace; with `kill_worker_at`,
    worker 1 is killed -9 after that global step and started again with the same command."""
    trace = tmp_path / "trace"
    os.makedirs(trace, exist_ok=True)
    procs, envs, logs = [], [], []
    for i, tf_config in enumerate(distribute.local_tf_configs(2)):
        envs.append({**os.environ, "TF_CONFIG": tf_config, sharding.TRACE_ENV: str(trace)})
        driver = ["--kill-at-step", str(kill_worker_at), "--once", str(tmp_path / "killed")] if kill_worker_at and i else ()
        logs.append(tmp_path / f"worker{i}.log")
        procs.append(subprocess.Popen(worker_args(prepared_dir, tmp_path / f"w{i}", *extra, driver=driver), cwd=ROOT,
                                      env=envs[i], stdout=open(logs[i], "w"), stderr=subprocess.STDOUT))
    try:
        if kill_worker_at:
            assert procs[1].wait(timeout=timeout) == -signal.SIGKILL, logs[1].read_text()[-3000:]
            os.rename(logs[1], tmp_path / "worker1-killed.log")
            procs[1] = subprocess.Popen(worker_args(prepared_dir, tmp_path / "w1", *extra), cwd=ROOT, env=envs[1],
                                        stdout=open(logs[1], "w"), stderr=subprocess.STDOUT)
        for i, p in enumerate(procs):
            assert p.wait(timeout=timeout) == 0, logs[i].read_text()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    return [logs[i].read_text() for i in range(2)]


def traced(tmp_path, worker):
    """{pid: [(epoch, position, id)]} the decode path of worker `worker` traced, per process."""
    found = {}
    for name in os.listdir(tmp_path / "trace"):
        if name.startswith(f"worker-{worker}."):
            lines = [json.loads(line) for line in open(tmp_path / "trace" / name)]
            found[name] = [(r["epoch"], p, x) for r in lines for p, x in zip(r["positions"], r["ids"])]
    return found


def final_weights(tmp_path):
    """The chief's model.keras and worker 1's last recovery checkpoint (the all-reduce keeps them equal)."""
    chief = keras.saving.load_model(str(tmp_path / "w0" / "model.keras"))
    worker = keras.models.clone_model(chief)
    tf.train.Checkpoint(model=worker).restore(
        tf.train.latest_checkpoint(str(tmp_path / "w1" / "checkpoints" / "worker-1"))).expect_partial()
    return chief.get_weights(), worker.get_weights()


@pytest.fixture(scope="module")
def job(prepared_dir, tmp_path_factory):
    """The uninterrupted two-worker job: 2 epochs of 4 steps of 16 (8 per worker) on the 64 prepared images."""
    tmp_path = tmp_path_factory.mktemp("job")
    logs = run_job(prepared_dir, tmp_path)
    return tmp_path, logs


@pytest.mark.slow
def test_two_workers_decode_disjoint_halves_of_every_epoch(job, prepared_dir):
    """Each worker decodes N/k = 32 images of every epoch (the decode path's trace, a hand count and its
    input_stats.json agree), only from its own shards, and the two halves are the training set. Decoded is
    trained here: an epoch's stream holds exactly its steps x 8 examples per worker, and the job trains every
    epoch to its end (what the spare epoch after the last decodes is traced as epoch 2 and left out)."""
    tmp_path, logs = job
    per_worker = []
    for i in range(2):
        (records,) = traced(tmp_path, i).values()  # one process each
        per_worker.append(records)
        assert f"input: sharded, worker {i} of 2 decodes 32 examples per epoch from its part (32 of the 64" in logs[i]
    epochs = [[[x for e, _, x in records if e == epoch] for records in per_worker] for epoch in (0, 1)]
    for halves in epochs:
        assert [len(h) for h in halves] == [32, 32]                  # N/k each, counted in the decode path
        assert len(set(halves[0] + halves[1])) == 64                  # the training set, no example twice
    # the ids are <shard file>__<record>: worker i decoded only shards i, i+2, ...
    for i, records in enumerate(per_worker):
        shards = {int(x.split(".tfrecord-")[1][:5]) for _, _, x in records}
        assert {s % 2 for s in shards} == {i}, shards
    stats = [json.loads((tmp_path / "w0" / "input_stats.json").read_text()),
             json.loads((tmp_path / "w1" / "checkpoints" / "worker-1" / "input_stats.json").read_text())]
    assert stats == [{"worker": i, "workers": 2, "examples_decoded": [32, 32], "from_step": [0, 0]} for i in range(2)]
    chief, worker = final_weights(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(chief, worker))


@pytest.mark.slow
def test_a_sharded_job_resumes_exactly_after_kill_9_of_a_worker(job, prepared_dir, tmp_path):
    """Worker 1 is killed -9 after global step 7 (checkpoints after steps 3, 4 and 6) and started again; the
    chief loses its peer and restarts itself; both resume from step 6 (step 2 of epoch 2), rebuild their
    streams from there, and end with the uninterrupted job's weights, bit for bit."""
    logs = run_job(prepared_dir, tmp_path, "distribute.collective_timeout=60", kill_worker_at=7)
    assert "kill -9 after global step 7" in (tmp_path / "worker1-killed.log").read_text()
    assert "lost a peer worker" in logs[0]
    for log in logs:
        resumed = log.split("resuming from")[-1].splitlines()[0]
        assert "ckpt-6: 1 of 2 epochs done and 2 of 4 steps of epoch 2" in resumed, resumed
    for a, b in zip(final_weights(tmp_path)[0], final_weights(job[0])[0]):
        np.testing.assert_array_equal(a, b)
    # the restarted worker decoded the rest of epoch 2 only: positions 16..31 of its part, the same examples
    # at the same positions as in the uninterrupted job
    uninterrupted = {(e, p): x for (records,) in [traced(job[0], 1).values()] for e, p, x in records}
    (after,) = [records for name, records in traced(tmp_path, 1).items()
                if any(e == 0 for e, _, _ in records) is False and records]
    assert sorted(p for e, p, _ in after if e == 1) == list(range(16, 32))
    assert all(uninterrupted[(e, p)] == x for e, p, x in after if e < 2)
    stats = json.loads((tmp_path / "w1" / "checkpoints" / "worker-1" / "input_stats.json").read_text())
    assert stats == {"worker": 1, "workers": 2, "examples_decoded": [32, 16], "from_step": [0, 2]}
