"""data.augment_on device: tf.data delivers uint8 crops and their random draws, the training step applies the
mean, flip, PCA lighting and scale. For the same seeds the network's inputs are the host path's bit for bit
(every float op is elementwise and IEEE-rounded, see device_augment.py), so training ends with the host run's
very weights, under the default strategy and mirrored over 2 logical CPUs, and a resumed run is exact.
Under the inputs that order the examples themselves: each sharded worker's stream (data/sharding.py) equals its
host stream once finished, and the elements a real tf.data service (test_data_service's dispatcher and two
workers on 127.0.0.1) delivers become the host transform's, and train."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.config import ConfigError
from alexnet_tf.data import device_augment, make_datasets, pipeline, service
from alexnet_tf.train_input import Plan
from conftest import ROOT, tiny_overrides
from fake_images import pixels
from test_data_service import dispatcher  # noqa: F401  (a real dispatcher and two workers on 127.0.0.1)
from test_distribute import run_python
from test_folder import config as folder_config
from test_folder import folder  # noqa: F401  (the image-folder fixture)
from test_resume import crash_at_step, same_weights, weights
from test_sharding import config as prepared_config
from test_sharding import prepared_dir, stream  # noqa: F401  (prepared_dir: 64 + 8 images in 8 + 1 shards)

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
    """Mirrored over 2 logical CPUs, host against device: the final weights under replicated input (each replica
    its slice of the global batch) and under distribute.input sharded (per-replica batches through
    distribute_datasets_from_function, train_input.Sharded.take); and where the step casts the uint8 pixels."""
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
    for mode in ("replicated", "sharded"):
        for where in ("host", "device"):
            # sharded: one epoch (its stream across epochs is test_each_worker_s_shard_..._is_its_host_shard's)
            epochs = ["train.epochs=1"] if mode == "sharded" else []
            train(alexnet_tf.load_config(None, sets + epochs + ["distribute.input=" + mode, "data.augment_on=" + where]),
                  {str(tmp_path)!r} + f"/{{mode}}-{{where}}", verbose=0)
        a, b = (keras.saving.load_model({str(tmp_path)!r} + f"/{{mode}}-{{w}}/model.keras").get_weights() for w in ("host", "device"))
        print(mode, "same weights:", all(np.array_equal(x, y) for x, y in zip(a, b)))
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
    assert "replicated same weights: True" in out and "sharded same weights: True" in out, out
    assert "input: sharded, worker 0 of 1 decodes 64 examples per epoch" in out
    devices = out.split("devices: ")[1].splitlines()[0]
    assert devices == str([f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in (0, 1)]), devices


def test_in_memory_crops_cannot_go_to_the_device():
    for extra in ("data.random_crop=4", "data.upscale=32"):
        with pytest.raises(ConfigError, match=r"^config error: data.augment_on = device with data\.(random_crop|upscale) = \d+: .*"
                                              r"expected data.augment_on = host"):
            alexnet_tf.load_config(None, tiny_overrides(**{"data.augment_on": "device"}) + [extra])


# === Under the inputs that order the examples themselves: sharded workers and the tf.data service ===

AUGMENT = {"data.lighting": True, "data.mean": "image", "data.scale": 0.02, "train.deterministic": True}


def host_and_device(source, request, tmp_path):
    """make_datasets of `source` with AUGMENT (flips, PCA lighting, the mean image, scale), host and device:
    in-memory arrays (augmented per batch), folder files (per image, whole decode) and prepared shards (per
    image, fused decode of the window)."""
    def load(**extra):
        if source == "arrays":
            return make_datasets(alexnet_tf.load_config(None, tiny_overrides(**{"model.channels": 3}, **AUGMENT, **extra)))
        if source == "folder":
            return make_datasets(folder_config(request.getfixturevalue("folder")[0], tmp_path, **AUGMENT, **extra))
        return make_datasets(prepared_config(request.getfixturevalue("prepared_dir"), **AUGMENT, **extra))
    return load(), load(**{"data.augment_on": "device"})


# (global batch, steps per epoch) of the sharded streams: the folder fixture has 9 readable training images, the others 64
PLANS = {"arrays": (16, 4), "folder": (4, 2), "prepared": (16, 4)}


@pytest.mark.parametrize("source", ["arrays", "folder", "prepared"])
def test_each_worker_s_shard_finished_on_the_device_is_its_host_shard(source, request, tmp_path):
    """Worker i of 2 (distribute.input sharded, data/sharding.py), its stream through the spare epoch and
    resumed at (epoch 1, step 1): the device stream's uint8 batches, finished by DeviceAugment, against the
    host stream of the same worker (the same example at each position, the same per-example seeds),
    images bit for bit and labels."""
    host, device = host_and_device(source, request, tmp_path)
    batch, steps = PLANS[source]
    plan = Plan(batch=batch, steps=steps, epochs=2, seed=7, shuffle_buffer=16)
    firsts = []
    for i in range(2):
        expected, got = stream(host.source, plan, 2, i), stream(device.source, plan, 2, i)
        assert len(got) == len(expected) == (plan.epochs + 1) * steps
        for (x, y), (inputs, labels) in zip(expected, got):
            assert inputs["pixels"].dtype == np.uint8 and inputs["pixels"].shape[0] == batch // 2
            np.testing.assert_array_equal(device.device_augment(inputs).numpy(), x)
            np.testing.assert_array_equal(labels, y)
        assert set(np.concatenate([inputs["flip"] for inputs, _ in got]).tolist()) == {False, True}
        resumed = stream(device.source, plan, 2, i, start=(1, 1))
        assert len(resumed) == len(expected) - steps - 1
        for x, (inputs, labels) in zip(expected[steps + 1:], resumed):
            np.testing.assert_array_equal(device.device_augment(inputs).numpy(), x[0])
            np.testing.assert_array_equal(labels, x[1])
        firsts.append(expected[0][0])
    assert not np.array_equal(*firsts)  # the two workers' parts differ


def finished(elements):
    """Sorted (label, image bytes) of (network input, label) pairs: a multiset, comparable whatever the order."""
    return sorted((int(y), np.asarray(x, np.float32).tobytes()) for x, y in elements)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["arrays", "folder", "prepared"])
def test_the_service_s_device_elements_become_the_host_s(source, dispatcher, request, tmp_path):  # noqa: F811
    """One epoch (distributed_epoch, data/service.py) decoded by the real service's two workers with
    data.augment_on device, each global batch finished by DeviceAugment in this process, against the host
    transform of the same epoch's examples run here without a service (service.examples: the same
    per-example seeds). The service hands out its splits (example indices, shard files) to whichever of
    its workers asks next and the trainer takes their elements as they arrive, so the order is not
    reproducible (data/service.py): the two are compared as multisets of (label, image bytes), all distinct."""
    host, device = host_and_device(source, request, tmp_path)
    n, batch = host.train_size, 3 if source == "folder" else 16  # the whole epoch: 9 folder images, 64 others
    plan = Plan(batch=batch, steps=n // batch, epochs=1, seed=7, shuffle_buffer=16)
    reference = [(x, y) for x, y, _ in service.examples(host.source, plan, 0).as_numpy_iterator()]
    received = []
    for inputs, labels in service.epoch_dataset(device.source, plan, dispatcher, 0, 0):
        assert inputs["pixels"].dtype == tf.uint8
        received += zip(device.device_augment(inputs).numpy(), labels.numpy())
    assert len(received) == len(reference) == n
    assert finished(received) == finished(reference)
    assert len({x for _, x in finished(received)}) == n


@pytest.mark.slow
def test_training_steps_through_the_service_on_the_device_end_at_a_finite_loss(dispatcher, prepared_dir, tmp_path,  # noqa: F811
                                                                                capsys):
    """3 steps of the tiny RGB model on the prepared shards, their examples decoded by the service's workers and
    augmented in the training step: each step's loss, as the callbacks see it, and the validation loss are finite."""
    from alexnet_tf.training import train

    class Losses(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(logs["loss"])

    config = prepared_config(prepared_dir, **AUGMENT, **{"data.augment_on": "device", "data.service": dispatcher,
                                                          "train.epochs": 1, "train.steps_per_epoch": 3})
    losses = Losses()
    metrics = train(config, str(tmp_path / "run"), verbose=0, callbacks=[losses])
    assert f"input: the tf.data service at {dispatcher}" in capsys.readouterr().out
    assert len(losses.seen) == 3 and np.isfinite(losses.seen).all(), losses.seen
    assert metrics["epochs_completed"] == 1 and np.isfinite(metrics["val_loss"])
