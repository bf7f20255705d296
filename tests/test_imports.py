"""Every module of the package imports alone, each in a fresh interpreter.

A user's script imports one module (`alexnet_tf.serving` for `Classifier.from_run`), and nothing else
has been imported before it: an import circle, including one through the Keras registration hook
(registration.py), shows up only then, never in a process such as pytest's that already holds Keras.
"""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "alexnet_tf")


def package_modules():
    """Dotted names of every .py file under alexnet_tf/, found on disk (importing them here would defeat the test)."""
    names = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        parts = os.path.relpath(folder, ROOT).split(os.sep)
        for f in sorted(files):
            if f.endswith(".py"):
                names.append(".".join(parts if f == "__init__.py" else parts + [f[:-3]]))
    return names


def test_the_module_list_is_the_package():
    names = package_modules()
    assert {"alexnet_tf", "alexnet_tf.__main__", "alexnet_tf.serving", "alexnet_tf.export", "alexnet_tf.config",
            "alexnet_tf.architecture", "alexnet_tf.retrieval", "alexnet_tf.retrieval.codes", "alexnet_tf.data.pipeline",
            "alexnet_tf.caffe.proto", "alexnet_tf.ablation.runner"} <= set(names)
    assert len(names) == len(set(names)) > 50


# -I: no PYTHONPATH, no user site, no current directory; this checkout goes first on the path and the
# module must come from it (not from another installed copy). A module that brought Keras in must also
# have left the package's Keras classes registered (keras.saving.load_model finds them by these names).
IMPORT_ALONE = """
import sys
sys.path.insert(0, sys.argv[1])
import importlib
module = importlib.import_module(sys.argv[2])
assert module.__file__.startswith(sys.argv[1]), module.__file__
if "keras" in sys.modules:
    import keras
    names = ("LocalResponseNormalization", "ReplicaDropout", "PaperSGD", "TopKError", "CodeNoise")
    missing = [n for n in names if "alexnet_tf>" + n not in keras.saving.get_custom_objects()]
    assert not missing, f"not registered after importing {sys.argv[2]}: {missing}"
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", package_modules())
def test_module_imports_alone_in_a_fresh_interpreter(name, tmp_path):
    result = subprocess.run([sys.executable, "-I", "-c", IMPORT_ALONE, ROOT, name], capture_output=True, text=True,
                            cwd=tmp_path, timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
