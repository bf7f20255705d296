"""`python -m alexnet_tf export`: a run directory's model as a TF Serving SavedModel in RUN_DIR/export/<version>/.

The SavedModel itself (signatures, decoding, preprocessing) is serving.py's; this module reads a
run directory (its final model or a checkpoint) and writes the next version. One export at a time
writes into a run's export/ (serving.save holds export/.lock); a second one waits for it (--wait).
"""

import os

from alexnet_tf.errors import ConfigError, PathExists
from alexnet_tf.run_dir import EXPORT_WAIT, export_dir, load_run


def export_run(run_dir, version=None, checkpoint=None, overwrite=False, wait=EXPORT_WAIT):
    """Export a run directory's model (final model or a checkpoint) to RUN_DIR/export/<version>/,
    waiting up to `wait` s for another export into the same directory to finish."""
    from alexnet_tf import serving  # TensorFlow: imported here, so that `export --help` needs none

    classifier = serving.Classifier.from_run(load_run(run_dir, checkpoint))
    return serving.save(classifier, export_dir(run_dir), version, overwrite, wait)


def add_arguments(parser):
    """The `export` command's arguments."""
    from alexnet_tf.arguments import add_run_arguments

    add_run_arguments(parser)
    parser.add_argument("--version", type=int, metavar="N", help="integer version, the directory RUN_DIR/export/N "
                        "(default: one above the highest existing)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    parser.add_argument("--wait", type=_seconds, default=EXPORT_WAIT, metavar="SECONDS",
                        help=f"while another export writes into the same RUN_DIR/export, wait up to this long, then "
                             f"give up with one line (default {EXPORT_WAIT:g}; 0 = give up at once)")


def _seconds(text):
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}; expected a number of seconds >= 0")
    return value


def main(args):
    """`python -m alexnet_tf export`: write the next version and print how to inspect and serve it."""
    if args.version is not None:  # the flags' words, before the model loads (serving.save says the API's)
        if args.version < 0:
            raise ConfigError(f"--version {args.version}; expected a non-negative integer (TF Serving's version "
                              "directories)")
        path = os.path.join(export_dir(args.run_dir), str(args.version))
        if os.path.exists(path) and not args.overwrite:
            raise PathExists(f"{path} exists; expected another --version, or --overwrite to replace it")
    path = export_run(args.run_dir, args.version, args.checkpoint, args.overwrite, args.wait)
    print(f"wrote {path}")
    print(f"  saved_model_cli show --dir {path} --all")
    print(f"  docker run -p 8501:8501 -v {os.path.abspath(os.path.dirname(path))}:/models/alexnet "
          "-e MODEL_NAME=alexnet tensorflow/serving")
