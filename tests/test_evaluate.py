"""The test protocols: 10-crop equals averaging the 10 explicit crops' softmaxes; top-k error by hand."""

import os

import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.evaluate import center_probabilities, evaluate, ten_crop_probabilities, top_k_errors
from conftest import ROOT, tiny_overrides


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


def test_top_k_tie_rules_by_hand():
    """Ties, counted by hand. The in-graph rule of the training loop and the compiled metric
    (optim.top_k_misses, tf.math.in_top_k) counts every class tied with the k-th as within the top k;
    `top_k_errors` ranks by a stable sort, so a tie goes to the lower class index."""
    from alexnet_tf.optim import top_k_misses
    p = np.array([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0, 0.0],     # label 1: first, no tie
                  [0.2, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0],       # label 4: five-way tie at the top, last of them
                  [0.0] * 7,                                 # label 6: everything tied, last index
                  [0.5, 0.3, 0.3, 0.1, 0.05, 0.05, 0.0]],    # label 2: tied with the second, behind it
                 np.float32)
    labels = np.array([1, 4, 6, 2])
    # rows missed, per k:          in-graph (ties within)   stable ranking
    by_hand = {1: ([0, 0, 0, 1], [0, 1, 1, 1]),
               2: ([0, 0, 0, 0], [0, 1, 1, 1]),
               5: ([0, 0, 0, 0], [0, 0, 1, 0])}
    ranked = top_k_errors(p, labels, ks=tuple(by_hand))
    for k, (in_graph, stable) in by_hand.items():
        np.testing.assert_array_equal(top_k_misses(labels, p, k).numpy(), in_graph, err_msg=f"k={k}")
        assert ranked[k] == pytest.approx(np.mean(stable)), k


def test_test_split_of_a_run_without_one_is_a_one_line_error(tiny_run, capsys):
    from alexnet_tf.__main__ import main as cli
    assert cli(["evaluate", "--run-dir", tiny_run, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no separate test split" in err[0] and "data.val_examples = 0" in err[0]


def test_ten_crop_on_images_of_the_model_size_is_refused_alike_by_evaluate_and_predict(tiny_run, capsys):
    """tiny_run's 28x28 images are the model's 28x28 input, as the default run's: both commands refuse
    --ten-crop with the same one line, exit 2."""
    from alexnet_tf.__main__ import main as cli
    expected = ("config error: --ten-crop: this run's model takes 28x28 crops of 28x28 images, so the ten patches "
                "would all be the whole image or its mirror image; expected a run whose images are larger than "
                "model.image_size (data.upscale > model.image_size, or a file source with data.resize > "
                "model.image_size)")
    for argv in (["evaluate", "--run-dir", tiny_run, "--ten-crop"],
                 ["predict", "--run-dir", tiny_run, "--ten-crop", "--val", "2"]):
        capsys.readouterr()
        assert cli(argv) == 2, argv
        assert capsys.readouterr().err.splitlines() == [expected], argv


@pytest.mark.slow
def test_ten_crop_of_larger_images_is_accepted_alike_by_evaluate_and_predict(tmp_path, capsys):
    """A run trained on 28x28 crops of images upscaled to 32x32: both commands take --ten-crop."""
    import json

    from alexnet_tf.__main__ import main as cli
    from alexnet_tf.training import train
    run_dir = str(tmp_path / "run")
    train(alexnet_tf.load_config(None, tiny_overrides(**{"data.upscale": 32})), run_dir, verbose=0)
    assert cli(["evaluate", "--run-dir", run_dir, "--ten-crop"]) == 0
    results = json.loads(open(os.path.join(run_dir, "evaluation.json")).read())
    assert results["images"] == 64 and set(results) >= {"center", "ten_crop"}
    assert cli(["predict", "--run-dir", run_dir, "--ten-crop", "--val", "2"]) == 0
    assert "class_" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_sees_what_the_saved_model_serves_at_the_paper_geometry(tmp_path):
    """One evaluation transform: a 300x400 JPEG and a 400x300 PNG with an alpha gradient in a folder
    source, through `evaluate`'s pipeline (centre crop and 10 patches) and through the exported
    SavedModel's serving_default and ten_crop signatures: the same probabilities."""
    import io

    from PIL import Image

    from alexnet_tf import serving
    from alexnet_tf.data import eval_images
    from alexnet_tf.model import build_model
    from fake_images import pixels

    root = tmp_path / "images"
    photo = io.BytesIO()
    Image.fromarray(pixels(300, 400, seed=1)).save(photo, "JPEG", quality=90)
    rgba = np.dstack([pixels(400, 300, seed=2), np.linspace(0, 255, 300)[None, :].repeat(400, 0).astype(np.uint8)])
    alpha = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(alpha, "PNG")
    blobs = {"a": photo.getvalue(), "b": alpha.getvalue()}  # one image per class: the label names the file
    for split in ("train", "val"):
        for cls, blob in blobs.items():
            os.makedirs(root / split / cls, exist_ok=True)
            (root / split / cls / ("x.jpg" if cls == "a" else "x.png")).write_bytes(blob)
    config = alexnet_tf.load_config(os.path.join(ROOT, "configs", "alexnet_imagenet.yaml"), [
        "data.source=folder", f"data.path={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=2",
        "model.num_classes=10", "model.width=0.125", "model.fc_units=64", "model.weight_init=he_normal",
        "model.hidden_bias=0.0", "data.scale=0.00392156862745098"])  # 1/255: logits of a size a softmax resolves
    assert (config.model.image_size, config.data.resize, config.model.geometry) == (224, 256, "imagenet")
    model = build_model(config)
    mean = np.random.default_rng(3).uniform(90, 150, (256, 256, 3)).astype(np.float32)
    class_names = [f"class{i}" for i in range(10)]  # classes.json of a folder run: its folder names first
    class_names[:2] = ["a", "b"]

    batches, size = eval_images(config, mean, class_names, "val")
    images, labels = next(iter(batches))
    assert size == 2 and images.shape == (2, 256, 256, 3)
    center = center_probabilities(model, images, 224).numpy()
    ten = ten_crop_probabilities(model, images, 224).numpy()

    path = serving.save(serving.Classifier.from_config(model, config, mean, class_names), str(tmp_path / "export"))
    loaded = tf.saved_model.load(path)
    order = [list(blobs).index(class_names[int(y)]) for y in labels]  # the files in evaluate's order
    request = tf.constant([list(blobs.values())[i] for i in order])
    for probabilities, signature in ((center, "serving_default"), (ten, "ten_crop")):
        served = loaded.signatures[signature](image_bytes=request)
        ids = np.argsort(-probabilities, axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(served["class_ids"].numpy(), ids)
        np.testing.assert_allclose(served["probabilities"].numpy(), np.take_along_axis(probabilities, ids, 1),
                                   rtol=1e-5, atol=1e-6)
    assert np.abs(center[0] - center[1]).max() > 1e-3 and np.abs(center - ten).max() > 1e-4  # not constants
