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
  prepare   a file source's 256x256 central squares written once as JPEG shards TFDS reads, with their stats
  stats     mean image and RGB covariance eigen-decomposition of a config's training images (cached)
  data-service  a tf.data service dispatcher or worker (data.service: decoding on other hosts), until SIGTERM
  evaluate  top-1/top-5 error of a run on the validation split: centre crop and the paper's 10 crops
  benchmark images/s of the training input pipeline next to the model's training step
  profile   where a traced training step's time goes, by op type and by layer (train.profile_steps)
  speed     training/inference images/s, FLOPs and utilisation of the paper and default models (optional: PyTorch)
  ablate    the paper's ablation claims re-measured over seeds (resumable); writes REPRODUCTION.md
  fig1      the paper's Fig. 1 as it ran it: a four-layer CNN, ReLU vs tanh at tuned rates; and its LRN claim
  init-study    the paper's initialisation vs Caffe's and He's at the paper's geometry on Fashion-MNIST (resumable)
  import-caffe  BVLC Caffe's bvlc_alexnet.caffemodel as a run directory (docs/caffe.md)
"""

import argparse
import importlib
import os
import sys

from alexnet_tf import tf_startup
from alexnet_tf.config import reference_markdown
from alexnet_tf.errors import UserError, report

# command: (its handler as "module:function", the line the top-level --help lists). A handler
# `main` has its arguments declared by `add_arguments(parser)` in its module, a handler `X_command`
# by `add_X_arguments(parser)`. A module is imported only for the command that runs (or shows its
# --help), so the top-level --help and a mistyped command need no TensorFlow; and no handler's module
# imports TensorFlow before its handler runs, so neither does a command's --help or argument error.
# `train` has train.py's own parser and `config-reference` no arguments: both are handled here.
COMMANDS = {
    "train": (None, "train a run, as `python train.py` (see `train --help`)"),
    "curves": ("alexnet_tf.figures:curves_command", "learning curves of runs as a PNG"),
    "filters": ("alexnet_tf.figures:filters_command", "conv1 filters of a run as a PNG (Fig. 3)"),
    "export": ("alexnet_tf.export:main", "the model as a TF Serving SavedModel in RUN_DIR/export/<version>/"),
    "predict": ("alexnet_tf.predict_command:main", "top-5 classes of images, optionally a PNG panel (Fig. 4 left)"),
    "features": ("alexnet_tf.retrieval.commands:features_command",
                 "last-hidden-layer vectors of a split, cached in RUN_DIR/features/"),
    "neighbours": ("alexnet_tf.retrieval.commands:neighbours_command",
                   "nearest training images of queries as a PNG (Fig. 4 right)"),
    "projector": ("alexnet_tf.retrieval.commands:projector_command",
                  "vectors, labels and sprite for TensorBoard's projector"),
    "codes": ("alexnet_tf.retrieval.commands:codes_command",
              "§7 binary codes: precision@K and speed, Hamming vs Euclidean"),
    "config-reference": (None, "print the configuration reference table (markdown; docs/configuration.md)"),
    "prepare": ("alexnet_tf.prepare_command:main",
                "a file source's §2 256x256 squares as JPEG shards (TFDS-readable) + their stats, once (resumable)"),
    "stats": ("alexnet_tf.data:stats_command",
              "mean image + RGB covariance eigen-decomposition of the training images (cached)"),
    "data-service": ("alexnet_tf.data_service_command:main",
                     "a tf.data service dispatcher or worker for data.service, until SIGTERM/SIGINT"),
    "evaluate": ("alexnet_tf.evaluate_command:main",
                 "top-1/top-5 error of a run: centre crop and (--ten-crop) the 10 patches"),
    "benchmark": ("alexnet_tf.perf.benchmark_command:main", "img/s of the training pipeline next to the training step"),
    "speed": ("alexnet_tf.perf.speed_command:main",
              "training/inference img/s, FLOPs and utilisation vs a matmul (synthetic data)"),
    "profile": ("alexnet_tf.perf.profile:main",
                "op time by op type and by layer from a run's profiler trace (train.profile_steps)"),
    "ablate": ("alexnet_tf.ablation:main",
               "re-measure the paper's ablation claims (arms x seeds, resumable) -> REPRODUCTION.md"),
    "fig1": ("alexnet_tf.ablation.fig1:main",
             "Fig. 1 as the paper ran it: four-layer CNN, ReLU vs tanh at tuned rates (+ its LRN claim) -> results/fig1"),
    "init-study": ("alexnet_tf.ablation.init_study:main",
                   "three initialisations at the paper's geometry on Fashion-MNIST (resumable)"),
    "import-caffe": ("alexnet_tf.caffe.importer:main",
                     "BVLC Caffe's bvlc_alexnet.caffemodel as a run directory (docs/caffe.md)"),
}

# The commands whose handler starts TensorFlow before anything else: it is started for them (after the
# arguments are parsed) with its start-up notices filtered. The others start it later or never.
STARTS_TENSORFLOW = frozenset({"filters", "export", "predict", "features", "neighbours", "projector", "codes",
                               "evaluate", "benchmark", "speed", "fig1", "init-study", "import-caffe"})


def _prog():
    # the console script `alexnet-tf` and `python -m alexnet_tf` are the same program
    return "alexnet-tf" if os.path.basename(sys.argv[0]) == "alexnet-tf" else "python -m alexnet_tf"


def console():
    """The `alexnet-tf` console script (pyproject.toml)."""
    sys.exit(main())


def _chosen(argv):
    """The command argparse will run: the first word not starting with "-" (the top-level parser has
    no option that takes a value). When argparse reads an earlier word as the command instead (a
    "-" or a negative number), that word is no command and argparse rejects it before this one."""
    return next((word for word in argv if not word.startswith("-")), None)


def _module_and_name(command):
    module, _, function = COMMANDS[command][0].partition(":")
    return importlib.import_module(module), function


def _add_arguments(parser, command):
    module, handler = _module_and_name(command)
    declare = "add_arguments" if handler == "main" else f"add_{handler.removesuffix('_command')}_arguments"
    getattr(module, declare)(parser)


def build_parser(command=None):
    """The parser of every command, with the arguments of `command` (the one about to run) only."""
    parser = argparse.ArgumentParser(prog=_prog(), description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (handler, help) in COMMANDS.items():
        p = sub.add_parser(name, help=help, add_help=name != "train")
        if name == command and handler is not None:
            _add_arguments(p, name)
    return parser


def main(argv=None):
    """`python -m alexnet_tf COMMAND ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # "end of options" before the command: the top level has no option it could end
        argv = argv[1:]
    if argv[:1] == ["train"]:  # train.py's own parser and exit statuses
        from alexnet_tf.train_command import main as train
        return train(argv[1:], prog=f"{_prog()} train")
    command = _chosen(argv)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    args.argv = argv[1:]
    if args.command == "config-reference":  # needs no TensorFlow
        print(reference_markdown())
        return 0
    if args.command in STARTS_TENSORFLOW:
        tf_startup.start()  # its start-up notices off the console (tf_startup.py says which)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before a command's module imports TensorFlow
    module, handler = _module_and_name(args.command)
    try:
        getattr(module, handler)(args)
    except UserError as e:  # one line for the user; anything else is a bug and keeps its traceback
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
