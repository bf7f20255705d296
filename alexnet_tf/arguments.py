"""Command-line argument groups that several `python -m alexnet_tf` commands share, declared once.

Each command declares its own arguments next to its handler (`add_arguments(parser)`); the groups
here are the ones whose flags and help read the same in every command that takes them.
"""


def add_run_arguments(parser):
    """--run-dir and --checkpoint: the run a command reads, and which of its weights."""
    parser.add_argument("--run-dir", required=True, help="the run directory to read (as train.py or import-caffe wrote it)")
    parser.add_argument("--checkpoint", help="'last', 'best' or a checkpoint prefix (default: model.keras)")


def add_config_arguments(parser):
    """--config and --set: the YAML config a command reads, and overrides of its values."""
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/alexnet_imagenet.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override; repeatable")
