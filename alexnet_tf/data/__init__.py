"""Input data: where the images come from, which of them train/validate/test, and the tf.data pipelines.

    sources.py      file sources: folder, ILSVRC-2012 tars through TFDS, prepared TFDS datasets
    prepare.py      `alexnet-tf prepare`: a file source's §2 squares written once as JPEG shards, with their stats
    prepared.py     the directory prepare writes, and data.source prepared that reads it
    fused_crop.py   training crops decoded straight out of prepared JPEGs (decode_and_crop_jpeg)
    fashion_mnist.py, synthetic.py   the in-memory sources (uint8 arrays)
    splits.py       which images train, validate and test (data.val_examples, data.train_examples)
    decode.py       file bytes -> the central square rescaled to data.resize (§2), undecodable files
    stats.py        the mean image and the RGB covariance eigen-decomposition (§4.1) of a training set
    preprocess.py   small pure transforms on batches: mean, crops, flips, PCA lighting, ten crops
    pipeline.py     the assembly: `make_datasets(config)` -> Data (train / val / test datasets)
"""

from alexnet_tf.errors import UserError
from alexnet_tf.lazy import lazy_exports

# The package's names come from its modules on first use (lazy.py says why).
__getattr__, _EXPORTS = lazy_exports(__name__, {
    "pipeline": ("Data", "decoded", "eval_images", "make_datasets", "normalize_for_eval", "training_stats"),
    "splits": ("SUBSET_SEED", "file_splits", "held_out", "load_arrays", "training_subset"),
}, modules=("decode", "errors", "fashion_mnist", "fused_crop", "pipeline", "prepare", "prepared", "preprocess", "sources",
         "splits", "stats", "synthetic"))
__all__ = [*_EXPORTS, "add_stats_arguments", "stats_command"]


def add_stats_arguments(parser):
    """The `stats` command's arguments."""
    from alexnet_tf.arguments import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--recompute", action="store_true", help="recompute even if the stats file exists")


def stats_command(args):
    """`python -m alexnet_tf stats`: print (and cache) the training set's mean and RGB eigen-decomposition."""
    import numpy as np

    from alexnet_tf.config import FILE_SOURCES, load_config

    config = load_config(args.config, args.set)
    if config.data.source not in FILE_SOURCES:
        raise UserError(f"data.source = {config.data.source} keeps its images in memory and computes its mean "
                         f"when training starts; the stats command is for {', '.join(FILE_SOURCES)}")
    from alexnet_tf.data.pipeline import training_stats  # TensorFlow: after the checks, which need none
    from alexnet_tf.data.splits import file_splits
    from alexnet_tf.data.stats import lighting_basis
    train, _, _, _ = file_splits(config)
    stats, path = training_stats(config, train, recompute=args.recompute)
    np.set_printoptions(precision=4, suppress=True)
    print(f"images: {int(stats['images'])}; mean RGB {stats['pixel_mean']}")
    print(f"eigenvalues of the RGB covariance (0..255 scale): {stats['eigval']}")
    print(f"sqrt(eigenvalues), the lighting amplitudes: {lighting_basis(stats, 'stats')[0]}")
    print(f"eigenvectors (columns; rows R, G, B):\n{stats['eigvec']}")
    print(f"wrote {path}")
