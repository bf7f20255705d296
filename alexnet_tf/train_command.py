"""Train AlexNet: `python train.py` = `alexnet-tf train` = `python -m alexnet_tf train`
`[--config PATH] [--set section.key=value ...] [--run-dir DIR]`.

With no arguments it trains the default run (configs/fashion_mnist.yaml) on real Fashion-MNIST.
Exit status: 0 done; 1 training stopped (divergence, missing data, no readable checkpoint, a full
disk); 2 config error (also: another process trains in the run directory); 75 a multi-worker peer
was lost; 143 / 130 stopped by SIGTERM / SIGINT after writing a recovery checkpoint. After 75, 143
and 130 (and 1 after a full disk, once there is space), rerun the same command to resume.
"""

import argparse
import errno
import os
import re
import sys

from alexnet_tf import console, tf_startup
from alexnet_tf.config import changes, load_config
from alexnet_tf.errors import PEER_LOST, ConfigError, UserError, report
from alexnet_tf.slurm import cluster_source
from alexnet_tf.stop_signals import Interrupted
from alexnet_tf.user_files import check_user_file

# The configs live next to the package in the repository (the package is installed editable, `pip install -e .`).
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = os.path.join(CONFIGS, "fashion_mnist.yaml")


def main(argv=None, prog=None):
    """`python train.py ARGS`; returns the exit status (errors.exit_status of what stopped it, else 0).
    `prog`: the program name --help shows (default: as this process was started)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(prog).parse_args(argv)
    try:
        config, run_dir = _checked(args)  # before TensorFlow is imported
        print("\n".join(console.start_lines(args.config, changes(config, args.config), run_dir)), flush=True)
        return _train(config, run_dir, argv)
    except UserError as e:
        return report(e)


def _parser(prog=None):
    parser = argparse.ArgumentParser(prog=prog or _prog(), description="Train AlexNet (the default run without arguments).")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: configs/fashion_mnist.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable")
    parser.add_argument("--run-dir", help="run directory (default: runs/<name>); resumes if it holds a checkpoint")
    return parser


def _checked(args):
    """(config, run directory) once everything that can be checked without TensorFlow holds."""
    config = load_config(args.config, args.set)
    if config.distribute.strategy == "multi_worker":
        cluster_source(config.distribute, os.environ)  # TF_CONFIG or an srun step, else one line
    run_dir = args.run_dir or os.path.join("runs", config.name)
    from alexnet_tf import run_dir as run_dir_lib  # TF-free
    if config.train.init_from:
        run_dir_lib.init_weights_file(config.train.init_from)
    stats_file = os.path.expanduser(config.data.stats_file)
    if config.data.stats_file and os.path.lexists(stats_file):  # one to use, not to create: readable, bounded
        check_user_file(stats_file, "stats", "data.stats_file ", ConfigError)
    run_dir_lib.refuse_overwriting_a_model(run_dir)
    return config, run_dir


class DiskFull(UserError):
    """The disk filled while the model, metrics or TensorBoard logs were written; the recovery checkpoints
    are kept."""

    prefix = ""  # the message begins "could not write "


def _train(config, run_dir, argv):
    """Train; print the next commands after a finished run, and after a stop before the end (a signal,
    a diverged loss) the command that continues it. Returns the exit status."""
    tf_startup.start()  # TensorFlow's start-up notices off the console (tf_startup.py says which)
    import tensorflow as tf

    from alexnet_tf.distribute import PEER_ERRORS
    from alexnet_tf.training import TrainingDiverged, train
    try:
        metrics = train(config, run_dir)
    except Interrupted as e:
        status = report(e)
        print("\n".join(console.stopped_steps(run_dir, _rerun(argv), "resumes from the last checkpoint")), flush=True)
        return status
    except TrainingDiverged as e:
        status = report(e)
        lower = ["--set", f"train.lr={config.train.lr / 10:g}"]
        print("\n".join(console.stopped_steps(run_dir, _rerun(argv) + lower,
                                               "resumes from the last checkpoint at a tenth of the learning rate")))
        return status
    except UserError:
        raise
    except (OSError, tf.errors.OpError) as e:  # a full disk: one line, not a traceback (other errors are bugs here)
        full = _disk_full(e)
        if full is None:
            raise
        path, number = full
        from alexnet_tf.run_dir import checkpoint_dir
        last = tf.train.latest_checkpoint(checkpoint_dir(run_dir, "last"))
        raise DiskFull(f"could not write {path or run_dir} ({os.strerror(number)}, errno {number} "
                       f"{errno.errorcode[number]}); the recovery checkpoints are kept"
                       + (f" (a rerun resumes from {last})" if last else "")
                       + ": free space and rerun the same command") from None
    except PEER_ERRORS as e:
        if config.distribute.strategy != "multi_worker":
            raise
        return _peer_lost(config, e)
    if metrics is not None:  # the chief (the other workers' runs end with the chief's lines)
        print("\n".join(console.next_steps(config, run_dir, exported=config.train.export)))
    return 0


def _rerun(argv):
    """The words of the command line that started this run, as a user types them in this shell."""
    if os.path.basename(sys.argv[0]) in ("alexnet-tf", "__main__.py"):
        return [*console.tool().split(), "train", *argv]
    return [console.python(), console.shown_path(sys.argv[0]), *argv]


# TensorFlow's file writers (the TensorBoard event writer among them) report an OS error as an OpError
# whose message is "<path>; <strerror>" (ENOSPC and EDQUOT become RESOURCE_EXHAUSTED).
_FULL = {os.strerror(number): number for number in (errno.ENOSPC, errno.EDQUOT)}
_TF_FULL = re.compile(r"(\S+); (" + "|".join(map(re.escape, _FULL)) + ")")


def _disk_full(e):
    """(path or None, errno) if `e` says the disk or the quota is full: an OSError, or an OpError of
    TensorFlow's writers (TensorBoard's event files, whose messages name the file); else None."""
    if isinstance(e, OSError):
        return (e.filename, e.errno) if e.errno in (errno.ENOSPC, errno.EDQUOT) else None
    found = _TF_FULL.search(str(getattr(e, "message", e)))
    return (found.group(1), _FULL[found.group(2)]) if found else None


def _peer_lost(config, e):
    """A multi-worker peer was lost: exit PEER_LOST, or (distribute.restart_on_peer_failure) restart this process."""
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"lost a peer worker ({type(e).__name__}: {first_line})", file=sys.stderr, flush=True)
    if not config.distribute.restart_on_peer_failure:
        return PEER_LOST
    # The collective runtime cannot be rebuilt inside a process: start afresh in the same process
    # (same pid, same arguments), resume from this worker's checkpoint and wait for the others.
    print("restarting this worker from its last checkpoint", file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable] + _restart_args())


def _prog():
    return "python -m alexnet_tf train" if _started_as_module() else os.path.basename(sys.argv[0]) or "train.py"


def _started_as_module():
    return os.path.basename(sys.argv[0]) == "__main__.py"


def _restart_args():
    """The arguments that started this process: `python train.py ...`, `alexnet-tf train ...` (a script
    on PATH) or `python -m alexnet_tf train ...` (whose argv[0] is the package's __main__.py)."""
    return ["-m", "alexnet_tf"] + sys.argv[1:] if _started_as_module() else sys.argv
