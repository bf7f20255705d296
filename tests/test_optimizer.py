"""The paper's update rule (§5) against numpy, on a model whose gradients numpy computes too."""

import keras
import numpy as np
import pytest

from alexnet_tf.optim import PaperSGD


def linear_model(optimizer):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def paper_rule_numpy(W, b, x, t, steps, lr=0.1, momentum=0.9, wd=0.0005, decay_biases=False):
    """v <- momentum v - wd lr w - lr dL/dw; w <- w + v, with dL/dw of the mean squared error by hand."""
    W, b = W.astype(np.float64), b.astype(np.float64)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for _ in range(steps):
        y = x @ W + b
        dy = 2 * (y - t) / y.size
        gW, gb = x.T @ dy, dy.sum(0)
        vW = momentum * vW - wd * lr * W - lr * gW
        vb = momentum * vb - (wd * lr * b if decay_biases else 0) - lr * gb
        W, b = W + vW, b + vb
    return W, b, vW, vb


@pytest.mark.parametrize("decay_biases", [False, True])
def test_every_variable_follows_the_paper_rule(decay_biases):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    t = rng.normal(size=(8, 3)).astype("float32")
    # A large decay makes a wrong placement of the decay term visible above float32 noise.
    opt = PaperSGD(learning_rate=0.1, momentum=0.9, paper_weight_decay=0.05, decay_biases=decay_biases)
    model = linear_model(opt)
    model.get_layer("dense").bias.assign(rng.normal(size=3).astype("float32"))
    W0, b0 = (w.numpy() for w in model.get_layer("dense").weights)
    for _ in range(5):
        model.train_on_batch(x, t)
    W, b, vW, vb = paper_rule_numpy(W0, b0, x, t, 5, wd=0.05, decay_biases=decay_biases)
    np.testing.assert_allclose(model.get_layer("dense").kernel.numpy(), W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_layer("dense").bias.numpy(), b, rtol=1e-5, atol=1e-6)
    layer = model.get_layer("dense")
    for var, expected in ((layer.kernel, vW), (layer.bias, vb)):
        momentum = opt.momentums[opt._get_variable_index(var)].numpy()
        np.testing.assert_allclose(momentum, expected, rtol=1e-5, atol=1e-6)


def test_keras_decoupled_weight_decay_is_a_different_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    t = rng.normal(size=(8, 3)).astype("float32")
    model = linear_model(keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.05))
    W0, b0 = (w.numpy() for w in model.get_layer("dense").weights)
    for _ in range(5):
        model.train_on_batch(x, t)
    W, _, _, _ = paper_rule_numpy(W0, b0, x, t, 5, wd=0.05)
    assert np.abs(model.get_layer("dense").kernel.numpy() - W).max() > 1e-3


def test_config_round_trip():
    opt = PaperSGD(learning_rate=0.02, momentum=0.8, paper_weight_decay=1e-3, decay_biases=True)
    clone = PaperSGD.from_config(opt.get_config())
    assert (clone.momentum, clone.paper_weight_decay, clone.decay_biases) == (0.8, 1e-3, True)
    assert float(clone.learning_rate.numpy()) == pytest.approx(0.02)
