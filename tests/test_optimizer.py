"""The paper's update rule (§5), LARS and the warm-up against numpy, on a model whose gradients numpy computes too."""

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


# === LARS and the warm-up, each against numpy ===

def mse_gradients(W, b, x, t):
    y = x @ W + b
    dy = 2 * (y - t) / y.size
    return x.T @ dy, dy.sum(0)


def lars_numpy(W, b, x, t, steps, lr, trust, momentum=0.9, wd=0.05, control=None):
    """You et al.'s Algorithm 1 on the kernel (lambda = trust |W| / (|gW| + wd |W|) from the raw gradient,
    v <- m v - lr lambda (gW + wd W), W <- W + v); the plain paper rule on the undecayed bias.
    control: a deliberately wrong rule, "decayed_norm" (lambda from |gW + wd W|) or "bias_too" (LARS
    on the bias as well)."""
    W, b = W.astype(np.float64), b.astype(np.float64)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for _ in range(steps):
        gW, gb = mse_gradients(W, b, x, t)
        g_norm = np.linalg.norm(gW + wd * W) if control == "decayed_norm" else np.linalg.norm(gW)
        lam = trust * np.linalg.norm(W) / (g_norm + wd * np.linalg.norm(W))
        lam_b = trust * np.linalg.norm(b) / np.linalg.norm(gb) if control == "bias_too" else 1.0
        vW = momentum * vW - lr * lam * (gW + wd * W)
        vb = momentum * vb - lr * lam_b * gb
        W, b = W + vW, b + vb
    return W, b


def trained(optimizer, steps, seed=0):
    """A 4 -> 3 dense layer (non-zero bias) trained `steps` full-batch steps by `optimizer`; its start and
    end weights and the data."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 4)).astype("float32")
    t = rng.normal(size=(8, 3)).astype("float32")
    model = linear_model(optimizer)
    layer = model.get_layer("dense")
    layer.bias.assign(rng.normal(size=3).astype("float32"))
    start = [w.numpy() for w in layer.weights]
    for _ in range(steps):
        model.train_on_batch(x, t)
    return start, [w.numpy() for w in layer.weights], x, t


def test_lars_follows_algorithm_1_on_kernels_and_the_paper_rule_on_biases():
    """Six steps of LARS against numpy's Algorithm 1; numpy's two wrong rules (lambda from the decayed
    gradient's norm, LARS on the bias too) are both visibly off, so the comparison can tell them apart.
    A large decay and trust make each difference stand far above float32 noise."""
    from alexnet_tf.optim import LARS
    (W0, b0), (W, b), x, t = trained(LARS(learning_rate=2.0, trust=0.1, momentum=0.9, paper_weight_decay=0.05), 6)
    expected = lars_numpy(W0, b0, x, t, 6, lr=2.0, trust=0.1)
    np.testing.assert_allclose(W, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected[1], rtol=1e-5, atol=1e-6)
    for control in ("decayed_norm", "bias_too"):
        wrong = lars_numpy(W0, b0, x, t, 6, lr=2.0, trust=0.1, control=control)
        assert max(np.abs(W - wrong[0]).max(), np.abs(b - wrong[1]).max()) > 1e-3, control


def paper_rule_with_warmup(W, b, x, t, steps, lr, warmup_steps, start, momentum=0.9, wd=0.05, late=False):
    """The paper's rule with the step at iteration i using lr (start + (1 - start) min(i / warmup_steps, 1));
    late=True: the wrong ramp that counts the step being taken ((i + 1) / warmup_steps)."""
    W, b = W.astype(np.float64), b.astype(np.float64)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for i in range(steps):
        rate = lr * (start + (1 - start) * min((i + late) / warmup_steps, 1.0))
        gW, gb = mse_gradients(W, b, x, t)
        vW, vb = momentum * vW - rate * (gW + wd * W), momentum * vb - rate * gb
        W, b = W + vW, b + vb
    return W, b


def test_the_warmup_ramps_linearly_per_step_from_its_start_to_the_learning_rate():
    """Four warm-up steps from a quarter of the rate, then two at the full rate, against numpy; the ramp
    shifted by one step (a rate of 0.25 + 0.75 (i + 1)/4) is visibly off."""
    opt = PaperSGD(learning_rate=0.2, momentum=0.9, paper_weight_decay=0.05, warmup_steps=4, warmup_start=0.25)
    (W0, b0), (W, b), x, t = trained(opt, 6)
    expected = paper_rule_with_warmup(W0, b0, x, t, 6, 0.2, 4, 0.25)
    np.testing.assert_allclose(W, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected[1], rtol=1e-5, atol=1e-6)
    late = paper_rule_with_warmup(W0, b0, x, t, 6, 0.2, 4, 0.25, late=True)
    assert np.abs(W - late[0]).max() > 1e-3
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.2)  # the variable stays the rate after the ramp


def test_lars_and_warmup_config_round_trip():
    from alexnet_tf.optim import LARS
    opt = LARS(learning_rate=0.32, trust=0.002, momentum=0.8, paper_weight_decay=1e-3, warmup_steps=50, warmup_start=0.25)
    clone = LARS.from_config(opt.get_config())
    assert (clone.trust, clone.momentum, clone.paper_weight_decay, clone.warmup_steps, clone.warmup_start) == \
        (0.002, 0.8, 1e-3, 50, 0.25)
