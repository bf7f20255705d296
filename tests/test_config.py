"""Config loading, overrides and the one-line errors of `train.py` (exit status 2, no traceback)."""

import os
import subprocess
import sys

import pytest

import alexnet_tf
from alexnet_tf.config import ConfigError, load_config
from conftest import ROOT


def run_train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("override, fragment", [
    ("train.lr=abc", "train.lr = 'abc' (str); expected a number in (0.0, inf)"),
    ("train.lr=-1", "train.lr = -1"),
    ("train.epochs=2.5", "train.epochs = 2.5 (float); expected an integer in [1, inf)"),
    ("model.towers=3", "model.towers = 3 (int); expected one of 1, 2"),
    ("model.activation=sigmoid", "expected one of relu, tanh"),
    ("train.lrate=0.1", "unknown key 'train.lrate'"),
    ("optim.lr=0.1", "unknown key 'optim.lr'"),
    ("model.dropout=1.5", "model.dropout = 1.5 (float); expected a number in [0.0, 0.95]"),
    ("model.remove_conv=[1]", "model.remove_conv = [1]"),
    ("train.profile_steps=[5,2]", "train.profile_steps = [5, 2]; expected [] or [first, last] with 1 <= first <= last"),
    ("data.batch_size", "is not of the form section.key=value"),
    ("train.lr=nan", "train.lr = 'nan' (str); expected a number in (0.0, inf)"),
    ("train.lr=.inf", "train.lr = inf (float); expected a number in (0.0, inf)"),
    ("train.seed=4294967296", "train.seed = 4294967296 (int); expected an integer in [0, 4294967295]"),
])
def test_bad_override_exits_2_with_one_line(override, fragment):
    result = run_train("--set", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_config_files(tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("train:\n  epoch: 3\n")
    bad_yaml = tmp_path / "bad_yaml.yaml"
    bad_yaml.write_text("train: [\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    for path, fragment in ((bad_key, "unknown key 'train.epoch'"), (bad_yaml, "is not valid YAML"),
                           (binary, "is not a text file (byte 128 is not UTF-8)"),
                           (tmp_path / "missing.yaml", "not found")):
        result = run_train("--config", str(path))
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


def test_validation_happens_before_tensorflow_is_imported():
    code = ("import sys, alexnet_tf; alexnet_tf.load_config('configs/fashion_mnist.yaml', ['train.lr=0.1']); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_overrides_are_typed_and_applied():
    cfg = load_config(os.path.join(ROOT, "configs", "fashion_mnist.yaml"),
                      ["train.lr=0.05", "model.remove_conv=[2, 4]", "train.steps_per_epoch=null", "train.epochs=3"])
    assert cfg.train.lr == 0.05 and cfg.model.remove_conv == [2, 4] and cfg.train.epochs == 3
    assert cfg.train.steps_per_epoch is None
    # an int where a float is expected is accepted and converted
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0 and isinstance(load_config(None, ["train.lr=1"]).train.lr, float)


def test_config_sections_are_locked_against_mistyped_attributes():
    cfg = load_config(None)
    cfg.train.lr = 0.02  # a real key can still be set in code
    assert cfg.train.lr == 0.02
    for section, typo in ((cfg, "modle"), (cfg.train, "lrate"), (cfg.model, "tower"), (cfg.data, "batchsize"),
                          (cfg.distribute, "strategies")):
        with pytest.raises(AttributeError, match=typo):
            setattr(section, typo, 1)
        assert not hasattr(section, typo)


def test_cross_key_checks():
    with pytest.raises(ConfigError, match="model.fc_units = 4095 is not divisible"):
        load_config(None, ["model.fc_units=4095"])
    with pytest.raises(ConfigError, match="data.source = fashion_mnist needs"):
        load_config(None, ["data.source=fashion_mnist"])


def test_paper_config_holds_the_papers_values():
    cfg = alexnet_tf.load_config(os.path.join(ROOT, "configs", "alexnet_imagenet.yaml"))
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == \
        (128, 90, 0.01, 0.9, 0.0005)
    assert (cfg.model.towers, cfg.model.weight_init, cfg.model.weight_std, cfg.model.hidden_bias) == (2, "normal", 0.01, 1.0)
    assert (cfg.model.lrn, cfg.model.lrn_convention, cfg.model.pool, cfg.model.dropout) == (True, "paper", "overlapping", 0.5)
    assert cfg.train.lr_max_reductions == 3


def test_every_config_file_loads_and_states_what_to_expect():
    for name in os.listdir(os.path.join(ROOT, "configs")):
        path = os.path.join(ROOT, "configs", name)
        load_config(path)
        header = open(path).read().split("\n\n")[0]
        for word in ("Command:", "Hardware:", "Expected time:", "Expected result:"):
            assert word in header, f"{name} header lacks {word}"


def test_readme_configuration_reference_matches_the_code():
    from alexnet_tf.config import reference_markdown
    page = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    assert reference_markdown() in page, "regenerate docs/configuration.md's table: python -m alexnet_tf config-reference"
