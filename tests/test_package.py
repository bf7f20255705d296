"""The installed package: Keras finds its classes after `import alexnet_tf`, in a fresh process and in
either import order; the console script; the version; pyproject's pins equal requirements.txt's."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

LOAD = """
import sys
import numpy as np
{imports}
path, inputs = sys.argv[1], np.load(sys.argv[2])
compiled = keras.saving.load_model(path)
bare = keras.saving.load_model(path, compile=False)
opt = compiled.optimizer
print(type(opt).__name__, float(opt.momentum), float(opt.paper_weight_decay))
np.save(sys.argv[3], np.stack([bare(inputs, training=False), compiled(inputs, training=False)]))
"""


def run_fresh(code, *args, cwd):
    # -I: no PYTHONPATH, no user site, not the repository on sys.path: the package comes from the install
    return subprocess.run([sys.executable, "-I", "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=240, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["import alexnet_tf\nimport keras", "import keras\nimport alexnet_tf",
                                     "import tensorflow\nimport alexnet_tf\nimport keras"])
def test_load_model_after_import_alexnet_tf(tiny_run, tmp_path, imports):
    from alexnet_tf.run_dir import load_run
    run = load_run(tiny_run)  # the reference: built from config.yaml, weights from model.keras, in this process
    x = np.random.default_rng(0).normal(0, 1, (4, 28, 28, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_fresh(LOAD.format(imports=imports), os.path.join(tiny_run, "model.keras"), str(tmp_path / "x.npy"),
                       str(tmp_path / "out.npy"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    name, momentum, weight_decay = result.stdout.split()[:3]
    # the paper's optimizer came back with its hyperparameters (compile=True needs PaperSGD and TopKError)
    assert (name, float(momentum), float(weight_decay)) == ("PaperSGD", run.config.train.momentum,
                                                            pytest.approx(run.config.train.weight_decay))
    bare, compiled = np.load(tmp_path / "out.npy")
    expected = np.asarray(run.model(x, training=False))
    np.testing.assert_allclose(bare, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compiled, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_without_import_alexnet_tf_keras_cannot_load_it(tiny_run, tmp_path):
    # the control: registration, not something else, is what makes the test above pass
    result = run_fresh("import sys, keras; keras.saving.load_model(sys.argv[1], compile=False)",
                       os.path.join(tiny_run, "model.keras"), cwd=tmp_path)
    assert result.returncode != 0 and "Could not locate class 'LocalResponseNormalization'" in result.stderr


@pytest.mark.slow
def test_a_saved_code_encoder_loads_after_import(tmp_path):
    from alexnet_tf import retrieval
    features = np.random.default_rng(1).normal(0, 1, (64, 12)).astype(np.float32)
    encoder = retrieval.train_autoencoder(features, bits=8, epochs=1, batch_size=32)
    encoder.save(tmp_path / "encoder.keras")
    np.save(tmp_path / "f.npy", features)
    code = ("import sys, numpy as np, alexnet_tf, keras\n"
            "e = keras.saving.load_model(sys.argv[1])\n"
            "np.save(sys.argv[3], e.predict(np.load(sys.argv[2]), verbose=0))")
    result = run_fresh(code, str(tmp_path / "encoder.keras"), str(tmp_path / "f.npy"), str(tmp_path / "out.npy"),
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encoder.predict(features, verbose=0), rtol=1e-5, atol=1e-5)


def test_importing_the_package_does_not_import_tensorflow_until_keras_is():
    code = "import sys, alexnet_tf; print('tensorflow' in sys.modules, 'alexnet_tf.layers' in sys.modules)"
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.slow
def test_console_script_and_version(capsys, tmp_path):
    script = shutil.which("alexnet-tf", path=os.path.dirname(sys.executable))
    assert script, "alexnet-tf not installed next to this Python: run `pip install -e .` (the Makefile does)"
    top = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0 and top.stdout.startswith("usage: alexnet-tf")
    for command in ("evaluate", "export", "ablate", "train"):
        assert re.search(rf"\b{command}\b", top.stdout), command
    # `alexnet-tf train` is `python train.py` (train_command.main, run here): the same options
    train = subprocess.run([script, "train", "--help"], capture_output=True, text=True, timeout=60)
    from alexnet_tf import train_command
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        train_command.main(["--help"])
    direct = capsys.readouterr().out
    options = lambda text: sorted(set(re.findall(r"--[a-z-]+", text)))  # noqa: E731
    assert done.value.code == 0
    assert train.returncode == 0 and options(train.stdout) == options(direct) == ["--config", "--help",
                                                                                  "--run-dir", "--set"]
    bad = subprocess.run([script, "train", "--set", "train.lr=abc"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "config error: train.lr = 'abc' (str); expected a number in (0.0, inf)"

    import alexnet_tf
    assert alexnet_tf.__version__ == importlib.metadata.version("alexnet-tf")


def test_pyproject_pins_are_the_lock():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    lock = {}
    for line in open(os.path.join(ROOT, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            lock[name.lower().replace("_", "-")] = version
    pins = [d.split("==") for d in project["dependencies"] + sum(project["optional-dependencies"].values(), [])]
    for name, version in pins:
        key = name.lower().replace("_", "-")
        if key != "torch":  # the optional PyTorch side is pinned in alexnet_tf/perf/requirements-torch.txt
            assert lock.get(key) == version, f"{name}: pyproject {version}, requirements.txt {lock.get(key)}"
    runtime = {n.lower().replace("_", "-") for n, _ in (d.split("==") for d in project["dependencies"])}
    assert runtime | {"pytest", "pytest-xdist", "execnet", "ruff", "tensorflow-serving-api"} == set(lock)
    torch = open(os.path.join(ROOT, "alexnet_tf", "perf", "requirements-torch.txt")).read()
    assert f"torch=={dict(pins)['torch']}" in torch
