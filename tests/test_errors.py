"""The one error model: each UserError subclass adds its prefix, `exit_status` maps it to the status
train.py documents, and `report` prints exactly one line. The table below is written by hand from
train.py's documented exit statuses, not read from the classes."""

import signal

import pytest

from alexnet_tf import errors

# class path -> (prefix, exit status, the builtin exception it must still be caught as)
EXPECTED = {
    "alexnet_tf.errors.ConfigError": ("config error: ", 2, ValueError),
    "alexnet_tf.errors.PathExists": ("error: ", 1, FileExistsError),
    "alexnet_tf.run_dir.RunDirBusy": ("config error: ", 2, Exception),
    "alexnet_tf.run_dir.RunDirError": ("error: ", 1, FileNotFoundError),
    "alexnet_tf.run_dir.ExportBusy": ("error: ", 1, Exception),
    "alexnet_tf.data.errors.DatasetNotFound": ("", 1, FileNotFoundError),
    "alexnet_tf.data.errors.DatasetDamaged": ("", 1, FileNotFoundError),
    "alexnet_tf.caffe.CaffeFileError": ("error: ", 1, ValueError),
    "alexnet_tf.checkpoint.CheckpointNotWritten": ("", 1, RuntimeError),
    "alexnet_tf.checkpoint.UnreadableCheckpoint": ("", 1, RuntimeError),
    "alexnet_tf.training.TrainingDiverged": ("", 1, RuntimeError),
    "alexnet_tf.train_command.DiskFull": ("", 1, Exception),
    "alexnet_tf.predict.LabelError": ("error: ", 1, ValueError),
    "alexnet_tf.predict.ImageFileError": ("error: ", 1, ValueError),
    "alexnet_tf.tblogs.ScalarNotFound": ("error: ", 1, LookupError),
    "alexnet_tf.ablation.runner.StudyInterrupted": ("error: ", 1, RuntimeError),
    "alexnet_tf.input_modes.DispatcherUnreachable": ("error: ", 1, ConnectionError),
    "alexnet_tf.data_service_command.PortUnavailable": ("error: ", 1, OSError),
    "alexnet_tf.user_files.FileRefused": ("error: ", 1, ValueError),
}


def _load(path):
    import importlib
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_each_error_has_its_prefix_and_status(path):
    prefix, status, builtin = EXPECTED[path]
    cls = _load(path)
    error = cls("x = 3; expected 1 to 2")
    assert str(error) == prefix + "x = 3; expected 1 to 2" and error.detail == "x = 3; expected 1 to 2"
    assert errors.exit_status(error) == status
    assert isinstance(error, errors.UserError) and isinstance(error, builtin)


def test_every_user_error_of_the_package_is_in_the_table():
    """A new UserError subclass must be added to EXPECTED with its prefix and status."""
    for path in EXPECTED:
        _load(path)  # imports every module that defines one
    found, todo = set(), [errors.UserError]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("alexnet_tf"):
                found.add(f"{sub.__module__}.{sub.__qualname__}")
    from alexnet_tf.stop_signals import Interrupted
    assert found - {f"{Interrupted.__module__}.Interrupted"} == set(EXPECTED)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_exits_128_plus_its_number(signum, status):
    from alexnet_tf.stop_signals import Interrupted
    stopped = Interrupted(signum, "runs/x/checkpoints/last/ckpt-7")
    assert errors.exit_status(stopped) == status
    assert str(stopped) == (f"{signal.Signals(signum).name}: stopped after saving runs/x/checkpoints/last/ckpt-7; "
                            "rerun the same command to resume")


def test_report_prints_one_line_and_returns_the_status(capsys):
    assert errors.report(errors.ConfigError("data.batch_size = 0; expected >= 1")) == 2
    assert capsys.readouterr().err == "config error: data.batch_size = 0; expected >= 1\n"


def test_anything_else_is_a_bug_and_keeps_its_traceback():
    assert errors.exit_status(KeyError("x")) is None
    with pytest.raises(KeyError):
        errors.report(KeyError("x"))
