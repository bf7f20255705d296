"""`python -m alexnet_tf speed`: training and inference images/s, FLOPs and utilisation of the chosen
models and precisions (the measurements are speed.py's).

TensorFlow starts only in the handler, so that `speed --help` and its argument errors start none.
"""

import argparse
import json


def _at_least_one(text):
    """argparse type: an integer >= 1 (a best-of and a spread need one sample at least)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


def add_arguments(parser):
    """The `speed` command's arguments."""
    parser.add_argument("--models", default="paper,default", help="comma-separated: paper, default, tiny")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16", help="comma-separated Keras dtype policies")
    parser.add_argument("--batch", type=int, metavar="N", default=128, help="images per training or inference step")
    parser.add_argument("--steps", type=int, metavar="N", default=10, help="timed steps per measurement (after 2 warm-up steps)")
    parser.add_argument("--repeats", type=_at_least_one, metavar="N", default=3,
                        help="timings of each model, each after a sample of the matmul peak; the best is reported with the spread")
    parser.add_argument("--torch", action="store_true",
                        help="also time the same network in PyTorch (optional dependency)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--tiny", action="store_true", help="a few-second run of a tiny model (tests)")


def main(args):
    """`python -m alexnet_tf speed`: training and inference images/s of the chosen models and precisions."""
    from alexnet_tf.perf.speed import run

    models = args.models.split(",")
    precisions = args.precisions.split(",")
    batch, steps, repeats = args.batch, args.steps, args.repeats
    if args.tiny:
        models, batch, steps, repeats = ["tiny"], 8, 2, 2
    log = (lambda *a: None) if args.json else print
    out = run(models, precisions, batch, steps, torch=args.torch, log=log, peak_size=512 if args.tiny else 4096,
              repeats=repeats)
    if args.json:
        print(json.dumps(out, indent=2))
