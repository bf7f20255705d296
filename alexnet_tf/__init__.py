"""alexnet_tf: the NIPS 2012 AlexNet (Krizhevsky, Sutskever & Hinton) in Keras 3 / TensorFlow."""

from alexnet_tf.config import load_config


def __getattr__(name):
    # TensorFlow is imported lazily so that `load_config` (and config validation) stays instant.
    if name == "build_model":
        from alexnet_tf.model import build_model
        return build_model
    if name == "compile_model":
        from alexnet_tf.training import compile_model
        return compile_model
    if name == "LocalResponseNormalization":
        from alexnet_tf.layers import LocalResponseNormalization
        return LocalResponseNormalization
    raise AttributeError(f"module 'alexnet_tf' has no attribute {name!r}")


__all__ = ["load_config", "build_model", "compile_model", "LocalResponseNormalization"]
