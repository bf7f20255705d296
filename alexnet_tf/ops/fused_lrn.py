"""The fused LRN op from Python: loading its library, its gradient, and when the layer may use it.

The op (lrn_op.cc) computes LocalResponseNormalization's formula in one pass forward and one pass
backward, on CPU, in float32 or bfloat16 (float32 inside). The layer uses it only where every
reader of the result also has it:
  - never while a SavedModel is traced (`reference_only()`, which serving.save holds): the export
    holds only TensorFlow's own ops, so TF Serving and users without the library load it;
  - never under XLA (the op has no XLA kernel), nor with a GPU visible under `auto` (CPU kernels only);
  - model.keras stores the layer's config, not a graph, so it never depends on the op.

ALEXNET_TF_LRN_LIBRARY names another library file (default: build.py's); a missing or stale file
means the pure-TF layer, said once per process.
"""

import contextlib
import contextvars
import os

import tensorflow as tf

from alexnet_tf.errors import ConfigError

MODES = ("auto", "fused", "reference")
_FALLBACK = "LRN runs as the pure-TensorFlow layer (same results, slower)"
_loaded = {}  # "library": the module or None, "reason": why None
_reference_only = contextvars.ContextVar("alexnet_tf_lrn_reference_only", default=False)


def library_path():
    from alexnet_tf.ops.build import LIBRARY
    return os.environ.get("ALEXNET_TF_LRN_LIBRARY") or LIBRARY


def library():
    """The op library's Python module, loaded once per process; None if it is missing, stale or fails to load."""
    if "library" not in _loaded:
        _loaded["library"], _loaded["reason"] = _load()
    return _loaded["library"]


def _load():
    from alexnet_tf.ops import build

    path = library_path()
    if not os.path.exists(path):
        return None, f"the fused LRN op is not built ({path} missing; `make setup` builds it)"
    if path == build.LIBRARY and not build.up_to_date():
        return None, f"the fused LRN op in {path} was built for another TensorFlow or source (`make setup` rebuilds it)"
    try:
        return tf.load_op_library(path), None
    except (tf.errors.NotFoundError, OSError) as e:
        return None, f"the fused LRN op could not be loaded ({str(e).splitlines()[0]})"


def unavailable_reason():
    """Why library() is None (None when it loaded)."""
    library()
    return _loaded["reason"]


def note_fallback():
    """Say once per process that `auto` falls back to the pure-TF layer, and why."""
    if not _loaded.get("noted"):
        _loaded["noted"] = True
        print(f"note: {unavailable_reason()}; {_FALLBACK}", flush=True)


def require():
    """model.lrn_kernel = fused: the library must load."""
    if library() is None:
        raise ConfigError(f"model.lrn_kernel = fused, but {unavailable_reason()}; expected the op built, "
                          "or model.lrn_kernel auto or reference")


@contextlib.contextmanager
def reference_only():
    """Inside, every LRN layer traces the pure-TF formula (SavedModel exports)."""
    token = _reference_only.set(True)
    try:
        yield
    finally:
        _reference_only.reset(token)


def use_fused(mode):
    """Whether a layer with `mode` (auto, fused, reference) runs the op in the graph being traced now."""
    if mode == "reference" or _reference_only.get() or _in_xla():
        return False
    if mode == "fused":
        require()
        return True
    if library() is None:
        note_fallback()
        return False
    return not tf.config.list_physical_devices("GPU")


def _in_xla():
    # tf.function(jit_compile=True) traces its body inside an XLA control-flow context (also seen by
    # nested functions); TensorFlow has no public API for the question.
    from tensorflow.python.ops import control_flow_util
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def lrn(x, size, k, alpha, beta, start=0, stop=-1):
    """y = x[..., start:stop] * (k + alpha * window sum of x**2)**-beta, in x's dtype (float32 or bfloat16)."""
    return library().alexnet_lrn(x, size=size, k=k, alpha=alpha, beta=beta, start=start, stop=stop)


def lrn_grad(x, g, size, k, alpha, beta, start=0, stop=-1):
    """dL/dx of `lrn` given g = dL/dy."""
    return library().alexnet_lrn_grad(x, g, size=size, k=k, alpha=alpha, beta=beta, start=start, stop=stop)


@tf.RegisterGradient("AlexnetLrn")
def _gradient(op, g):
    attrs = {name: op.get_attr(name) for name in ("size", "k", "alpha", "beta", "start", "stop")}
    return lrn_grad(op.inputs[0], g, **attrs)
