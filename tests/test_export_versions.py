"""Exports never lose a version: one export at a time per RUN_DIR/export (a second one waits, then gives
up in one line), version numbers claimed by creating their directory exclusively, and an existing
version never replaced without --overwrite. Two real `export` processes started together leave two
versions, each the same SavedModel as a serial export of its checkpoint."""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import run_dir as run_dir_module
from alexnet_tf import serving
from alexnet_tf.errors import PathExists
from conftest import ROOT, run_main
from test_export import distinct_images, encode


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the session's tiny run with only the version training wrote, export/1 (the other
    export tests expect the shared run's export/ as they leave it)."""
    copy = str(tmp_path / "run")
    shutil.copytree(tiny_run, copy)
    for name in os.listdir(os.path.join(copy, "export")):
        if name not in ("1", ".lock"):
            shutil.rmtree(os.path.join(copy, "export", name))
    return copy


def outputs(version_dir):
    """The SavedModel's outputs on fixed inputs (three encoded images, and their pixels)."""
    from PIL import Image
    images = distinct_images()
    loaded = tf.saved_model.load(version_dir)
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([encode(Image.fromarray(x), "PNG")
                                                                          for x in images]))
    pixels = loaded.signatures["pixels"](images=tf.constant(images, tf.float32))
    return [served["probabilities"].numpy(), served["class_ids"].numpy(), pixels["probabilities"].numpy()]


def digest(directory):
    """SHA-1 over every file of a directory tree (names and bytes)."""
    h = hashlib.sha1()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode())
            h.update(open(path, "rb").read())
    return h.hexdigest()


def make_best_differ(run_dir):
    """checkpoints/best rewritten with weights unlike checkpoints/last (a one-epoch run's two are the
    same), so that an export holding the other checkpoint's variables would show in its outputs."""
    from alexnet_tf.run_dir import checkpoint_dir, load_run
    model = load_run(run_dir, "last").model
    for variable in model.weights:
        variable.assign(variable * 1.5 + 0.01)
    best = checkpoint_dir(run_dir, "best")
    shutil.rmtree(best)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), best, max_to_keep=1).save()


@pytest.mark.slow
def test_two_exports_at_once_leave_two_whole_versions(run_copy, tmp_path):
    make_best_differ(run_copy)
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = {checkpoint: subprocess.Popen([sys.executable, "-m", "alexnet_tf", "export", "--run-dir", run_copy,
                                           "--checkpoint", checkpoint], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, cwd=ROOT, env=env)
             for checkpoint in ("best", "last")}
    written = {}
    for checkpoint, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        written[checkpoint] = next(line.split()[1] for line in out.splitlines() if line.startswith("wrote "))
    assert sorted(written.values()) == [os.path.join(run_copy, "export", v) for v in ("2", "3")]
    assert sorted(os.listdir(os.path.join(run_copy, "export"))) == [".lock", "1", "2", "3"]

    from alexnet_tf.run_dir import load_run
    for checkpoint, path in written.items():
        serial = serving.save(serving.Classifier.from_run(load_run(run_copy, checkpoint)), str(tmp_path / checkpoint))
        for got, expected in zip(outputs(path), outputs(serial)):
            np.testing.assert_array_equal(got, expected)
    best, last = (outputs(written[c])[0] for c in ("best", "last"))
    assert not np.array_equal(best, last)  # the two checkpoints differ, so a mix-up would show


def test_a_second_export_waits_for_the_first_then_gives_up_in_one_line(run_copy, capsys, monkeypatch):
    from alexnet_tf.__main__ import main
    base = os.path.join(run_copy, "export")
    fd = os.open(os.path.join(base, ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another export (this process, as far as the lock can tell)
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"pid 1 on host: export --run-dir elsewhere", 0)
    timers, closed = [], []

    def release():
        os.close(fd)
        closed.append(fd)

    try:
        status, out, err = run_main(capsys, main, ["export", "--run-dir", run_copy, "--wait", "0.5"])
        assert status == 1
        assert err == (f"error: {base} is being written by another export (pid 1 on host: export --run-dir "
                       "elsewhere) for more than 0.5 s; expected it to finish first: rerun when it has, or pass "
                       "a longer --wait\n")
        assert f"waiting for another export into {base} to finish" in out
        assert sorted(os.listdir(base)) == [".lock", "1"]  # nothing claimed, nothing left behind

        # the first export ends a second after the second one has found the lock busy (however long loading
        # the run took before that), so the second must wait and then go on
        def holder_then_release(f, real=run_dir_module._holder):
            if not timers:
                timers.append(threading.Timer(1.0, release))
                timers[0].start()
            return real(f)

        monkeypatch.setattr(run_dir_module, "_holder", holder_then_release)
        status, out, err = run_main(capsys, main, ["export", "--run-dir", run_copy, "--wait", "120"])
    finally:
        for timer in timers:
            timer.join()  # so the descriptor is closed exactly once, never after it could name another file
        if not closed:
            os.close(fd)
    assert status == 0, err
    assert f"waiting for another export into {base} to finish" in out and f"wrote {base}/2" in out
    assert sorted(os.listdir(base)) == [".lock", "1", "2"]


def test_an_existing_version_is_never_replaced_without_overwrite(run_copy, capsys):
    from alexnet_tf.__main__ import main
    base = os.path.join(run_copy, "export")
    before = digest(os.path.join(base, "1"))
    status, _, err = run_main(capsys, main, ["export", "--run-dir", run_copy, "--version", "1"])
    assert status == 1 and err == f"error: {base}/1 exists; expected another --version, or --overwrite to replace it\n"
    os.mkdir(os.path.join(base, "4"))  # an empty directory: os.rename would replace it silently
    status, _, err = run_main(capsys, main, ["export", "--run-dir", run_copy, "--version", "4"])
    assert status == 1 and f"{base}/4 exists" in err
    assert os.listdir(os.path.join(base, "4")) == [] and digest(os.path.join(base, "1")) == before
    # a version made while an export was writing: the final rename refuses it, empty or not
    for made in ("empty", "full"):
        tmp, target = os.path.join(base, ".tmp-7"), os.path.join(base, "7")
        os.makedirs(os.path.join(tmp, "variables"))
        os.makedirs(target)
        if made == "full":
            open(os.path.join(target, "saved_model.pb"), "wb").write(b"the other version")
        with pytest.raises(PathExists, match="made while this export was writing"):
            serving._place(tmp, base, 7, overwrite=False)
        assert os.listdir(target) == ([] if made == "empty" else ["saved_model.pb"])
        shutil.rmtree(target)
        shutil.rmtree(tmp)


def test_a_killed_export_leaves_nothing_that_blocks_or_shadows_the_next(run_copy, capsys):
    """A kill -9 leaves .tmp-<N> (a half-written version) or, inside --overwrite's swap, .old-<N> without
    <N>; the next export (holding the lock, so no other export is running) deletes the first and puts
    the old version back, then takes the next number."""
    from alexnet_tf.__main__ import main
    base = os.path.join(run_copy, "export")
    os.makedirs(os.path.join(base, ".tmp-2", "variables"))
    os.rename(os.path.join(base, "1"), os.path.join(base, ".old-1"))
    status, out, err = run_main(capsys, main, ["export", "--run-dir", run_copy])
    assert status == 0, err
    assert f"wrote {base}/2" in out and sorted(os.listdir(base)) == [".lock", "1", "2"]
    assert os.path.isfile(os.path.join(base, "2", "saved_model.pb"))
