"""Config loading, overrides and the one-line errors of `train.py` (exit status 2, no traceback).

The errors come before TensorFlow starts, so `train_command.main` runs in this process (conftest.run_main);
one test starts a process to see that TensorFlow is not imported, and test_package runs the installed
console script for its exit status."""

import json
import os
import subprocess
import sys

import pytest

import alexnet_tf
from alexnet_tf import train_command
from alexnet_tf.config import ConfigError, load_config
from conftest import ROOT, run_main


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
    ("train.lr_drop_epochs=[8,8]", "train.lr_drop_epochs = [8, 8]; expected [] or increasing epochs >= 1"),
    ("train.lr_drop_epochs=[0]", "train.lr_drop_epochs = [0]; expected [] or increasing epochs >= 1"),
    ("data.batch_size", "is not of the form section.key=value"),
    ("train.lr=nan", "train.lr = 'nan' (str); expected a number in (0.0, inf)"),
    ("train.lr=.inf", "train.lr = inf (float); expected a number in (0.0, inf)"),
    ("train.seed=4294967296", "train.seed = 4294967296 (int); expected an integer in [0, 4294967295]"),
])
def test_bad_override_exits_2_with_one_line(capsys, override, fragment):
    status, out, err = run_main(capsys, train_command.main, ["--set", override])
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err and out == ""


def test_bad_config_files(capsys, tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("train:\n  epoch: 3\n")
    bad_yaml = tmp_path / "bad_yaml.yaml"
    bad_yaml.write_text("train: [\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    for path, fragment in ((bad_key, "unknown key 'train.epoch'"), (bad_yaml, "is not valid YAML"),
                           (binary, "is not a text file (byte 128 is not UTF-8)"),
                           (tmp_path / "missing.yaml", "(No such file or directory); expected a YAML config")):
        status, _, err = run_main(capsys, train_command.main, ["--config", path])
        assert status == 2 and err.count("\n") == 1 and fragment in err, err


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


# === Inputs that would only fail inside TensorFlow, rejected by load_config with one line ===

TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 1}}
MULTI_WORKER = ["distribute.strategy=multi_worker"]


def config_error(overrides, path=None):
    """The one-line message load_config raises for `overrides`."""
    with pytest.raises(ConfigError) as raised:
        load_config(path, overrides)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("config error: "), message
    return message


def task(**fields):
    return json.dumps({**TWO_WORKERS, "task": fields})


@pytest.mark.parametrize("tf_config, fragment", [
    ("not json", "TF_CONFIG = 'not json' is not JSON (Expecting value: line 1 column 1 (char 0)); expected a JSON object"),
    ('{"cluster": ', "is not JSON (Expecting value: line 1 column 13 (char 12))"),
    ("[1, 2]", "TF_CONFIG = [1, 2] is not a JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "TF_CONFIG cluster = null; expected a mapping of jobs"),
    (json.dumps({"cluster": {"workers": ["a:1"]}, "task": {"type": "worker", "index": 0}}),
     'TF_CONFIG cluster has job "workers"; expected jobs among chief, worker, evaluator, ps'),
    (json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}),
     'TF_CONFIG cluster.worker = null; expected a non-empty list of "host:port" addresses'),
    (json.dumps({"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}), "TF_CONFIG cluster.worker = [];"),
    (json.dumps({"cluster": {"worker": ["a:1", "host2"]}, "task": {"type": "worker", "index": 0}}),
     'TF_CONFIG cluster.worker[1] = "host2"; expected "host:port" with a port in 1..65535'),
    (json.dumps({"cluster": {"worker": ["a:70000"]}, "task": {"type": "worker", "index": 0}}), 'cluster.worker[0] = "a:70000"'),
    (json.dumps({"cluster": {"worker": ["a:1"], "chief": ["c:1", "d:1"]}, "task": {"type": "worker", "index": 0}}),
     'TF_CONFIG cluster.chief = ["c:1", "d:1"]; expected at most one address'),
    (task(type="ps", index=0), 'TF_CONFIG task.type = "ps"; expected worker or chief'),
    (json.dumps({"cluster": TWO_WORKERS["cluster"]}), "TF_CONFIG task.type = null; expected worker or chief"),
    (task(type="chief", index=0), 'TF_CONFIG task.type = "chief" but the cluster has no chief list'),
    (task(type="worker", index=2), "TF_CONFIG task.index = 2; expected an integer in [0, 1] (cluster.worker has 2 addresses)"),
    (task(type="worker", index=-1), "TF_CONFIG task.index = -1; expected an integer in [0, 1]"),
    (task(type="worker"), "TF_CONFIG task.index = null; expected an integer in [0, 1]"),
    (task(type="worker", index=True), "TF_CONFIG task.index = true;"),
])
def test_malformed_tf_config_is_a_config_error(monkeypatch, tf_config, fragment):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert fragment in config_error(MULTI_WORKER)


@pytest.mark.parametrize("tf_config", [
    json.dumps(TWO_WORKERS),
    task(type="worker", index="1"),  # TensorFlow reads the index with int()
    json.dumps({"cluster": {"chief": ["[::1]:2222"], "worker": ["localhost:2223"]}, "task": {"type": "chief", "index": 0}}),
    json.dumps({"cluster": {"worker": ["w-0.svc.cluster.local:2222"], "evaluator": ["e:1"]},
                "task": {"type": "worker", "index": 0}}),
])
def test_well_formed_tf_config_loads(monkeypatch, tf_config):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert load_config(None, MULTI_WORKER).distribute.strategy == "multi_worker"


def test_tf_config_is_only_read_by_multi_worker(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "not json")
    load_config(None, ["distribute.strategy=mirrored"])
    # unset: train.py reports it (test_distribute), and evaluate/predict read a multi_worker run's config without it
    monkeypatch.delenv("TF_CONFIG")
    load_config(None, MULTI_WORKER)


def test_logical_cpus_has_an_upper_bound():
    assert config_error(["distribute.logical_cpus=100000"]) == \
        "config error: distribute.logical_cpus = 100000 (int); expected an integer in [0, 64]"
    assert load_config(None, ["distribute.logical_cpus=64"]).distribute.logical_cpus == 64


# Hand counts: the paper model (test_model.paper_parameter_count) and the default run's model:
# 28x28x1, conv1 5x5/1 'same', width 0.375 -> 18, 48, 72, 72, 48 kernels per tower, pools 28 -> 13 -> 6 -> 2,
# 2*(25+1)*18 + 2*(25*18+1)*48 + 2*(9*96+1)*72 + 2*(9*72+1)*72 + 2*(9*72+1)*48
# + 2*(2*2*2*48+1)*512 + 2*(1024+1)*512 + (1024+1)*10 = 1,778,642.
# One tower (§3.2): conv1-4 halved, conv5 kept at 256, the same classifier (as test_model's variant count).
ONE_TOWER = ((363 + 1) * 48 + (5 * 5 * 48 + 1) * 128 + (9 * 128 + 1) * 192 + (9 * 192 + 1) * 192
             + (9 * 192 + 1) * 256 + (9216 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000)


@pytest.mark.parametrize("config, overrides, count", [
    ("alexnet_imagenet.yaml", [], 60_965_224),
    ("fashion_mnist.yaml", [], 1_778_642),
    ("alexnet_imagenet.yaml", ["model.towers=1"], ONE_TOWER),
    # 1 CNN*: a sixth 3x3 conv layer, 128 kernels per tower over its own tower's 128 maps
    ("alexnet_imagenet.yaml", ["model.conv6=true"], 60_965_224 + 2 * (9 * 128 + 1) * 128),
    # without conv3 the towers meet at conv4: conv3 (2 x 128 maps in) and conv4 (192 in) go, and conv4
    # comes back reading both towers' 2 x 128 maps
    ("alexnet_imagenet.yaml", ["model.remove_conv=[3]"],
     60_965_224 - (9 * 256 + 1) * 384 - (9 * 192 + 1) * 384 + (9 * 256 + 1) * 384),
])
def test_parameter_count_without_tensorflow(config, overrides, count):
    from alexnet_tf.architecture import parameter_count
    assert parameter_count(load_config(os.path.join(ROOT, "configs", config), overrides).model) == count


@pytest.mark.parametrize("towers, width, kernels", [
    (2, 1.0, [48, 128, 192, 192, 128]),      # §3.5: half of 96, 256, 384, 384, 256 on each GPU
    (1, 1.0, [48, 128, 192, 192, 256]),      # §3.2, footnote 2: the one-tower net keeps conv5's 256
    (2, 0.375, [18, 48, 72, 72, 48]),        # the default run (configs/fashion_mnist.yaml)
    (2, 0.5, [24, 64, 96, 96, 64]),
    (1, 0.3, [14, 38, 58, 58, 77]),          # 14.4, 38.4, 57.6, 57.6, 76.8 rounded
    (2, 100.0, [4800, 12800, 19200, 19200, 12800]),
    (1, 0.001, [1, 1, 1, 1, 1]),             # never fewer than one kernel
])
def test_tower_channels_by_hand(towers, width, kernels):
    from alexnet_tf.architecture import PAPER_CONV_CHANNELS, tower_channels
    assert PAPER_CONV_CHANNELS == (96, 256, 384, 384, 256)
    assert tower_channels(towers, width) == kernels


@pytest.mark.parametrize("config, overrides", [
    ("fashion_mnist.yaml", []),
    ("alexnet_imagenet.yaml", []),
    ("alexnet_imagenet.yaml", ["model.image_size=227", "model.width=0.25", "model.fc_units=64"]),
    ("alexnet_imagenet.yaml", ["model.towers=1", "model.conv6=true", "model.width=0.3", "model.fc_units=30"]),
    ("alexnet_imagenet.yaml", ["model.conv1_kernel=9", "model.pool=non_overlapping", "model.remove_conv=[3]",
                               "model.width=0.2", "model.fc_units=64", "model.image_size=100"]),
    ("fashion_mnist.yaml", ["model.remove_conv=[2, 4]", "model.pool=non_overlapping", "model.width=0.7"]),
    ("fashion_mnist.yaml", ["model.towers=1", "model.conv1_kernel=0", "model.remove_conv=[2, 3, 4]"]),
])
def test_parameter_count_matches_the_keras_model(config, overrides):
    from alexnet_tf import architecture, model
    cfg = load_config(os.path.join(ROOT, "configs", config), overrides)
    assert architecture.parameter_count(cfg.model) == model.build_model(cfg).count_params()


def test_model_larger_than_the_ram_is_a_config_error(monkeypatch):
    from alexnet_tf import memory_checks
    monkeypatch.setattr(memory_checks, "physical_ram", lambda: 16 * 2**30)  # the message names the RAM: fix it
    message = config_error(["model.width=100"])
    assert message == ("config error: model.width = 100.0, model.fc_units = 4096, model.image_size = 224 give "
                       "26,777,938,408 parameters, whose weights, momentum, gradients and checkpoint copy "
                       "(float32, 16 bytes per parameter) need ~399.0 GiB, more than this machine's 16.0 GiB of RAM; "
                       "expected a smaller model.width, model.fc_units or model.image_size")
    # the bound is exactly 16 bytes per parameter: the paper model needs 16 x 60,965,224 bytes (0.91 GiB);
    # with its input (a float32 batch of 128 x 224x224x3, 77,070,336 bytes, and the 256x256x3 float32 mean
    # image, 786,432 bytes: check_input_memory) the run needs 77,856,768 bytes more
    paper = os.path.join(ROOT, "configs", "alexnet_imagenet.yaml")
    monkeypatch.setattr(memory_checks, "physical_ram", lambda: 16 * 60_965_224 + 77_856_768)
    load_config(paper)
    monkeypatch.setattr(memory_checks, "physical_ram", lambda: 16 * 60_965_224 + 77_856_767)
    assert "a training batch of 128 x 224x224x3 float32: 0.1 GiB" in config_error([], paper)
    monkeypatch.setattr(memory_checks, "physical_ram", lambda: 16 * 60_965_224 - 1)
    assert "give 60,965,224 parameters" in config_error([], paper)
    # no RAM figure from the OS (Windows): no check
    monkeypatch.setattr(memory_checks, "physical_ram", lambda: None)
    assert load_config(None, ["model.width=100"]).model.width == 100.0


def test_model_larger_than_any_ram_fails_on_this_machine():
    # 10^8-unit fc layers: fc7 alone has 10^16 parameters, 149 million GiB for the four copies
    assert "GiB of RAM; expected a smaller model.width" in config_error(["model.fc_units=100000000"])


def test_upscale_and_batch_larger_than_the_ram_are_config_errors(monkeypatch):
    """data.upscale rescales a whole float32 batch before the crop: the batch, the mean image at that size and
    the model must fit the RAM. Hand-computed for configs/init_paper_geometry.yaml (1 channel, batch 128,
    10 classes) on 16 GiB:
      model  16 x 56,885,962 parameters (the paper's 60,965,224 - 23,232 of conv1's two missing input
             channels - 4,056,030 of fc8's 990 missing classes) = 910,175,392 bytes = 0.8 GiB
      upscale 20000: batch 4 x 128 x 20000^2 = 204.8e9 bytes = 190.7 GiB, mean 4 x 20000^2 = 1.5 GiB,
             in all 207,310,175,392 bytes = 193.1 GiB
      largest upscale: 516 s^2 <= 2^34 - 910,175,392 = 16,269,693,792 (516 = 4 bytes x (128 + 1) images)
             -> s^2 <= 31,530,414 -> s = 5615 (5615^2 = 31,528,225; 5616^2 = 31,539,456)"""
    from alexnet_tf import memory_checks
    monkeypatch.setattr(memory_checks, "physical_ram", lambda: 16 * 2**30)
    paper = os.path.join(ROOT, "configs", "alexnet_imagenet.yaml")
    geometry = os.path.join(ROOT, "configs", "init_paper_geometry.yaml")
    assert config_error(["data.upscale=20000"], geometry) == (
        "config error: data.upscale = 20000, data.batch_size = 128: the run needs ~193.1 GiB (a training batch of "
        "128 x 20000x20000x1 float32: 190.7 GiB; the mean image of 20000x20000x1 float32: 1.5 GiB; the model at 16 "
        "bytes per parameter: 0.8 GiB), more than this machine's 16.0 GiB of RAM; expected data.upscale <= 5,615 at "
        "this data.batch_size")
    assert load_config(geometry, ["data.upscale=5615"]).data.upscale == 5615
    assert "expected data.upscale <= 5,615" in config_error(["data.upscale=5616"], geometry)
    # 4 x 128 x 10^12 bytes = 476,837.2 GiB: refused before anything is allocated
    assert "a training batch of 128 x 1000000x1000000x1 float32: 476,837.2 GiB" in config_error(
        ["data.upscale=1000000"], geometry)
    # the other keys that scale the input: a batch of 10^7 crops 224x224x3 = 4 x 10^7 x 150,528 bytes = 5,607.6 GiB,
    # a 10^6-side mean image 4 x 3 x 10^12 bytes = 11,175.9 GiB, 2 x 10^8 synthetic images of 224x224x3 = 28,038.0 GiB
    for overrides, fragment in ((["data.batch_size=10000000"], "10000000 x 224x224x3 float32: 5,607.6 GiB"),
                                (["data.resize=1000000"], "the mean image of 1000000x1000000x3 float32: 11,175.9 GiB"),
                                (["data.source=synthetic", "data.synthetic_size=100000000"],
                                 "2 x 100000000 x 224x224x3 uint8: 28,038.0 GiB")):
        key = overrides[-1].split("=")[0]
        message = config_error(overrides, paper)
        assert fragment in message and message.endswith(f"expected a smaller {key}"), message
    load_config(paper)  # the paper's own run fits in 16 GiB


@pytest.mark.parametrize("overrides, fragment", [
    (["data.batch_size=55001"], "data.batch_size = 55001 is larger than the 55000 training images "
                                "(data.source = fashion_mnist after data.val_examples = 5000); expected 1 to 55000"),
    (["data.batch_size=60001", "data.val_examples=0"], "data.batch_size = 60001 is larger than the 60000 training images "
                                                       "(data.source = fashion_mnist); expected 1 to 60000"),
    (["data.batch_size=1024", "data.train_examples=1000"], "data.batch_size = 1024 is larger than the 1000 training images "
                                                           "(data.train_examples = 1000); expected 1 to 1000"),
])
def test_batch_larger_than_the_training_set_is_a_config_error(overrides, fragment):
    assert fragment in config_error(overrides, os.path.join(ROOT, "configs", "fashion_mnist.yaml"))


def test_batch_size_is_checked_where_the_training_set_size_is_known():
    assert "data.batch_size = 513 is larger than the 512 training images (data.source = synthetic)" in \
        config_error(["data.batch_size=513"])
    assert "larger than the 48 training images (data.source = synthetic after data.val_examples = 16)" in \
        config_error(["data.batch_size=49", "data.val_examples=16", "data.synthetic_size=64"])
    assert load_config(os.path.join(ROOT, "configs", "fashion_mnist.yaml"), ["data.batch_size=55000"]).data.batch_size == 55000
    # file sources: TFDS or the folder scan count the images, after TensorFlow starts (a batch of 10,000
    # 224x224x3 float32 crops, 5.6 GiB, passes the memory check)
    assert load_config(None, ["data.source=folder", "data.path=/tmp", "data.batch_size=10000"]).data.batch_size == 10000


@pytest.mark.parametrize("tf_config, override, fragment", [
    ("not json", "distribute.strategy=multi_worker", "TF_CONFIG = 'not json' is not JSON"),
    (task(type="worker", index=5), "distribute.strategy=multi_worker", "TF_CONFIG task.index = 5"),
    (None, "distribute.logical_cpus=100000", "distribute.logical_cpus = 100000 (int); expected an integer in [0, 64]"),
    (None, "model.fc_units=100000000", "GiB of RAM; expected a smaller model.width"),
    (None, "data.batch_size=60000", "data.batch_size = 60000 is larger than the 55000 training images"),
])
def test_environment_and_size_checks_exit_2_with_one_line(capsys, monkeypatch, tf_config, override, fragment):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    status, out, err = run_main(capsys, train_command.main, ["--set", override])
    assert status == 2 and out == ""  # the resolved config is printed only after validation
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], err


# === Hostile configs: bounded before they cost memory ===

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _one_line(capsys, argv):
    status, out, err = run_main(capsys, train_command.main, argv)
    assert status == 2 and out == "" and err.count("\n") == 1, err[:500]
    return err.strip()


def test_a_yaml_alias_bomb_is_refused_in_one_line(capsys, tmp_path):
    """10^9 list items from ~600 bytes: refused at the first alias, in a config file and in --set."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB + "name: *i\n")
    assert len(ALIAS_BOMB) < 700
    line = _one_line(capsys, ["--config", path, "--run-dir", tmp_path / "run"])
    assert line == (f"config error: {path}: a YAML alias (*a) at line 2; expected plain values (aliases are "
                    "refused: a few bytes of them can expand to gigabytes)")
    flow = "{" + ALIAS_BOMB.replace("\n", ", ").rstrip(", ") + "}"
    line = _one_line(capsys, ["--set", f"train.lr_drop_epochs={flow}", "--run-dir", tmp_path / "run"])
    assert line.startswith("config error: --set train.lr_drop_epochs: a YAML alias (*a) at line 1;")


def test_deep_nesting_is_refused_in_one_line(capsys, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model:\n  remove_conv: " + "[" * 10000 + "]" * 10000 + "\n")
    line = _one_line(capsys, ["--config", path, "--run-dir", tmp_path / "run"])
    assert line == (f"config error: {path}: YAML nested deeper than 20 levels at line 2; expected sections, "
                    "keys and flat lists")


def test_a_config_file_over_the_size_limit_is_refused_before_parsing(capsys, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 100_001)
    line = _one_line(capsys, ["--config", path, "--run-dir", tmp_path / "run"])
    assert line == (f"config error: config file {path} is 1,000,010 bytes; expected a YAML config of at most "
                    "1,000,000 bytes")


def test_a_huge_value_is_quoted_short(capsys, tmp_path):
    """A 100,000-element list (under the size limit, no aliases) in a key that takes a list: the message
    quotes at most 200 characters of it."""
    path = tmp_path / "long.yaml"
    path.write_text("model:\n  remove_conv: [" + ", ".join(["2"] * 100_000) + "]\n")
    line = _one_line(capsys, ["--config", path, "--run-dir", tmp_path / "run"])
    assert line.startswith("config error: model.remove_conv = [2, 2, 2,") and "..." in line
    assert len(line) < 400
    line = _one_line(capsys, ["--set", "model.pool=" + "x" * 300_000, "--run-dir", tmp_path / "run"])
    assert line.startswith("config error: model.pool = 'xxxx") and len(line) < 400
