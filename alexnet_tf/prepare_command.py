"""`python -m alexnet_tf prepare`: a file source's §2 squares written once as JPEG shards that TFDS reads,
with the mean image and RGB eigen-decomposition of the training squares (data/prepare.py does the work).

This module reads the command line and starts TensorFlow only in the handler, so that `prepare --help`
and its argument errors start none.
"""

import shlex

from alexnet_tf.arguments import add_config_arguments
from alexnet_tf.errors import ConfigError

# A shard's per-pixel sums are stored as uint32: at most 2^32 / 255 images per shard.
MAX_SHARD_IMAGES = 1_000_000


def add_arguments(parser):
    """The `prepare` command's arguments."""
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write (new or empty; or a prepare to resume)")
    parser.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG quality, 1-100 (default 95)")
    parser.add_argument("--subsampling", choices=("444", "420"), default="444",
                        help="JPEG chroma subsampling: 444 = none (default; the closer copy), 420 = half-resolution "
                             "colour (smaller files)")
    parser.add_argument("--shard-images", type=int, default=1024, metavar="N", help="images per TFRecord shard (default 1024)")


def main(args):
    """`python -m alexnet_tf prepare --config C --out DIR`: write DIR, or finish it after an interruption."""
    from alexnet_tf.config import load_config

    if not 1 <= args.quality <= 100:
        raise ConfigError(f"--quality {args.quality}; expected a JPEG quality from 1 to 100")
    if not 1 <= args.shard_images <= MAX_SHARD_IMAGES:
        raise ConfigError(f"--shard-images {args.shard_images}; expected 1 to {MAX_SHARD_IMAGES:,}")
    config = load_config(args.config, args.set)
    from alexnet_tf.data.prepare import prepare  # TensorFlow: after the checks, which need none

    command = shlex.join(["alexnet-tf", "prepare", *args.argv])
    record = prepare(config, args.out, args.quality, args.subsampling, args.shard_images, command)
    for role, split in record["splits"].items():
        print(f"{role}: {split['images']} images in {split['shards']} shards, "
              f"{len(split['skipped'])} undecodable left out")
    print(f"wrote {args.out} (train with --set data.source=prepared --set data.path={args.out})")
