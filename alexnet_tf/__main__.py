"""`python -m alexnet_tf <command>`: tools that work on run directories.

  curves   learning curves of one or more runs as a PNG (from their TensorBoard logs)
  filters  the conv1 filters of a run as a PNG grid, towers stacked (the paper's Fig. 3)
  config-reference  the configuration table of README, generated from the config dataclasses
"""

import argparse
import os
import sys

from alexnet_tf.config import reference_markdown


def _curves(args):
    from alexnet_tf.figures import plot_curves

    runs = {}
    for item in args.runs:
        label, _, path = item.rpartition("=")
        runs[label or os.path.basename(os.path.normpath(path))] = path
    curves = [tuple(c.split(":", 1)) for c in args.curve]
    plot_curves(runs, args.out, curves=curves, title=args.title)
    print(f"wrote {args.out}")


def _filters(args):
    import keras

    from alexnet_tf.callbacks import conv1_kernels
    from alexnet_tf.figures import save_filter_grid

    path = os.path.join(args.run_dir, "model.keras")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} not found; expected a finished run directory (train.py writes model.keras at the end)")
    model = keras.saving.load_model(path)
    shape = save_filter_grid(conv1_kernels(model), args.out)
    print(f"wrote {args.out} ({shape[1]}x{shape[0]} px)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m alexnet_tf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("curves", help="learning curves of runs as a PNG")
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--curve", action="append", metavar="SPLIT:TAG",
                   help="e.g. validation:epoch_top1_error, train:batch_loss (repeatable)")
    p.add_argument("--title", default="")
    p.set_defaults(func=_curves)
    p = sub.add_parser("filters", help="conv1 filters of a run as a PNG (Fig. 3)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_filters)
    p = sub.add_parser("config-reference", help="print README's configuration table (markdown)")
    p.set_defaults(func=lambda args: print(reference_markdown()))
    args = parser.parse_args(argv)
    if getattr(args, "curve", 1) is None:
        args.curve = ["train:epoch_top1_error", "validation:epoch_top1_error"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
