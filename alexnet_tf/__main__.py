"""`python -m alexnet_tf <command>` (or `alexnet-tf <command>`): training and the tools that work on run directories.

  train    train a run: the same as `python train.py` (`train --help` for its options)
  curves   learning curves of one or more runs as a PNG (from their TensorBoard logs)
  filters  the conv1 filters of a run as a PNG grid, towers stacked (the paper's Fig. 3)
  config-reference  the configuration table of docs/configuration.md, generated from the config dataclasses
  export   the run's model as a TF Serving SavedModel in RUN_DIR/export/<version>/
  predict  top-5 classes of image files or validation images, optionally as a PNG panel (Fig. 4 left)
  features the last hidden layer's vectors of a split, cached in RUN_DIR/features/
  neighbours  the nearest training images of query images as a PNG panel (Fig. 4 right)
  projector   training-set vectors with labels and sprites for TensorBoard's projector
  codes    §7: auto-encoders to binary codes, precision@K and speed of Hamming vs Euclidean search
  stats     mean image and RGB covariance eigen-decomposition of a config's training images (cached)
  evaluate  top-1/top-5 error of a run on the validation split: centre crop and the paper's 10 crops
  benchmark images/s of the training input pipeline next to the model's training step
  profile   where a traced training step's time goes, by op type and by layer (train.profile_steps)
  speed     training/inference images/s, FLOPs and utilisation of the paper and default models (optional: PyTorch)
  ablate    the paper's ablation claims re-measured over seeds (resumable); writes REPRODUCTION.md
  init-study    the paper's initialisation vs Caffe's and He's at the paper's geometry on Fashion-MNIST (resumable)
  import-caffe  BVLC Caffe's bvlc_alexnet.caffemodel as a run directory (docs/caffe.md)
"""

import argparse
import importlib
import os
import sys

from alexnet_tf.config import ConfigError, reference_markdown


# Each command's handler lives in the module that owns its work; it is imported only when the
# command runs, so `--help` and config errors stay fast and no module here is loaded for nothing.
HANDLERS = {
    "curves": "alexnet_tf.figures:curves_command",
    "filters": "alexnet_tf.figures:filters_command",
    "export": "alexnet_tf.export:main",
    "predict": "alexnet_tf.predict:main",
    "features": "alexnet_tf.retrieval.commands:features_command",
    "neighbours": "alexnet_tf.retrieval.commands:neighbours_command",
    "projector": "alexnet_tf.retrieval.commands:projector_command",
    "codes": "alexnet_tf.retrieval.commands:codes_command",
    "stats": "alexnet_tf.data:stats_command",
    "evaluate": "alexnet_tf.evaluate:main",
    "benchmark": "alexnet_tf.perf.benchmark:main",
    "speed": "alexnet_tf.perf.speed:main",
    "profile": "alexnet_tf.perf.profile:main",
    "ablate": "alexnet_tf.ablation:main",
    "init-study": "alexnet_tf.ablation.init_study:main",
    "import-caffe": "alexnet_tf.caffe.importer:main",
}


def _prog():
    # the console script `alexnet-tf` and `python -m alexnet_tf` are the same program
    return "alexnet-tf" if os.path.basename(sys.argv[0]) == "alexnet-tf" else "python -m alexnet_tf"


def console():
    """The `alexnet-tf` console script (pyproject.toml)."""
    sys.exit(main())


def _handler(command):
    module, _, function = HANDLERS[command].partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:  # train.py's own parser and exit statuses
        from alexnet_tf.train_command import main as train
        return train(argv[1:])
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a run, as `python train.py` (see `train --help`)", add_help=False)
    p = sub.add_parser("curves", help="learning curves of runs as a PNG")
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--curve", action="append", metavar="SPLIT:TAG",
                   help="e.g. validation:epoch_top1_error, train:batch_loss (repeatable)")
    p.add_argument("--title", default="")

    def run_parser(name, help):
        p = sub.add_parser(name, help=help)
        p.add_argument("--run-dir", required=True)
        p.add_argument("--checkpoint", help="'last', 'best' or a checkpoint prefix (default: model.keras)")
        return p

    p = run_parser("filters", "conv1 filters of a run as a PNG (Fig. 3)")
    p.add_argument("--out", required=True)
    p = run_parser("export", "the model as a TF Serving SavedModel in RUN_DIR/export/<version>/")
    p.add_argument("--version", type=int, help="integer version (default: one above the highest existing)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p = run_parser("predict", "top-5 classes of images, optionally a PNG panel (Fig. 4 left)")
    p.add_argument("images", nargs="*", help="JPEG/PNG/GIF/BMP files")
    p.add_argument("--label", action="append", help="true label (name or id) of each image, in order; "
                   "default: the image's folder when it is named after a class")
    p.add_argument("--val", type=int, default=0, metavar="N", help="also predict N random validation images")
    p.add_argument("--ten-crop", action="store_true", help="average over the paper's ten patches (§4.1)")
    p.add_argument("--out", help="PNG panel: each image with its top-5 bars, the true label's bar in red")
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p = run_parser("features", "last-hidden-layer vectors of a split, cached in RUN_DIR/features/")
    p.add_argument("--split", nargs="+", default=["train", "val"], choices=("train", "val"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-images", type=int, metavar="N",
                   help="use at most N images of each split, drawn at random (default: all of an in-memory "
                        "dataset, 20,000 of an image-file source)")
    p = run_parser("neighbours", "nearest training images of queries as a PNG (Fig. 4 right)")
    p.add_argument("images", nargs="*", help="query image files (default: --queries random validation images)")
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--k", type=int, default=6, help="neighbours per query (the paper shows 6)")
    p.add_argument("--encoder", help="rank by Hamming distance of this §7 encoder's codes (from `codes`)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-images", type=int, metavar="N",
                   help="use at most N images of each split, drawn at random (default: all of an in-memory "
                        "dataset, 20,000 of an image-file source)")
    p = run_parser("projector", "vectors, labels and sprite for TensorBoard's projector")
    p.add_argument("--split", default="train", choices=("train", "val"))
    p.add_argument("--count", type=int, default=5000, help="random subset size (the projector runs in the browser)")
    p.add_argument("--log-dir", help="default: RUN_DIR/tb/projector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-images", type=int, metavar="N",
                   help="use at most N images of each split, drawn at random (default: all of an in-memory "
                        "dataset, 20,000 of an image-file source)")
    p = run_parser("codes", "§7 binary codes: precision@K and speed, Hamming vs Euclidean")
    p.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--k", type=int, nargs="+", default=[1, 10, 100], help="precision@K for these K")
    p.add_argument("--epochs", type=int, default=10, help="auto-encoder training epochs")
    p.add_argument("--queries", type=int, help="use the first N validation images as queries (default: all)")
    p.add_argument("--pixels", action="store_true", help="add Euclidean search on raw pixels as a baseline")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-images", type=int, metavar="N",
                   help="use at most N images of each split, drawn at random (default: all of an in-memory "
                        "dataset, 20,000 of an image-file source)")
    p = sub.add_parser("config-reference", help="print the configuration reference table (markdown; docs/configuration.md)")

    def with_config(p):
        p.add_argument("--config", required=True, help="YAML config, e.g. configs/alexnet_imagenet.yaml")
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override; repeatable")

    p = sub.add_parser("stats", help="mean image + RGB covariance eigen-decomposition of the training images (cached)")
    with_config(p)
    p.add_argument("--recompute", action="store_true", help="recompute even if the stats file exists")
    p = sub.add_parser("evaluate", help="top-1/top-5 error of a run: centre crop and (--ten-crop) the 10 patches")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--checkpoint", help="best, last or a checkpoint path (default: the run's model.keras)")
    p.add_argument("--ten-crop", action="store_true", help="also the paper's 10-patch protocol (10x the compute)")
    p.add_argument("--steps", type=int, help="evaluate only this many batches")
    p.add_argument("--split", choices=("val", "test"), default="val",
                   help="val (default) or test: the test split a run with data.val_examples set apart")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override the run's config, e.g. data.path on another machine; repeatable")
    p = sub.add_parser("benchmark", help="img/s of the training pipeline next to the training step")
    with_config(p)
    p.add_argument("--steps", type=int, default=20, help="pipeline batches to time")
    p.add_argument("--train-steps", type=int, default=5, help="training steps to time")
    p.add_argument("--fake-images", type=int, default=0,
                   help="write this many ImageNet-sized JPEGs to a temporary folder and benchmark data.source=folder on them")
    p.add_argument("--fake-side", type=int, default=0, help="with --fake-images: square images of this side (e.g. 256, pre-resized)")
    p.add_argument("--pipeline-only", action="store_true", help="time the input pipeline only")
    p = sub.add_parser("speed", help="training/inference img/s, FLOPs and utilisation vs a matmul (synthetic data)")
    p.add_argument("--models", default="paper,default", help="comma-separated: paper, default, tiny")
    p.add_argument("--precisions", default="float32,mixed_bfloat16", help="comma-separated Keras dtype policies")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (after 2 warm-up steps)")
    p.add_argument("--torch", action="store_true", help="also time the same network in PyTorch (optional dependency)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--tiny", action="store_true", help="a few-second run of a tiny model (tests)")
    p = sub.add_parser("profile", help="op time by op type and by layer from a run's profiler trace (train.profile_steps)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--top", type=int, default=15, help="rows per table")
    p = sub.add_parser("ablate", help="re-measure the paper's ablation claims (arms x seeds, resumable) -> REPRODUCTION.md")
    p.add_argument("--budget", default="full", choices=("full", "tiny"),
                   help="full: the config as written (~2 h on 2 cores); tiny: a few steps of a tiny model (~2 min)")
    p.add_argument("--seeds", type=int, help="seeds per arm, 0..N-1 (default: 3 full, 1 tiny)")
    p.add_argument("--arms", help="comma-separated subset of the arms (default: all): "
                   "base,tanh,no_lrn,lrn_constant,pool_2x2,one_tower,no_dropout,no_conv2,no_conv3")
    p.add_argument("--more-seeds", action="append", default=[], metavar="ARM[,ARM...]=N",
                   help="these arms get seeds 0..N-1 instead of --seeds (the second stage: more seeds for the claims "
                        "the first left undecided); repeatable")
    p.add_argument("--out", default="REPRODUCTION.md", help="the report; figures go to docs/ablation/ next to it")
    p.add_argument("--runs-dir", default=os.path.join("runs", "ablation"), help="one run directory per arm and seed")
    p.add_argument("--results", default=None,
                   help="one small JSON record per finished run, all the report reads; a run with a record is not trained "
                        "again (default: RUNS_DIR/results; keep it in git to carry a long study across machines)")
    p.add_argument("--config", default=None, help="base config (default: configs/ablation_fashion_mnist.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override applied to every arm; repeatable")
    p.add_argument("--report-only", action="store_true", help="train nothing: measure finished runs and write the report")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each on cores/JOBS intra-op threads (default 1; 2 finish a study ~1.4x "
                        "sooner on 2 cores, docs/ablation.md)")
    p = sub.add_parser("init-study", help="three initialisations at the paper's geometry on Fashion-MNIST (resumable)")
    p.add_argument("--runs-dir", default=os.path.join("runs", "init_study"), help="one run directory per initialisation")
    p.add_argument("--config", default=None, help="default: configs/init_paper_geometry.yaml")
    p.add_argument("--inits", help="comma-separated subset: paper,caffe,he_normal (default: all three)")
    p.add_argument("--ten-crop-batches", type=int, default=8,
                   help="test batches of 128 evaluated with the paper's 10 crops after training (0 = skip)")
    p.add_argument("--out", default=os.path.join("docs", "init_study.png"), help="the learning-curve figure")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override applied to every run; repeatable")
    p = sub.add_parser("import-caffe", help="BVLC Caffe's bvlc_alexnet.caffemodel as a run directory (docs/caffe.md)")
    p.add_argument("--caffemodel", required=True, help="e.g. bvlc_alexnet.caffemodel (either layer format)")
    p.add_argument("--prototxt", help="net definition, e.g. deploy.prototxt (default: the one inside the caffemodel)")
    p.add_argument("--mean", help="imagenet_mean.binaryproto (default: Caffe's per-channel mean 104, 117, 123 BGR)")
    p.add_argument("--synset-words", help="synset_words.txt: class names for classes.json (default: the wnids)")
    p.add_argument("--run-dir", required=True, help="the run directory to create")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change the config written, e.g. data.path (data.source for a net of other classes); repeatable")
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    if getattr(args, "curve", 1) is None:
        args.curve = ["train:epoch_top1_error", "validation:epoch_top1_error"]
    if args.command == "config-reference":  # needs no TensorFlow
        print(reference_markdown())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.data.errors import DatasetNotFound
    from alexnet_tf.run_dir import RunDirError
    try:
        _handler(args.command)(args)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (RunDirError, FileExistsError, DatasetNotFound) as e:  # one line for the user
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
