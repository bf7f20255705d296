"""`python -m alexnet_tf benchmark`: images/s of the training input pipeline next to the model's
training step, on a config's data or on ImageNet-sized JPEGs written to a temporary folder (the
measurements are benchmark.py's).

TensorFlow starts only in the handler, so that `benchmark --help` and its argument errors start none.
"""

import os
import shutil
import tempfile

from alexnet_tf.arguments import add_config_arguments
from alexnet_tf.config import ConfigError, load_config


def add_arguments(parser):
    """The `benchmark` command's arguments."""
    add_config_arguments(parser)
    parser.add_argument("--steps", type=int, metavar="N", default=20, help="pipeline batches to time")
    parser.add_argument("--train-steps", type=int, metavar="N", default=5, help="training steps to time")
    parser.add_argument("--fake-images", type=int, metavar="N", default=0,
                        help="write this many ImageNet-sized JPEGs (at least one per class of model.num_classes) "
                             "to a temporary folder, removed at the end, and benchmark data.source=folder on them")
    parser.add_argument("--fake-side", type=int, metavar="PX", default=0,
                        help="with --fake-images: square images of this side (e.g. 256, pre-resized)")
    parser.add_argument("--pipeline-only", action="store_true", help="time the input pipeline only")
    parser.add_argument("--feed", action="store_true",
                        help="instead: per-core img/s of (a) the full-size pipeline, (b) prepared shards with host "
                             "augmentation, (c) with device augmentation, (d) the bare decode, on generated ILSVRC-like "
                             "JPEGs in a temporary folder, removed at the end (perf/feed.py)")
    parser.add_argument("--feed-images", type=int, metavar="N", default=4096, help="with --feed: JPEGs to generate (fewer: a shorter, noisier timing)")
    parser.add_argument("--json", action="store_true", help="with --feed: print one JSON document")


def main(args):
    """The `benchmark` command: the pipeline's rate, then (unless --pipeline-only) the training step's
    alone and fed by the pipeline, on the config's data or on --fake-images JPEGs in a temporary folder; with
    --feed, the four feeds of perf/feed.py instead."""
    if args.feed:
        from alexnet_tf.perf import feed
        if args.feed_images < 1:
            raise ConfigError(f"--feed-images {args.feed_images}; expected at least 1")
        feed.run(args.config, args.set, args.feed_images, args.json)
        return
    from alexnet_tf.perf.benchmark import run

    if not args.fake_images:
        run(load_config(args.config, args.set), args.steps, args.train_steps, args.pipeline_only)
        return
    root = tempfile.mkdtemp(prefix="alexnet_bench_")
    try:  # the folder goes when the benchmark ends, however it ends (a config error, Ctrl-C)
        config = load_config(args.config, list(args.set) + [
            "data.source=folder", f"data.path={root}", f"data.cache_dir={os.path.join(root, 'cache')}"])
        _write_fake_images(root, args, config.model.num_classes)
        run(config, args.steps, args.train_steps, args.pipeline_only)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _write_fake_images(root, args, classes):
    """--fake-images JPEGs in the config's model.num_classes classes, at least one per class (the model
    the benchmark builds has that many outputs, and the folder must have as many classes)."""
    from alexnet_tf.perf.benchmark import write_fake_imagenet_folder

    images = max(args.fake_images, classes)
    size = f"{args.fake_side}x{args.fake_side}" if args.fake_side else "ImageNet-sized (500x375)"
    more = f" (at least one per class of model.num_classes = {classes})" if images > args.fake_images else ""
    print(f"writing {images} {size} JPEGs in {classes} classes to {root}{more}; removed at the end", flush=True)
    write_fake_imagenet_folder(root, images, classes=classes, side=args.fake_side)
