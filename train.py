"""Train AlexNet: `python train.py [--config PATH] [--set section.key=value ...] [--run-dir DIR]`.

With no arguments it trains the default run (configs/fashion_mnist.yaml) on real Fashion-MNIST.
"""

import argparse
import os
import sys

from alexnet_tf.config import ConfigError, describe, load_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "fashion_mnist.yaml")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: configs/fashion_mnist.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable")
    parser.add_argument("--run-dir", help="run directory (default: runs/<name>); resumes if it holds a checkpoint")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)  # validated before TensorFlow is imported
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    run_dir = args.run_dir or os.path.join("runs", config.name)
    print(describe(config), flush=True)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from alexnet_tf.data.fashion_mnist import DatasetNotFound
    from alexnet_tf.training import TrainingDiverged, train
    try:
        train(config, run_dir)
    except (TrainingDiverged, DatasetNotFound, ConfigError) as e:  # ConfigError: config and data disagree
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
