"""Exact resume: kill -9 a run at random moments (between steps, inside a checkpoint write), rerun the
same command, and end bit-identical to an uninterrupted run (deterministic ops, fixed seed)."""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
import alexnet_tf.optim  # noqa: F401  (registers the custom classes for load_model)
from alexnet_tf.checkpoint import TrainState
from alexnet_tf.config import dump
from conftest import ROOT, run_main, tiny_overrides
from test_folder import folder  # noqa: F401  (the image-folder fixture)

# 3 epochs x 4 steps; recovery checkpoints at global steps 3, 6, 9 (every 3) and 4, 8, 12 (epoch ends).
# Dropout and flips stay on: their random state must be restored too.
OVERRIDES = tiny_overrides(**{"train.deterministic": True, "train.epochs": 3, "train.checkpoint_every": 3,
                               "train.log_every": 1})
STEPS = 12


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of OVERRIDES, trained once in this process for every test that compares a
    killed, signalled or damaged run with it: (config, its YAML file, run directory, metrics)."""
    from alexnet_tf.training import train
    root = tmp_path_factory.mktemp("reference")
    config = alexnet_tf.load_config(None, OVERRIDES)
    dump(config, str(root / "config.yaml"))
    metrics = train(config, str(root / "run"), verbose=0)
    return config, root / "config.yaml", root / "run", metrics


def weights(run_dir):
    return keras.saving.load_model(str(run_dir / "model.keras")).get_weights()


def same_weights(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def train_py(capsys, config_file, run_dir, *sets):
    """`python train.py --config CONFIG --run-dir RUN_DIR --set ...`, in this process (a resumed run
    needs no process of its own; the killed and signalled ones do)."""
    from alexnet_tf import train_command
    return run_main(capsys, train_command.main,
                    ["--config", config_file, "--run-dir", run_dir, *[a for o in sets for a in ("--set", o)]])


class _Crash(Exception):
    pass


def crash_at_step(config, run_dir, step):
    """Train in this process and stop dead after global step `step`, leaving the run directory as a
    kill -9 there leaves it (no handler in the training loop saves on an exception)."""
    from alexnet_tf.training import train

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == step:
                raise _Crash()

    with pytest.raises(_Crash):
        train(config, str(run_dir), verbose=0, callbacks=[Crash()])


def command(config_file, run_dir, *driver_args):
    return [sys.executable, os.path.join(ROOT, "tests", "crash_driver.py"), *driver_args, "--",
            "--config", str(config_file), "--run-dir", str(run_dir)]


def run(config_file, run_dir, *driver_args):
    return subprocess.run(command(config_file, run_dir, *driver_args), capture_output=True, text=True, cwd=ROOT,
                          timeout=240)


def run_and_kill_from_outside(config_file, run_dir, step, delay):
    """Start the run, wait until it reports global step `step`, sleep `delay` s and kill -9 it."""
    proc = subprocess.Popen(command(config_file, run_dir, "--print-steps"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if line.strip() == f"global step {step}":
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        rest = proc.communicate(timeout=240)[0]
    return proc.returncode, "".join(out) + (rest or "")


def checkpoint_values(prefix):
    """Every saved tensor of a checkpoint except the iterator state (a variant) and the wall clock."""
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    return {k: reader.get_tensor(k) for k in dtypes
            if dtypes[k] != tf.variant and k != "_CHECKPOINTABLE_OBJECT_GRAPH" and not k.startswith("wall_seconds")}


def next_batch_after(config, prefix):
    """The next training batch of the data iterator restored from a checkpoint."""
    from alexnet_tf.data import make_datasets
    iterator = iter(make_datasets(config).train)
    tf.train.Checkpoint(data=iterator).restore(prefix).expect_partial()
    return [t.numpy() for t in next(iterator)]


@pytest.mark.slow
def test_killed_runs_resume_bit_identical(reference, tmp_path, capsys):
    """Killed inside a random checkpoint write (files written, pointer not), then from outside at a
    random moment up to 50 ms after a random step, then rerun to the end; a finished run rerun once
    more only evaluates.

    Bit-identity holds between runs on the same machine with the same kernels: the reference (this
    process) and the resumed run (subprocesses) share the CPU, the thread count and TF_ENABLE_ONEDNN_OPTS
    (inherited), and train.deterministic is on. oneDNN and TensorFlow's own kernels sum floats in different
    orders, so a run resumed with oneDNN switched, or on another CPU, agrees only to float rounding."""
    seed = int(os.environ.get("ALEXNET_TF_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    in_write = rng.randint(1, 3)             # the 1st..3rd recovery checkpoint write: global step 3, 4 or 6
    outside_kill = rng.randint(7, 11)        # a later step; the delay often lands inside a checkpoint write
    delay = rng.uniform(0.0, 0.05)
    where = f"(ALEXNET_TF_TEST_SEED={seed}: killed in checkpoint write {in_write}, then " \
            f"{delay * 1000:.0f} ms after step {outside_kill})"

    config, config_file, reference, metrics = reference  # uninterrupted, in this process
    resumed = tmp_path / "resumed"
    from alexnet_tf.training import train

    killed = run(config_file, resumed, "--kill-in-save", str(in_write))
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert "(files written, pointer not)" in killed.stdout, where
    status, out = run_and_kill_from_outside(config_file, resumed, outside_kill, delay)
    assert status == -signal.SIGKILL, out[-2000:]
    # killed inside its first checkpoint write, the run had no complete checkpoint: it starts afresh
    assert ("resuming from" in out) == (in_write > 1), out[-2000:]
    status, out, err = train_py(capsys, config_file, resumed)
    assert status == 0 and "resuming from" in out, err[-2000:]

    # the final weights, and every other saved value, are the uninterrupted run's
    assert same_weights(weights(reference), weights(resumed)), where
    last_a = tf.train.latest_checkpoint(str(reference / "checkpoints" / "last"))
    last_b = tf.train.latest_checkpoint(str(resumed / "checkpoints" / "last"))
    assert last_a.endswith(f"ckpt-{STEPS}") and last_b.endswith(f"ckpt-{STEPS}"), where
    values_a, values_b = checkpoint_values(last_a), checkpoint_values(last_b)
    assert values_a.keys() == values_b.keys()
    assert any(k.startswith("optimizer/") for k in values_a) and any("dropout_seeds" in k for k in values_a)
    different = [k for k in values_a if not np.array_equal(values_a[k], values_b[k])]
    assert not different, f"{different} {where}"  # momentum, lr, plateau state, dropout seeds, step counters
    # and the data iterators stand at the same place: the next batch (with its augmentation) is the same
    for x, y in zip(next_batch_after(config, last_a), next_batch_after(config, last_b)):
        np.testing.assert_array_equal(x, y, err_msg=where)

    # the same command on the finished run: nothing left to train, the same final metrics
    again = train(config, str(resumed), verbose=0)
    for key in ("val_top1_error", "val_top5_error", "val_loss", "epochs_completed"):
        assert again[key] == metrics[key], key


def test_data_position_and_atomic_pointer(tmp_path):
    """In process: the restored iterator continues with the next element (no repeat, no skip), and a
    half-written newer checkpoint (files present, pointer not updated) is ignored, then overwritten.
    The epoch's sums are stored as the float64 4-vector `epoch_sums` and restored as they were."""
    from alexnet_tf.callbacks import DivideLROnPlateau
    from alexnet_tf.train_steps import EpochSums
    config = alexnet_tf.load_config(None, tiny_overrides())
    model = alexnet_tf.compile_model(alexnet_tf.build_model(config), config)
    model.optimizer.build(model.trainable_variables)
    iterator = iter(tf.data.Dataset.range(100).shuffle(10, seed=1).batch(3))
    state = TrainState(model, iterator, DivideLROnPlateau(), str(tmp_path / "last"))
    seen = [next(iterator).numpy() for _ in range(5)]
    model.optimizer.iterations.assign(5)
    sums = EpochSums(loss=11.5, top1_errors=7.0, top5_errors=2.0, examples=15.0)
    saved = state.save(0, 5, sums, 0.0)
    stored = tf.train.load_checkpoint(saved).get_tensor("epoch_sums/.ATTRIBUTES/VARIABLE_VALUE")
    assert stored.dtype == np.float64 and stored.tolist() == [11.5, 7.0, 2.0, 15.0]
    following = [next(iterator).numpy() for _ in range(3)]
    # a crash after the files of ckpt-9 were written but before the pointer moved
    model.optimizer.iterations.assign(9)
    state.recovery.write(str(tmp_path / "last" / "ckpt-9"))
    assert os.path.exists(tmp_path / "last" / "ckpt-9.index")
    iterator2 = iter(tf.data.Dataset.range(100).shuffle(10, seed=1).batch(3))
    state2 = TrainState(model, iterator2, DivideLROnPlateau(), str(tmp_path / "last"))
    assert state2.restore() == saved and int(model.optimizer.iterations.numpy()) == 5
    assert state2.epoch_sums == sums
    assert [next(iterator2).numpy().tolist() for _ in range(3)] == [f.tolist() for f in following]
    all_seen = np.concatenate(seen + following)
    assert len(set(all_seen.tolist())) == len(all_seen)  # nothing repeated
    model.optimizer.iterations.assign(9)
    assert state2.save(0, 9, EpochSums(), 0.0).endswith("ckpt-9")
    assert tf.train.latest_checkpoint(str(tmp_path / "last")).endswith("ckpt-9")


def test_file_source_iterator_restores_its_position(folder, tmp_path):  # noqa: F811  (the fixture)
    """An image-folder pipeline (decoding, random crops, flips, PCA lighting in tf.data): an iterator
    restored from a checkpoint gives the very batches the original gives next, across an epoch end."""
    from alexnet_tf.data import make_datasets
    from test_folder import config as folder_config
    root, _ = folder
    config = folder_config(root, tmp_path, **{"train.deterministic": True, "data.lighting": True,
                                              "data.mean": "image"})
    iterator = iter(make_datasets(config).train)
    for _ in range(2):  # 9 training images in batches of 3: the epoch ends after the 3rd batch
        next(iterator)
    path = tf.train.Checkpoint(data=iterator).write(str(tmp_path / "position"))
    expected = [[t.numpy() for t in next(iterator)] for _ in range(3)]
    restored = iter(make_datasets(config).train)
    tf.train.Checkpoint(data=restored).read(path).assert_consumed()
    for batch in expected:
        for x, y in zip(batch, next(restored)):
            np.testing.assert_array_equal(x, y.numpy())


def test_workers_agree_on_the_newest_common_checkpoint(tmp_path):
    """multi_worker restore: a worker killed while writing ckpt-4 holds ckpt-3 only; the others, who hold
    ckpt-3 and ckpt-4, must fall back to ckpt-3. Checked here with the all-gather replaced by a list."""
    from alexnet_tf.callbacks import DivideLROnPlateau
    from alexnet_tf.train_steps import EpochSums
    config = alexnet_tf.load_config(None, tiny_overrides())
    model = alexnet_tf.compile_model(alexnet_tf.build_model(config), config)
    model.optimizer.build(model.trainable_variables)
    iterator = iter(tf.data.Dataset.range(10))
    state = TrainState(model, iterator, DivideLROnPlateau(), str(tmp_path))
    for step in (3, 4):
        model.optimizer.iterations.assign(step)
        state.save(0, step, EpochSums(), 0.0)
    assert state.restore(agree=lambda mine: [mine, 3]).endswith("ckpt-3")
    assert int(model.optimizer.iterations.numpy()) == 3 and int(state.step.numpy()) == 3
    assert state.restore(agree=lambda mine: [mine, mine]).endswith("ckpt-4")
    with pytest.raises(RuntimeError, match="some workers have recovery checkpoints and others none"):
        state.restore(agree=lambda mine: [mine, -1])
    with pytest.raises(RuntimeError, match="newest common checkpoint is step 2"):
        state.restore(agree=lambda mine: [mine, 2])


@pytest.mark.slow
def test_a_signal_saves_after_the_step_and_the_rerun_is_bit_identical(reference, tmp_path, capsys):
    """SIGTERM (a scheduler, docker stop, a preemptible VM) or SIGINT (Ctrl-C) sent to a real training
    process after a random step: it saves, says so in one line, exits 128 + the signal's number, and
    the rerun ends bit-identical to an uninterrupted run: no step is lost or repeated."""
    seed = int(os.environ.get("ALEXNET_TF_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    signum = rng.choice([signal.SIGTERM, signal.SIGINT])
    at = rng.choice([1, 2, 5, 7, 10])  # never a multiple of checkpoint_every (3) or an epoch end (4)
    where = f"(ALEXNET_TF_TEST_SEED={seed}: {signum.name} after global step {at})"
    config, config_file, reference_dir, _ = reference
    run_dir = tmp_path / "signalled"
    proc = subprocess.Popen(command(config_file, run_dir, "--print-steps"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.strip() == f"global step {at}":
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signum, where + err[-2000:]
    last = err.strip().splitlines()[-1]
    # the step that was running when the signal came finishes, then it saves: at + 1 when the signal lands
    # during the next step; the child runs on while this process reads its line, so on a loaded machine one
    # more step can pass before the signal lands (at + 2); bit-identity below shows no step is lost or repeated
    saved = tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "last"))
    assert last == f"{signum.name}: stopped after saving {saved}; rerun the same command to resume", where + last
    assert at <= int(saved.rsplit("-", 1)[1]) <= at + 2, where
    assert not (run_dir / "metrics.json").exists()
    # and on stdout the next commands: the curves so far, and the command line that resumes the run
    rerun = out.strip().splitlines()[-1]
    assert rerun.endswith(f"--config {config_file} --run-dir {run_dir}    # resumes from the last checkpoint"), rerun
    assert out.strip().splitlines()[-2].endswith(f"--logdir {run_dir}/tb    # the curves so far"), out[-2000:]

    status, out, err = train_py(capsys, config_file, run_dir)
    assert status == 0 and "resuming from" in out, err[-2000:]
    assert same_weights(weights(reference_dir), weights(run_dir)), where


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(reference, tmp_path, capsys):
    """The newest of the two recovery checkpoints truncated, or with flipped bytes: the rerun says so
    in one line, resumes from the older one and ends bit-identical; both damaged: one line, exit 1.
    (The crash and the reruns run in this process: what is tested is how train.py reads the files.)"""
    config, config_file, reference_dir, _ = reference
    crashed = tmp_path / "crashed"
    crash_at_step(config, crashed, 7)  # checkpoints 4 (epoch 1) and 6 exist
    assert sorted(p.name for p in (crashed / "checkpoints" / "last").glob("*.index")) == ["ckpt-4.index", "ckpt-6.index"]

    for damage in ("truncate", "flip"):
        run_dir = tmp_path / damage
        shutil.copytree(crashed, run_dir)
        data = next((run_dir / "checkpoints" / "last").glob("ckpt-6.data-*"))
        blob = bytearray(data.read_bytes())
        if damage == "truncate":
            data.write_bytes(bytes(blob[: len(blob) // 2]))
        else:
            for i in range(len(blob) // 3, len(blob) // 3 + 64):
                blob[i] ^= 0xFF
            data.write_bytes(bytes(blob))
        status, out, err = train_py(capsys, config_file, run_dir)
        assert status == 0, out[-2000:] + err[-2000:]
        notes = [l for l in out.splitlines() if l.startswith("note: recovery checkpoint")]
        assert len(notes) == 1 and "ckpt-6 cannot be read" in notes[0], out[-2000:]
        assert "resuming from the older recovery checkpoint" in out and "ckpt-4" in out
        assert same_weights(weights(reference_dir), weights(run_dir)), damage

    run_dir = tmp_path / "both"
    shutil.copytree(crashed, run_dir)
    for data in (run_dir / "checkpoints" / "last").glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:100])
    status, out, err = train_py(capsys, config_file, run_dir)
    assert status == 1
    assert err.strip().splitlines()[-1].startswith(f"no recovery checkpoint in {run_dir / 'checkpoints' / 'last'} can be read")


@pytest.mark.slow
def test_one_training_process_per_run_directory(tmp_path, capsys):
    """A second train.py on a directory a live run is using exits 2 in one line naming the first;
    after the first is killed -9, the lock does not block the next run, which resumes."""
    config = alexnet_tf.load_config(None, OVERRIDES + ["train.epochs=500"])  # still training when the second starts
    config_file = tmp_path / "config.yaml"
    dump(config, str(config_file))
    run_dir = tmp_path / "run"
    first = subprocess.Popen(command(config_file, run_dir, "--print-steps"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        for line in first.stdout:
            if line.strip() == "global step 4":
                break
        # the second in this process: what is tested is the lock the first (a real process) holds
        status, _, err = train_py(capsys, config_file, run_dir, "train.lr=0.02")
        assert status == 2, err[-2000:]
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"config error: {run_dir} is in use by another training process (pid {first.pid} on ")
        # refused before it touched anything: config.yaml still records the first run's config
        assert alexnet_tf.load_config(str(run_dir / "config.yaml")).train.lr == config.train.lr != 0.02
    finally:
        first.kill()
        first.communicate(timeout=60)
    # the next run starts despite the dead one's lock file, and resumes its checkpoints (in this
    # process, with one epoch more than the dead run had finished)
    done = int(tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run_dir / "checkpoints" / "last")))
               .get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    status, out, err = train_py(capsys, config_file, run_dir, f"train.epochs={done + 1}")
    assert status == 0 and "resuming from" in out and f"{done} of {done + 1} epochs done" in out, out[-2000:] + err[-2000:]


@pytest.mark.slow
def test_fixed_lr_drops_survive_a_resume(tmp_path, capsys):
    """train.lr_drop_epochs: the drop after epoch 1 is in the checkpoint, the one after epoch 2 happens
    in the resumed run, and none follows epoch 3."""
    import json
    config = alexnet_tf.load_config(None, OVERRIDES + ["train.epochs=1", "train.lr_drop_epochs=[1,2]"])
    config_file = tmp_path / "config.yaml"
    dump(config, str(config_file))
    run_dir = tmp_path / "run"
    status, out, err = train_py(capsys, config_file, run_dir)
    assert status == 0, err[-2000:]
    assert "epoch 1: a fixed drop (train.lr_drop_epochs); learning rate divided by 10" in out
    assert json.load(open(run_dir / "metrics.json"))["learning_rate"] == pytest.approx(config.train.lr / 10)
    status, out, err = train_py(capsys, config_file, run_dir, "train.epochs=3")
    assert status == 0 and "resuming from" in out, err[-2000:]
    assert "epoch 2: a fixed drop (train.lr_drop_epochs)" in out and "epoch 3:" not in out
    metrics = json.load(open(run_dir / "metrics.json"))
    assert metrics["epochs_completed"] == 3 and metrics["learning_rate"] == pytest.approx(config.train.lr / 100)


@pytest.mark.slow
def test_a_changed_learning_rate_on_resume_is_applied(tmp_path, capsys):
    """The restored optimizer holds the old rate; a rerun with another train.lr must train at the new
    one (and say so), not record it in config.yaml and ignore it."""
    config = alexnet_tf.load_config(None, OVERRIDES + ["train.epochs=1"])
    config_file = tmp_path / "config.yaml"
    dump(config, str(config_file))
    run_dir = tmp_path / "run"
    assert train_py(capsys, config_file, run_dir)[0] == 0
    status, out, err = train_py(capsys, config_file, run_dir, "train.epochs=2", "train.lr=0.0123")
    assert status == 0, err[-2000:]
    assert f"train.lr changed from {config.train.lr:g} to 0.0123: training continues at 0.0123" in out
    import json
    metrics = json.load(open(run_dir / "metrics.json"))
    assert metrics["epochs_completed"] == 2 and metrics["learning_rate"] == pytest.approx(0.0123)
    assert alexnet_tf.load_config(str(run_dir / "config.yaml")).train.lr == 0.0123
    # and the rate is in the new checkpoint: a third rerun with the same config changes nothing
    status, out, _ = train_py(capsys, config_file, run_dir, "train.epochs=2", "train.lr=0.0123")
    assert status == 0 and "train.lr changed" not in out


@pytest.mark.slow
def test_a_full_disk_costs_one_line_and_the_rerun_resumes(reference, tmp_path):
    """A real full disk (a 64 MB tmpfs, filled after global step 5): the checkpoint write at step 6
    fails with one line naming the path and ENOSPC, exit 1, and its partial files are removed; once
    there is space, the same command resumes from step 4 and ends bit-identical to an uninterrupted run.

    The tmpfs is mounted in a private mount namespace (`unshare --map-root-user --mount`), which needs no
    root on a kernel with user namespaces; both runs happen inside it, since the mount ends with it."""
    config, config_file, reference_dir, _ = reference
    disk, run_dir, out = tmp_path / "disk", tmp_path / "disk" / "run", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    full = " ".join(command(config_file, run_dir, "--fill-disk-at-step", "5"))
    again = " ".join(command(config_file, run_dir))
    script = f"""
mount -t tmpfs -o size=64m tmpfs {disk} || exit 99
{full} > {out}/first.out 2> {out}/first.err; echo $? > {out}/first.status
find {run_dir} -name '*_temp*' > {out}/leftovers
ls {run_dir}/checkpoints/last > {out}/kept
rm {run_dir}/filler
{again} > {out}/second.out 2> {out}/second.err; echo $? > {out}/second.status
cp {run_dir}/model.keras {out}/
"""
    run_in_private_mount_namespace(script)
    first_err = (out / "first.err").read_text()
    assert (out / "first.status").read_text().strip() == "1", first_err[-2000:]
    assert "crash_driver: filled the disk (No space left on device)" in (out / "first.out").read_text()
    last_line = first_err.strip().splitlines()[-1]
    assert last_line.startswith(f"could not write checkpoint {run_dir / 'checkpoints' / 'last' / 'ckpt-6'} "
                                f"(No space left on device, errno 28 ENOSPC); removed its partial files; "
                                f"a rerun resumes from {run_dir / 'checkpoints' / 'last' / 'ckpt-4'}"), last_line
    assert "Traceback" not in first_err, first_err[-2000:]
    assert (out / "leftovers").read_text() == ""
    kept = (out / "kept").read_text().split()
    assert not any(name.startswith("ckpt-6") for name in kept) and "ckpt-4.index" in kept, kept
    assert (out / "second.status").read_text().strip() == "0", (out / "second.err").read_text()[-2000:]
    assert "resuming from" in (out / "second.out").read_text()
    assert same_weights(weights(reference_dir), weights(out))


def run_in_private_mount_namespace(script):
    """Run the shell `script` (which mounts its own small tmpfs) as root of a private user and mount namespace."""
    shell = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script], capture_output=True,
                           text=True, cwd=ROOT, timeout=600)
    assert shell.returncode == 0, f"could not mount a tmpfs in a private namespace: {shell.stderr[-1000:]}"


@pytest.mark.slow
def test_a_full_disk_under_tensorboards_writer_costs_one_line_and_the_rerun_resumes(tmp_path):
    """A real full disk (a 64 MB tmpfs) filled after global step 33, just after the recovery checkpoint of
    epoch 1 (32 steps of batch 2; checkpoints only at epoch ends): the next writes are TensorBoard's
    (batch summaries every step), and once they outgrow the free bytes left in their files' last pages
    TensorFlow raises ResourceExhaustedError from the event writer, long before the next checkpoint at
    step 64. The run ends with our one line naming the event file, ENOSPC and the checkpoint a rerun
    resumes from (ckpt-32, intact), exit 1, no traceback; once there is space the same command resumes
    and ends bit-identical to an uninterrupted run, whose epoch losses its TensorBoard logs read back."""
    from alexnet_tf.tblogs import read_scalars
    from alexnet_tf.training import train
    config = alexnet_tf.load_config(None, OVERRIDES + ["data.batch_size=2", "train.epochs=2", "train.checkpoint_every=0"])
    config_file = tmp_path / "config.yaml"
    dump(config, str(config_file))
    train(config, str(tmp_path / "reference"), verbose=0)
    disk, run_dir, out = tmp_path / "disk", tmp_path / "disk" / "run", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    script = f"""
mount -t tmpfs -o size=64m tmpfs {disk} || exit 99
{" ".join(command(config_file, run_dir, "--fill-disk-at-step", "33"))} > {out}/first.out 2> {out}/first.err
echo $? > {out}/first.status
ls {run_dir}/checkpoints/last > {out}/kept
rm {run_dir}/filler
{" ".join(command(config_file, run_dir))} > {out}/second.out 2> {out}/second.err; echo $? > {out}/second.status
cp {run_dir}/model.keras {out}/
cp -r {run_dir}/tb {out}/tb
"""
    run_in_private_mount_namespace(script)
    first_err = (out / "first.err").read_text()
    assert (out / "first.status").read_text().strip() == "1", first_err[-2000:]
    assert "crash_driver: filled the disk (No space left on device)" in (out / "first.out").read_text()
    assert "Traceback" not in first_err, first_err[-3000:]
    last_line = first_err.strip().splitlines()[-1]
    checkpoint = run_dir / "checkpoints" / "last" / "ckpt-32"
    assert re.fullmatch(rf"could not write {re.escape(str(run_dir / 'tb'))}/(train|validation)/events\.out\.tfevents\.\S+ "
                        rf"\(No space left on device, errno 28 ENOSPC\); the recovery checkpoints are kept \(a rerun "
                        rf"resumes from {re.escape(str(checkpoint))}\): free space and rerun the same command",
                        last_line), last_line
    kept = (out / "kept").read_text().split()
    assert "ckpt-32.index" in kept and not any(name.startswith("ckpt-64") for name in kept), kept
    assert (out / "second.status").read_text().strip() == "0", (out / "second.err").read_text()[-2000:]
    assert f"resuming from {checkpoint}" in (out / "second.out").read_text()
    assert same_weights(weights(tmp_path / "reference"), weights(out))
    steps, losses = read_scalars(str(out), "train", "epoch_loss")
    ref_steps, ref_losses = read_scalars(str(tmp_path / "reference"), "train", "epoch_loss")
    assert list(steps) == list(ref_steps) == [0, 1]
    np.testing.assert_array_equal(losses, ref_losses)
