"""Train AlexNet: `python train.py [--config PATH] [--set section.key=value ...] [--run-dir DIR]`.

With no arguments it trains the default run (configs/fashion_mnist.yaml) on real Fashion-MNIST.
The same as `alexnet-tf train` and `python -m alexnet_tf train`; the code is alexnet_tf/train_command.py.
"""

import sys

from alexnet_tf.train_command import PEER_LOST, main  # noqa: F401  (PEER_LOST: the exit status scripts test for)

if __name__ == "__main__":
    sys.exit(main())
