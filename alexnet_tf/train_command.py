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
import sys

from alexnet_tf.config import describe, load_config
from alexnet_tf.errors import PEER_LOST, UserError, report
from alexnet_tf.slurm import cluster_source

# The configs live next to the package in the repository (the package is installed editable, `pip install -e .`).
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = os.path.join(CONFIGS, "fashion_mnist.yaml")


def main(argv=None):
    """`python train.py ARGS`; returns the exit status (errors.exit_status of what stopped it, else 0)."""
    args = _parser().parse_args(argv)
    try:
        config, run_dir = _checked(args)  # before TensorFlow is imported
        print(describe(config), flush=True)
        return _train(config, run_dir)
    except UserError as e:
        return report(e)


def _parser():
    parser = argparse.ArgumentParser(prog=_prog(), description="Train AlexNet (the default run without arguments).")
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
    run_dir_lib.refuse_overwriting_a_model(run_dir)
    return config, run_dir


class DiskFull(UserError):
    """The disk filled while the model, metrics or logs were written; the recovery checkpoints are kept."""

    prefix = ""  # the message begins "could not write "


def _train(config, run_dir):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.distribute import PEER_ERRORS
    from alexnet_tf.training import train
    try:
        train(config, run_dir)
    except UserError:
        raise
    except OSError as e:  # a full disk: one line, not a traceback (other OS errors are bugs here)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(f"could not write {e.filename or run_dir} ({e.strerror}, errno {e.errno}); the recovery "
                       f"checkpoints are kept: free space and rerun the same command") from None
    except PEER_ERRORS as e:
        if config.distribute.strategy != "multi_worker":
            raise
        return _peer_lost(config, e)
    return 0


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
