"""Every module of the package imports alone, each in a process that has loaded nothing of the package,
of Keras or of TensorFlow before it.

A user's script imports one module (`alexnet_tf.serving` for `Classifier.from_run`), and nothing else
has been imported before it: an import circle, including one through the Keras registration hook
(registration.py), shows up only then, never in a process such as pytest's that already holds Keras.
"""

import json
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


# The parent of the per-module processes: a fresh `python -I` (no PYTHONPATH, no user site, no current
# directory; this checkout first on the path) that loads only TensorFlow's and Keras's third-party
# dependencies, never the package, Keras or TensorFlow, then forks one child per module. Each child
# starts from that state, checks it (no module of the package, of Keras or of TensorFlow loaded, no
# import hook installed), imports its one module and, if that brought Keras in, checks that the
# package's Keras classes are registered (keras.saving.load_model finds them by these names). What can
# go wrong, the order in which the package, Keras and TensorFlow first import each other, is then
# exactly a user script's; the dependencies loaded once save ~40 % of each TensorFlow start.
IMPORT_EACH_ALONE = """
import importlib, json, os, sys, traceback
root, names = sys.argv[1], sys.argv[2:]
sys.path.insert(0, root)
for dependency in ("numpy", "ml_dtypes", "google.protobuf", "absl", "h5py", "wrapt", "opt_einsum", "gast",
                   "termcolor", "flatbuffers", "rich", "optree", "namex", "packaging", "astunparse", "yaml"):
    importlib.import_module(dependency)
OURS = ("alexnet_tf", "keras", "tensorflow")
CLASSES = ("LocalResponseNormalization", "ReplicaDropout", "PaperSGD", "LARS", "TopKError", "CodeNoise")

def alone(name):
    loaded = [m for m in sys.modules if m.split(".")[0] in OURS]
    hooks = [f for f in sys.meta_path if type(f).__module__.startswith("alexnet_tf")]
    assert not loaded and not hooks, f"not a clean start: {loaded[:5]} {hooks}"
    module = importlib.import_module(name)
    assert module.__file__.startswith(root), module.__file__
    if "keras" in sys.modules:
        import keras
        missing = [c for c in CLASSES if "alexnet_tf>" + c not in keras.saving.get_custom_objects()]
        assert not missing, f"not registered after importing {name}: {missing}"

results = {}
for name in names:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one module, then exit without running the parent's clean-up
        os.close(read)
        try:
            alone(name)
            message = ""
        except BaseException:
            message = traceback.format_exc()[-3000:] or "failed"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    results[name] = message or ("" if status == 0 else f"child ended with wait status {status}")
print(json.dumps(results))
"""


def import_each_alone(names, root=ROOT):
    """{module: "" if it imported alone, else why not}, from one parent that forks a child per module."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-I", "-c", IMPORT_EACH_ALONE, root, *names], capture_output=True,
                            text=True, cwd=ROOT, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_module_that_fails_alone_is_reported():
    """The harness itself: a module whose import raises is named with its traceback, and the next module
    still starts clean (the failure stayed in its child)."""
    results = import_each_alone(["alexnet_tf.no_such_module", "alexnet_tf.config"])
    assert "ModuleNotFoundError" in results["alexnet_tf.no_such_module"] and results["alexnet_tf.config"] == ""


# The modules in a few groups, one parent each, so that pytest-xdist's workers share them.
GROUPS = 6


@pytest.mark.slow
@pytest.mark.parametrize("group", range(GROUPS))
def test_every_module_imports_alone(group):
    names = package_modules()[group::GROUPS]
    results = import_each_alone(names)
    assert sorted(results) == sorted(names)
    assert {name: why for name, why in results.items() if why} == {}
