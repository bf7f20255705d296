import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The repository root: configs/, train.py. The package itself comes from `pip install -e .` (Makefile).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import alexnet_tf  # noqa: E402  (before keras/TensorFlow: it turns oneDNN on, see alexnet_tf/__init__.py)
import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts (and ends) under the float32 policy with a fixed seed, without op determinism."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
    # train.deterministic=true turns TensorFlow's op determinism on for the whole process, and TF has
    # no public switch back. Later tests must not inherit it: it changes float rounding, enough to make
    # test_overfits_a_tiny_batch end at another point.
    from tensorflow.python.framework import config as tf_config
    tf_config.disable_op_determinism()


def tiny_overrides(**extra):
    """A model and data small enough for a unit test: 28x28 grey synthetic images, 10 classes."""
    base = {
        "model.image_size": 28, "model.channels": 1, "model.num_classes": 10, "model.geometry": "small",
        "model.width": 0.125, "model.fc_units": 32, "data.source": "synthetic", "data.synthetic_size": 64,
        "data.batch_size": 16, "train.epochs": 1,
        "data.val_examples": 0,  # the default config holds out 5,000 of Fashion-MNIST's images; synthetic has 64
        # the SavedModel export is most of a tiny run's time (~2 of 3 s); the tests of the export set it true
        "train.export": False,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished one-epoch run directory of a tiny RGB model on synthetic 28x28 images (10 classes),
    trained once per test session by `training.train` (which also exports export/1/)."""
    from alexnet_tf.training import train

    run_dir = str(tmp_path_factory.mktemp("tiny_run"))
    keras.mixed_precision.set_global_policy("float32")
    # He-normal weights and no bias of 1: the outputs depend clearly on the image after one epoch
    config = alexnet_tf.load_config(None, tiny_overrides(**{
        "model.channels": 3, "data.scale": 0.02, "model.weight_init": "he_normal", "model.hidden_bias": 0.0,
        "train.export": True}))
    train(config, run_dir, verbose=0)
    return run_dir


def run_main(capsys, main, argv):
    """A command's `main(argv)` (train.py's `train_command.main`, `alexnet_tf.__main__.main`) run in this
    process, as the tests that need no separate process run them: a TensorFlow start (~4-9 s) saved per
    call. Returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err
