"""The measurement variants of perf.where_time_goes: convolutions padded to the CPU's block change the
shapes oneDNN sees and nothing else; the variant table and its options."""

import argparse

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.perf import where_time_goes
from alexnet_tf.perf.conv_padding import BlockPaddedConv2D, pad_convolutions, padded
from alexnet_tf.perf.speed import MODELS


def _conv_shapes(model, x):
    """(filter shape, output shape) of every Conv2D op TensorFlow runs for the model's forward pass."""
    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    return [(tuple(op.inputs[1].shape), tuple(op.outputs[0].shape)) for op in graph.get_operations() if op.type == "Conv2D"]


def test_padded_rounds_up_to_the_block():
    assert [padded(c, 16) for c in (1, 16, 18, 48, 72, 96)] == [16, 16, 32, 48, 80, 96]


def test_padded_default_model_has_the_same_parameters_and_outputs():
    """The default model (18, 48, 72, 72, 48 kernels per tower) with its convolutions run on multiples of
    16 channels: the same parameter count, the same weights and the same logits (zero channels add
    nothing), while the Conv2D ops TensorFlow runs do have the padded shapes."""
    keras.utils.set_random_seed(0)
    model = alexnet_tf.build_model(alexnet_tf.load_config(*MODELS["default"]))
    copy = pad_convolutions(model)
    assert copy.count_params() == model.count_params() == 1_778_642
    assert all(isinstance(copy.get_layer(f"conv{i}_{t}"), BlockPaddedConv2D) for i in range(1, 6) for t in (0, 1))
    for a, b in zip(model.weights, copy.weights):
        assert a.shape == b.shape and np.array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(0).normal(0, 1, (4, 28, 28, 1)).astype("float32")
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(copy(x, training=False).numpy(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    # per tower: conv1 1 -> 18 (image channels stay 1), conv2 18 -> 48, conv3 96 -> 72, conv4 72 -> 72, conv5 72 -> 48
    plain = [(k[2], k[3]) for k, _ in _conv_shapes(model, x)]
    assert plain == [(1, 18)] * 2 + [(18, 48)] * 2 + [(96, 72)] * 2 + [(72, 72)] * 2 + [(72, 48)] * 2
    shapes = _conv_shapes(copy, x)
    assert [(k[2], k[3]) for k, _ in shapes] == [(1, 32)] * 2 + [(32, 48)] * 2 + [(96, 80)] * 2 + [(80, 80)] * 2 + [(80, 48)] * 2
    assert [out[-1] for _, out in shapes] == [k[3] for k, _ in shapes]


def test_padded_layer_gradients_equal_the_plain_layer_and_keep_padding_out():
    """One tanh conv layer with a bias: the padded version's weight gradients have the weights' shapes and
    equal the plain layer's, so training updates the same numbers."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0, 1, (2, 7, 7, 20)).astype("float32"))
    plain = keras.layers.Conv2D(18, 3, padding="same", activation="tanh", bias_initializer="random_normal")
    plain.build(x.shape)
    padded_layer = BlockPaddedConv2D.from_config({**plain.get_config(), "block": 16})
    padded_layer.build(x.shape)
    padded_layer.set_weights(plain.get_weights())
    grads = []
    for layer in (plain, padded_layer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x)))
        grads.append(tape.gradient(loss, layer.trainable_weights))
    np.testing.assert_allclose(padded_layer(x).numpy(), plain(x).numpy(), rtol=1e-6, atol=1e-6)
    for g_plain, g_padded in zip(*grads):
        assert g_padded.shape == g_plain.shape
        np.testing.assert_allclose(g_padded.numpy(), g_plain.numpy(), rtol=1e-5, atol=1e-5)


def test_padded_layer_adds_no_pad_where_the_channels_fill_their_blocks():
    """48 -> 128 kernels (the paper model's conv2 per tower): no Pad op, the same convolution shapes."""
    layer = BlockPaddedConv2D(128, 5, padding="same", activation="relu")
    ops_run = tf.function(layer).get_concrete_function(tf.TensorSpec((1, 27, 27, 48), tf.float32)).graph.get_operations()
    assert not [op for op in ops_run if op.type.startswith("Pad")]
    assert [tuple(op.inputs[1].shape) for op in ops_run if op.type == "Conv2D"] == [(5, 5, 48, 128)]


def test_variant_list_starts_with_the_baseline_and_names_known_variants():
    assert where_time_goes._variant_list("shipped,pad16,bf16") == ["shipped", "pad16", "bf16"]
    for bad in ("pad16,shipped", "shipped,pad17"):
        with pytest.raises(argparse.ArgumentTypeError, match="starting with 'shipped'"):
            where_time_goes._variant_list(bad)
    # the oneDNN start-up settings run in a fresh process; every other variant changes the model in-process
    assert {n for n, (_, _, env) in where_time_goes.VARIANTS.items() if env} == {
        "onednn-off", "system-allocator", "fpmath-bf16"}


def test_table_ratios_are_against_the_first_variant():
    from alexnet_tf.perf import spread
    spreads = {"shipped": spread.spread([1000.0, 800.0]), "pad16": spread.spread([1200.0, 1100.0]),
               "bf16": spread.spread([500.0])}
    lines = where_time_goes.table(spreads, batch=128)
    assert lines[2] == "| shipped: LRN by model.lrn_kernel auto (fused op if built); float32 | 128.0 | 1000.0 | x1.00 | 22 % (2) |"
    assert lines[3].endswith("| 106.7 | 1200.0 | x1.20 | 9 % (2) |")
    assert lines[4].endswith("| 256.0 | 500.0 | x0.50 | 0 % (1) |")
    # (1000 - 800) / 900 = 22 % is noisy, (1200 - 1100) / 1150 = 9 % is not, one round has no spread
    assert where_time_goes.noisy(spreads) == [
        "noisy: shipped rounds spread 22 % (more than 10 %): the machine was not quiet while they were timed; "
        "rerun before quoting them"]


@pytest.mark.slow
def test_measure_runs_in_process_and_fresh_process_variants(capsys):
    """A tiny run: the in-process padded variant and a fresh-process oneDNN setting both give rates."""
    spreads = where_time_goes.measure("tiny", steps=1, repeats=1, names=["shipped", "pad16", "system-allocator"],
                                      log=lambda *a: None)
    assert list(spreads) == ["shipped", "pad16", "system-allocator"]
    assert all(s["best"] > 0 and len(s["samples"]) == 1 for s in spreads.values())
