"""The test protocols: 10-crop equals averaging the 10 explicit crops' softmaxes; top-k error by hand."""

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.evaluate import center_probabilities, evaluate, ten_crop_probabilities, top_k_errors
from conftest import tiny_overrides


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


@pytest.mark.slow
def test_ten_crop_is_the_average_of_the_ten_explicit_crops_softmaxes():
    model = alexnet_tf.build_model(alexnet_tf.load_config(None, tiny_overrides(**{"model.dropout": 0.3})))
    x = np.random.default_rng(0).normal(0, 50, (3, 36, 34, 1)).astype(np.float32)
    crops = [x[:, :28, :28], x[:, :28, 6:], x[:, 8:, :28], x[:, 8:, 6:], x[:, 4:32, 3:31]]
    crops += [c[:, :, ::-1] for c in crops]
    expected = np.mean([softmax(model.predict(c, verbose=0).astype(np.float64)) for c in crops], axis=0)
    np.testing.assert_allclose(ten_crop_probabilities(model, x, 28), expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(center_probabilities(model, x, 28), softmax(model.predict(crops[4], verbose=0)),
                               rtol=1e-4, atol=1e-7)
    # through `evaluate` (tf.function, batches): the same numbers as top-k of those probabilities
    labels = np.array([0, 3, 7])
    batches = [(tf.constant(x[:2]), tf.constant(labels[:2])), (tf.constant(x[2:]), tf.constant(labels[2:]))]
    results = evaluate(model, batches, 28, ten_crop=True, progress=False)
    ranked = np.argsort(-expected, axis=1)
    assert results["images"] == 3
    assert results["ten_crop"]["top1_error"] == pytest.approx(np.mean(ranked[:, 0] != labels))
    assert results["ten_crop"]["top5_error"] == pytest.approx(np.mean([l not in r[:5] for l, r in zip(labels, ranked)]))


def test_top_k_errors_by_hand():
    p = np.array([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0, 0.0],    # label 1: top-1 right
                  [0.3, 0.2, 0.1, 0.15, 0.05, 0.1, 0.1],    # label 2: 4th-5th place (ties at 0.1 kept in order)
                  [0.3, 0.25, 0.2, 0.1, 0.08, 0.05, 0.02]]) # label 6: last, wrong for both
    errors = top_k_errors(p, [1, 2, 6], ks=(1, 5))
    assert errors == pytest.approx({1: 2 / 3, 5: 1 / 3})


def test_test_split_of_a_run_without_one_is_a_one_line_error(tiny_run, capsys):
    from alexnet_tf.__main__ import main as cli
    assert cli(["evaluate", "--run-dir", tiny_run, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no separate test split" in err[0] and "data.val_examples = 0" in err[0]
