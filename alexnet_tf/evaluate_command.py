"""`python -m alexnet_tf evaluate`: a run's top-1/top-5 error on its validation (or test) split with the
paper's two test protocols, printed and written to RUN_DIR/evaluation*.json.

The protocols are evaluate.py's; this module reads the command line and starts TensorFlow only in the
handler, so that `evaluate --help` and its argument errors start none.
"""

import json
import os

from alexnet_tf.arguments import add_run_arguments
from alexnet_tf.crops import check_ten_crop, evaluation_side
from alexnet_tf.run_dir import load_run


def add_arguments(parser):
    """The `evaluate` command's arguments."""
    add_run_arguments(parser)
    parser.add_argument("--ten-crop", action="store_true", help="also the paper's 10-patch protocol (10x the compute; "
                        "for runs whose images are larger than model.image_size)")
    parser.add_argument("--steps", type=int, metavar="N", help="evaluate only this many batches")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="val (default) or test: the test split a run with data.val_examples set apart")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override the run's config, e.g. data.path on another machine; repeatable")


def main(args):
    """`python -m alexnet_tf evaluate`: both protocols on a run's validation (or test) split -> RUN_DIR/evaluation*.json."""
    from alexnet_tf.data import eval_images
    from alexnet_tf.evaluate import evaluate

    run = load_run(args.run_dir, args.checkpoint, overrides=args.set)
    config = run.config
    if args.ten_crop:
        check_ten_crop(config, evaluation_side(config))
    batches, size = eval_images(config, run.mean, run.class_names, args.split)
    results = evaluate(run.model, batches, config.model.image_size, ten_crop=args.ten_crop, steps=args.steps, total=size)
    results["weights"], results["split"] = run.source, args.split
    print(f"{results['images']} {'validation' if args.split == 'val' else 'test'} images, weights {run.source}")
    names = {"center": "centre crop", "ten_crop": "10 crops (softmax averaged)"}
    for key in ("center", "ten_crop"):
        if key in results:
            r = results[key]
            print(f"{names[key]:28s} top-1 error {r['top1_error']:.4f}   top-5 error {r['top5_error']:.4f}")
    out = os.path.join(args.run_dir, "evaluation.json" if args.split == "val" else "evaluation_test.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")
