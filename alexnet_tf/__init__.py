"""alexnet_tf: the NIPS 2012 AlexNet (Krizhevsky, Sutskever & Hinton) in Keras 3 / TensorFlow."""

import os

__version__ = "0.3.0"

# oneDNN's CPU kernels on by default. TensorFlow turns them on by itself only on some CPUs (not on
# AMD EPYC, AVX2 or AVX-512 alike), where the default model then trains at half the speed
# (docs/speed.md). The variable is read once, when TensorFlow starts, so it is set before anything
# below imports TensorFlow. A value the user set (TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off) is
# kept; subprocesses inherit it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from alexnet_tf.config import load_config  # noqa: E402

from alexnet_tf import registration  # noqa: E402

# Every Keras-serializable class of the package is registered once Keras is imported (now, or
# whenever the program imports it), so `keras.saving.load_model` works after `import alexnet_tf`;
# the config stays importable without TensorFlow (registration.py says why).
registration.install()


def __getattr__(name):
    # TensorFlow is imported lazily so that `load_config` (and config validation) stays instant.
    if name == "build_model":
        from alexnet_tf.model import build_model
        return build_model
    if name == "compile_model":
        from alexnet_tf.optim import compile_model
        return compile_model
    if name == "LocalResponseNormalization":
        from alexnet_tf.layers import LocalResponseNormalization
        return LocalResponseNormalization
    raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")


__all__ = ["__version__", "load_config", "build_model", "compile_model", "LocalResponseNormalization"]
