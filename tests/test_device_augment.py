"""data.augment_on device: tf.data delivers uint8 crops and their random draws, the training step applies the
mean, flip, PCA lighting and scale. For the same seeds the network's inputs are the host path's bit for bit
(every float op is elementwise and IEEE-rounded, see device_augment.py), so training ends with the host run's
very weights, under the default strategy and mirrored over 2 logical CPUs, and a resumed run is exact."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.config import ConfigError
from alexnet_tf.data import device_augment, make_datasets, pipeline
from conftest import ROOT, tiny_overrides
from fake_images import pixels
from test_distribute import run_python
from test_folder import config as folder_config
from test_folder import folder  # noqa: F401  (the image-folder fixture)
from test_resume import crash_at_step, same_weights, weights

SIDE, SIZE = 256, 224
SEEDS = [tf.constant([s, 5 * s + 3], tf.int64) for s in range(24)]
# Flips, lighting and the mean image on: every draw the device takes from the host is exercised.
TINY = {"model.channels": 3, "data.lighting": True, "data.scale": 0.02, "model.dropout": 0.0,
        "train.deterministic": True, "train.epochs": 2, "train.checkpoint_every": 3}


def stack(elements):
    return {key: tf.stack([e[key] for e in elements]) for key in elements[0]}


@pytest.mark.parametrize("source", ["prepared", "folder"])
def test_the_device_s_inputs_are_the_host_s_bit_for_bit(source):
    """One image's host transform (fused decode for prepared, whole decode otherwise) against the uint8 crop
    and draws tf.data delivers under data.augment_on device, batched and augmented as the training step does."""
    config = alexnet_tf.load_config(None, [f"data.source={source}", "data.path=unused", "data.lighting=true",
                                           "data.scale=0.02", "data.val_examples=0"])
    mean = np.random.default_rng(0).uniform(0, 255, (SIDE, SIDE, 3)).astype(np.float32)
    lighting = (np.array([60.0, 10.0, 4.0], np.float32), np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0])
    host = pipeline._train_image(config, mean, lighting)
    device = device_augment.for_config(dataclasses.replace(config, data=dataclasses.replace(config.data, augment_on="device")),
                                       mean, lighting, SIZE)
    delivered = device_augment.crop_transform(config, device)
    data = tf.io.encode_jpeg(pixels(SIDE, SIDE, 3), quality=90, chroma_downsampling=True)
    elements = [delivered((data, 7), seed)[0] for seed in SEEDS]
    assert all(e["pixels"].dtype == tf.uint8 and e["pixels"].shape == (SIZE, SIZE, 3) for e in elements)
    assert {bool(e["flip"]) for e in elements} == {False, True}
    assert len({(int(e["top"]), int(e["left"])) for e in elements}) > 20  # random windows
    expected = np.stack([host((data, 7), seed)[0].numpy() for seed in SEEDS])
    np.testing.assert_array_equal(device(stack(elements)).numpy(), expected)


def test_a_folder_pipeline_delivers_uint8_batches_that_become_the_host_s(folder, tmp_path):  # noqa: F811
    root, _ = folder
    settings = {"train.deterministic": True, "data.lighting": True, "data.mean": "image", "data.scale": 0.5}
    host = make_datasets(folder_config(root, tmp_path, **settings))
    data = make_datasets(folder_config(root, tmp_path, **settings, **{"data.augment_on": "device"}))
    assert host.device_augment is None and data.device_augment is not None
    for (x, y), (inputs, labels) in zip(host.train.take(5), data.train.take(5)):  # across the 3-batch epoch's end
        assert inputs["pixels"].dtype == tf.uint8 and inputs["pixels"].shape == (3, 32, 32, 3)
        np.testing.assert_array_equal(data.device_augment(inputs).numpy(), x.numpy())
        np.testing.assert_array_equal(labels.numpy(), y.numpy())
    for (xv, _), (xd, _) in zip(host.val, data.val):  # validation is the host's in both
        np.testing.assert_array_equal(xv.numpy(), xd.numpy())


def test_a_restored_device_iterator_continues_with_the_same_batches(folder, tmp_path):  # noqa: F811
    """The data position of a recovery checkpoint holds with data.augment_on device (crops and draws on the host)."""
    root, _ = folder
    config = folder_config(root, tmp_path, **{"train.deterministic": True, "data.lighting": True,
                                              "data.mean": "image", "data.augment_on": "device"})
    iterator = iter(make_datasets(config).train)
    for _ in range(2):
        next(iterator)
    path = tf.train.Checkpoint(data=iterator).write(str(tmp_path / "position"))
    expected = [tf.nest.map_structure(lambda t: t.numpy(), next(iterator)) for _ in range(3)]
    restored = iter(make_datasets(config).train)
    tf.train.Checkpoint(data=restored).read(path).assert_consumed()
    for batch in expected:
        tf.nest.map_structure(np.testing.assert_array_equal, batch, tf.nest.map_structure(lambda t: t.numpy(), next(restored)))


@pytest.mark.slow
def test_training_on_the_device_ends_with_the_host_s_weights_and_resumes_exactly(tmp_path):
    """Two epochs of a tiny RGB model (flips, PCA lighting, mean image, scale), host against device; then the
    device run stopped dead after step 5 (as by kill -9) and rerun ends with the uninterrupted run's weights."""
    from alexnet_tf.training import train
    host = alexnet_tf.load_config(None, tiny_overrides(**TINY))
    device = alexnet_tf.load_config(None, tiny_overrides(**TINY, **{"data.augment_on": "device"}))
    train(host, str(tmp_path / "host"), verbose=0)
    train(device, str(tmp_path / "device"), verbose=0)
    assert same_weights(weights(tmp_path / "device"), weights(tmp_path / "host"))
    crash_at_step(device, tmp_path / "resumed", 5)
    train(device, str(tmp_path / "resumed"), verbose=0)
    assert same_weights(weights(tmp_path / "resumed"), weights(tmp_path / "device"))


@pytest.mark.slow
def test_mirrored_replicas_augment_on_their_own_device_and_match_the_host(tmp_path):
    out = run_python(f"""
    import numpy as np, tensorflow as tf, keras
    import alexnet_tf
    from alexnet_tf import distribute
    from alexnet_tf.data import make_datasets
    from alexnet_tf.optim import compile_model
    from alexnet_tf.train_steps import make_steps
    from alexnet_tf.training import train
    from conftest import tiny_overrides
    sets = tiny_overrides(**{TINY!r}, **{{"distribute.strategy": "mirrored", "distribute.logical_cpus": 2}})
    for where in ("host", "device"):
        train(alexnet_tf.load_config(None, sets + ["data.augment_on=" + where]), {str(tmp_path)!r} + "/" + where, verbose=0)
    a, b = (keras.saving.load_model({str(tmp_path)!r} + f"/{{w}}/model.keras").get_weights() for w in ("host", "device"))
    print("same weights:", all(np.array_equal(x, y) for x, y in zip(a, b)))
    # where the training step casts the uint8 pixels: on each replica's device
    config = alexnet_tf.load_config(None, sets + ["data.augment_on=device"])
    data, dist = make_datasets(config), distribute.setup(config.distribute)
    with dist.scope():
        model = alexnet_tf.build_model(config)
        compile_model(model, config)
        model.optimizer.build(model.trainable_variables)
    step, _ = make_steps(model, dist, augment=data.device_augment)
    graph = step.get_concrete_function(iter(data.train)).graph
    print("devices:", sorted(op.device for op in graph.get_operations() if op.type == "Cast" and op.get_attr("SrcT") == tf.uint8))
    """, env={"PYTHONPATH": f"{ROOT}:{ROOT}/tests"})
    assert "same weights: True" in out
    devices = out.split("devices: ")[1].splitlines()[0]
    assert devices == str([f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in (0, 1)]), devices


def test_in_memory_crops_cannot_go_to_the_device():
    for extra in ("data.random_crop=4", "data.upscale=32"):
        with pytest.raises(ConfigError, match=r"^config error: data.augment_on = device with data\.(random_crop|upscale) = \d+: .*"
                                              r"expected data.augment_on = host"):
            alexnet_tf.load_config(None, tiny_overrides(**{"data.augment_on": "device"}) + [extra])
