"""`python -m alexnet_tf benchmark`: images/s of the training input pipeline next to the model's
training step, on a config's data or on ImageNet-sized JPEGs written to a temporary folder (the
measurements are benchmark.py's).

TensorFlow starts only in the handler, so that `benchmark --help` and its argument errors start none.
"""

import os
import tempfile

from alexnet_tf.arguments import add_config_arguments
from alexnet_tf.config import load_config


def add_arguments(parser):
    """The `benchmark` command's arguments."""
    add_config_arguments(parser)
    parser.add_argument("--steps", type=int, metavar="N", default=20, help="pipeline batches to time")
    parser.add_argument("--train-steps", type=int, metavar="N", default=5, help="training steps to time")
    parser.add_argument("--fake-images", type=int, metavar="N", default=0,
                        help="write this many ImageNet-sized JPEGs to a temporary folder and benchmark "
                             "data.source=folder on them")
    parser.add_argument("--fake-side", type=int, metavar="PX", default=0,
                        help="with --fake-images: square images of this side (e.g. 256, pre-resized)")
    parser.add_argument("--pipeline-only", action="store_true", help="time the input pipeline only")


def main(args):
    """The `benchmark` command: the pipeline's rate, then (unless --pipeline-only) the training step's
    alone and fed by the pipeline, on the config's data or on --fake-images JPEGs in a temporary folder."""
    from alexnet_tf.perf.benchmark import run, write_fake_imagenet_folder

    overrides = list(args.set)
    if args.fake_images:
        root = tempfile.mkdtemp(prefix="alexnet_bench_")
        size = f"{args.fake_side}x{args.fake_side}" if args.fake_side else "ImageNet-sized (500x375)"
        print(f"writing {args.fake_images} {size} JPEGs to {root}", flush=True)
        write_fake_imagenet_folder(root, args.fake_images, side=args.fake_side)
        overrides += ["data.source=folder", f"data.path={root}", f"data.cache_dir={os.path.join(root, 'cache')}"]
    run(load_config(args.config, overrides), args.steps, args.train_steps, args.pipeline_only)
