"""The LRN layer against a numpy implementation of the paper's formula (§3.3)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf import LocalResponseNormalization


def lrn_numpy(a, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta, written as in the paper."""
    a = a.astype(np.float64)
    N = a.shape[-1]
    b = np.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * (a[..., lo:hi + 1] ** 2).sum(-1)) ** beta
    return b


def lrn_grad_numpy(a, g, n=5, k=2.0, alpha=1e-4, beta=0.75):
    """d(sum g*b)/da by hand: g_j D_j^-beta - 2 alpha beta a_j sum_{i: j in window(i)} g_i a_i D_i^(-beta-1)."""
    a, g = a.astype(np.float64), g.astype(np.float64)
    N = a.shape[-1]
    D = np.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        D[..., i] = k + alpha * (a[..., lo:hi + 1] ** 2).sum(-1)
    t = g * a * D ** (-beta - 1)
    grad = g * D ** (-beta)
    for j in range(N):
        lo, hi = max(0, j - n // 2), min(N - 1, j + n // 2)  # the windows that contain j
        grad[..., j] -= 2 * alpha * beta * a[..., j] * t[..., lo:hi + 1].sum(-1)
    return grad


def activations(shape=(2, 3, 4, 12), seed=0):
    # Post-ReLU-like magnitudes large enough that the normaliser is far from k (alpha*sum ~ 1).
    return np.abs(np.random.default_rng(seed).normal(0, 40, shape)).astype("float32")


def test_paper_formula():
    a = activations()
    np.testing.assert_allclose(LocalResponseNormalization()(a), lrn_numpy(a), rtol=1e-5)


def test_matches_tensorflow_op_with_paper_arguments():
    # The paper's constants are TF's op with depth_radius=2, bias=2, alpha=1e-4 (not divided by n).
    a = activations()
    expected = tf.nn.local_response_normalization(a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    np.testing.assert_allclose(LocalResponseNormalization()(a), expected, rtol=1e-5)


def test_caffe_convention_divides_alpha_by_n_and_uses_k_1():
    a = activations()
    layer = LocalResponseNormalization(convention="caffe")
    assert layer.k == 1.0
    np.testing.assert_allclose(layer(a), lrn_numpy(a, k=1.0, alpha=1e-4 / 5), rtol=1e-5)
    # and it is really different from the paper's formula on the same input
    assert not np.allclose(layer(a), lrn_numpy(a), rtol=1e-3)


def test_general_beta_and_window():
    a = activations()
    layer = LocalResponseNormalization(size=3, k=1.5, alpha=3e-4, beta=0.6)
    np.testing.assert_allclose(layer(a), lrn_numpy(a, n=3, k=1.5, alpha=3e-4, beta=0.6), rtol=1e-5)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_gradient(beta):
    a = activations()
    g = np.random.default_rng(1).normal(size=a.shape).astype("float32")
    layer = LocalResponseNormalization(beta=beta)
    x = tf.constant(a)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    grad = tape.gradient(y, x, output_gradients=tf.constant(g))
    np.testing.assert_allclose(grad, lrn_grad_numpy(a, g, beta=beta), rtol=1e-4, atol=1e-7)


def test_mixed_bfloat16_output_and_gradient():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = LocalResponseNormalization()
    a = activations()
    g = np.random.default_rng(1).normal(size=a.shape).astype("float32")
    x = tf.constant(a)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    assert y.dtype == tf.bfloat16
    grad = tape.gradient(y, x, output_gradients=tf.cast(g, tf.bfloat16))
    # bfloat16 keeps 8 significant bits: relative error <= 2^-8 on the input cast and the output.
    np.testing.assert_allclose(tf.cast(y, tf.float32), lrn_numpy(a), rtol=2 ** -7)
    np.testing.assert_allclose(grad, lrn_grad_numpy(a, g), rtol=2 ** -6, atol=1e-3)


def test_jit_compile():
    a = activations()
    layer = LocalResponseNormalization()
    np.testing.assert_allclose(tf.function(layer, jit_compile=True)(a), lrn_numpy(a), rtol=1e-5)


def test_jit_compile_under_mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    a = activations()
    y = tf.function(LocalResponseNormalization(), jit_compile=True)(a)
    np.testing.assert_allclose(tf.cast(y, tf.float32), lrn_numpy(a), rtol=2 ** -7)


def test_config_round_trip():
    layer = LocalResponseNormalization(size=7, alpha=2e-4, beta=0.5, convention="caffe", name="lrn")
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.size, clone.k, clone.alpha, clone.beta, clone.convention, clone.name) == (7, 1.0, 2e-4, 0.5, "caffe", "lrn")


def test_keras_save_and_load(tmp_path):
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, LocalResponseNormalization(convention="caffe", name="lrn")(inputs))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    a = activations((2, 4, 4, 8))
    assert isinstance(loaded.get_layer("lrn"), LocalResponseNormalization)
    np.testing.assert_array_equal(loaded(a), model(a))


def test_even_window_is_rejected():
    with pytest.raises(ValueError, match="size=4"):
        LocalResponseNormalization(size=4)
