"""Register this package's Keras classes as soon as Keras is usable, without importing TensorFlow first.

`keras.saving.load_model("RUN/model.keras")` must find the LRN layer, `ReplicaDropout`, `PaperSGD`,
`TopKError` (compile=True) and the §7 encoders' `CodeNoise`: Keras looks custom classes up in its
registry and never imports a third-party module named in the file. KerasHub registers by importing
everything in its `__init__`; here that would put TensorFlow's ~3 s import and its six unsilenceable
start-up lines on stderr in front of every one-line config error. So `import alexnet_tf` registers
at once if Keras is already imported, and otherwise installs `_KerasWatcher`: when the outermost
import of `keras` or `tensorflow` finishes (TensorFlow imports Keras while it initialises, and Keras
imports TensorFlow, so the inner one finishes first), it imports the registering modules and removes
itself. Either import order, `import alexnet_tf` first or last, then loads a model.
"""

import importlib
import importlib.abc
import sys

REGISTERING_MODULES = ("alexnet_tf.layers", "alexnet_tf.optim", "alexnet_tf.retrieval.codes")
_WATCHED = ("keras", "tensorflow")


def register():
    """Import the modules whose classes carry `@keras.saving.register_keras_serializable`."""
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _KerasWatcher(importlib.abc.MetaPathFinder):
    """Wraps the loaders of `keras` and `tensorflow`; registers when the outermost one has executed."""

    def __init__(self):
        self.depth = 0

    def find_spec(self, name, path=None, target=None):
        if name not in _WATCHED:
            return None
        for finder in sys.meta_path:  # the spec the import would have found without this finder
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            self.depth += 1
            try:
                execute(module)
            finally:
                self.depth -= 1
            if self.depth == 0:
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                register()

        spec.loader.exec_module = exec_module  # this module's own loader instance
        return spec


def install():
    """Register now if Keras is loaded, else when it is (called by `alexnet_tf/__init__`)."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        register()
    elif not any(isinstance(f, _KerasWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasWatcher())
