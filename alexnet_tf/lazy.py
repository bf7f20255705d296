"""Package attributes imported on first use (PEP 562), for packages whose modules start TensorFlow.

`import alexnet_tf.data` and `import alexnet_tf.retrieval` must not start TensorFlow: a command module
inside them (`stats`, the retrieval commands) is imported for its --help and argument errors.
"""

import importlib


def lazy_exports(package, names_by_module, modules):
    """(__getattr__, __all__) for `package`: each name of `names_by_module[m]` comes from `package.m`, and
    each of `modules` is the submodule itself, imported when first asked for."""
    where = {name: module for module, names in names_by_module.items() for name in names}

    def __getattr__(name):
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, list(where)
