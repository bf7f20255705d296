"""Register this package's Keras classes as soon as Keras is usable, without importing TensorFlow first.

`keras.saving.load_model("RUN/model.keras")` must find the LRN layer, `ReplicaDropout`, `PaperSGD`, `LARS`,
`TopKError` (compile=True) and the §7 encoders' `CodeNoise`: Keras looks custom classes up in its
registry and never imports a third-party module named in the file. KerasHub registers by importing
everything in its `__init__`; here that would put TensorFlow's ~3 s import and its six unsilenceable
start-up lines on stderr in front of every one-line config error. So `import alexnet_tf` registers
at once if Keras is already imported, and otherwise installs `_KerasWatcher`, which registers once
both of these hold:

  - the outermost import of `keras` or `tensorflow` has finished (TensorFlow imports Keras while it
    initialises, and Keras imports TensorFlow, so the inner one finishes first);
  - no module of this package is half-imported. Keras is usually imported by one of this package's
    modules (`import alexnet_tf.serving` imports keras on its way), and the registering modules import
    others of the package (retrieval.codes imports features, which imports serving): registering in the middle of
    serving's import would import serving again while it is half-built. So the watcher also counts
    the package's own imports, and registers when the outermost one has finished.

Either import order, `import alexnet_tf` first or last, then loads a model, and every module of the
package imports alone in a fresh interpreter (tests/test_imports.py).
"""

import importlib
import importlib.abc
import sys

REGISTERING_MODULES = ("alexnet_tf.layers", "alexnet_tf.optim", "alexnet_tf.retrieval.codes")
_WATCHED = ("keras", "tensorflow")
_PACKAGE = __name__.partition(".")[0] + "."


def register():
    """Import the modules whose classes carry `@keras.saving.register_keras_serializable`."""
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


class _KerasWatcher(importlib.abc.MetaPathFinder):
    """Wraps the loaders of `keras`, `tensorflow` and this package's modules; registers when Keras has
    finished importing and no import of this package's modules is under way."""

    def __init__(self):
        self.depth = {"keras": 0, "package": 0}
        self.keras_loaded = False
        self.done = False

    def find_spec(self, name, path=None, target=None):
        kind = "keras" if name in _WATCHED else "package" if name.startswith(_PACKAGE) else None
        if kind is None or self.done:
            return None
        for finder in sys.meta_path:  # the spec the import would have found without this finder
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):  # a namespace package: nothing to wrap
            return spec
        spec.loader.exec_module = self._counted(spec.loader.exec_module, kind)  # this module's own loader instance
        return spec

    def _counted(self, execute, kind):
        """`execute` (a loader's exec_module), counted as an import of `kind` under way."""
        def exec_module(module):
            self.depth[kind] += 1
            try:
                execute(module)
            finally:
                self.depth[kind] -= 1
            if kind == "keras" and self.depth["keras"] == 0:
                self.keras_loaded = True
            self._register_when_ready()
        return exec_module

    def _register_when_ready(self):
        if self.done or not self.keras_loaded or self.depth["keras"] or self.depth["package"]:
            return
        self.done = True
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        register()


def install():
    """Register now if Keras is loaded, else when it is (called by `alexnet_tf/__init__`)."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        register()
    elif not any(isinstance(f, _KerasWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasWatcher())
