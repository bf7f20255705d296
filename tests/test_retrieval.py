"""Prediction, figures and retrieval: against brute-force numpy references and on a tiny trained run."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import retrieval
from alexnet_tf.__main__ import main


def png_size(path):
    with Image.open(path) as image:
        image.verify()  # a valid PNG
    with Image.open(path) as image:
        return image.format, image.size


# === Euclidean and Hamming search against brute force ===

def test_nearest_equals_brute_force_numpy():
    rng = np.random.default_rng(0)
    database, queries = rng.normal(size=(300, 24)), rng.normal(size=(17, 24))
    idx, dist = retrieval.nearest(queries, database, k=7, chunk=5)  # several chunks
    brute = np.linalg.norm(queries[:, None, :] - database[None, :, :], axis=-1)
    expected = np.argsort(brute, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(brute, expected, 1), rtol=1e-4)


def test_hamming_ranking_equals_numpy_with_ties_broken_by_index():
    rng = np.random.default_rng(1)
    bits = 70  # two 64-bit words: the word boundary is crossed
    database, queries = rng.random((400, bits)) < 0.5, rng.random((9, bits)) < 0.5
    database[100:110] = database[5]  # exact duplicates tie with each other
    queries[0] = database[5]
    idx, dist = retrieval.hamming_nearest(retrieval.pack_bits(queries), retrieval.pack_bits(database), k=25, chunk=4)
    brute = (queries[:, None, :] != database[None, :, :]).sum(-1)
    expected = np.stack([np.lexsort((np.arange(len(database)), row))[:25] for row in brute])
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_array_equal(dist, np.take_along_axis(brute, expected, 1))
    assert list(idx[0, :11]) == [5] + list(range(100, 110)) and (dist[0, :11] == 0).all()


def test_precision_at_k_by_hand():
    retrieved = np.array([[1, 1, 2, 0], [3, 3, 3, 3]])
    assert retrieval.precision_at_k(retrieved, np.array([1, 0])) == pytest.approx((2 / 4 + 0) / 2)


@pytest.mark.slow
def test_autoencoder_codes_are_binary_and_retrieve_clusters():
    # four well-separated clusters in 32-d: 8-bit codes must keep same-cluster points together
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (4, 32))
    labels = np.repeat(np.arange(4), 150)
    x = np.maximum(centres[labels] + rng.normal(0, 1, (600, 32)), 0).astype(np.float32)  # ReLU-like
    encoder = retrieval.train_autoencoder(x, bits=8, epochs=15, batch_size=64, hidden=32)
    codes = retrieval.binary_codes(encoder, x)
    assert codes.dtype == bool and codes.shape == (600, 8)
    idx, _ = retrieval.hamming_nearest(retrieval.pack_bits(codes[::10]), retrieval.pack_bits(codes), k=10)
    assert retrieval.precision_at_k(labels[idx], labels[::10]) > 0.9
    # the noise made the code units saturate: most pre-activations are far from the threshold
    assert np.mean(np.abs(encoder.predict(x, verbose=0)) > 2) > 0.8


# === On the tiny trained run ===

def fc7_reference(run_dir, images):
    """The last hidden layer computed independently: (x - mean) * scale through the saved model."""
    import alexnet_tf  # noqa: F401
    from alexnet_tf.config import load_config
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    layer = keras.Model(model.input, model.get_layer("concat8").output)  # fc7's two halves, after ReLU
    mean = np.load(os.path.join(run_dir, "mean.npy"))
    scale = load_config(os.path.join(run_dir, "config.yaml")).data.scale
    return layer.predict((images.astype(np.float64) - mean) * scale, verbose=0)


def test_cached_features_and_neighbours_panel(tiny_run, tmp_path, monkeypatch):
    from alexnet_tf.data import synthetic
    from alexnet_tf.serving import Classifier
    from alexnet_tf.run_dir import load_run
    run = load_run(tiny_run)
    classifier = Classifier.from_run(run)
    features, labels, _ = retrieval.cached_features(run, classifier, "train", batch_size=20, progress=False)
    x, y = synthetic.load(28, 3, 10, 64, 0)["train"]
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(features, fc7_reference(tiny_run, x), rtol=1e-4, atol=1e-5)
    assert features.shape == (64, 32)

    # the second call reads the cache
    def no_extraction(*args, **kwargs):
        raise AssertionError("features were recomputed although cached")
    monkeypatch.setattr(retrieval.features, "extract_features", no_extraction)
    again, _, _ = retrieval.cached_features(run, classifier, "train", progress=False)
    np.testing.assert_array_equal(again, features)
    monkeypatch.undo()

    out = tmp_path / "nn.png"
    assert main(["neighbours", "--run-dir", tiny_run, "--queries", "3", "--k", "4", "--out", str(out)]) == 0
    # (1 query + 4 neighbours) x 3 rows of 1.3 in at 100 dpi, under each row 0.22 in for its labels, 0.55 in for
    # the title
    assert png_size(out) == ("PNG", (5 * 130, 55 + 3 * (130 + 22)))


def test_predict_on_generated_images(tiny_run, tmp_path, capsys):
    folder = tmp_path / "class_3"  # named after a class: the true label comes from the folder
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for _ in range(2)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(str(folder / f"img{i}.png"))
        Image.fromarray(a).save(paths[-1])
    big = str(tmp_path / "big.jpg")
    Image.fromarray(rng.integers(0, 256, (90, 70), dtype=np.uint8)).save(big)  # grey, another size
    out = tmp_path / "pred.png"
    assert main(["predict", "--run-dir", tiny_run, *paths, big, "--out", str(out), "--cols", "2"]) == 0
    text = capsys.readouterr().out
    assert "img0.png  (true: class_3)" in text and "big.jpg\n" in text

    from alexnet_tf.serving import Classifier
    from alexnet_tf.predict import predict_files
    from alexnet_tf.run_dir import load_run
    results = predict_files(Classifier.from_run(load_run(tiny_run)), paths)
    model = keras.saving.load_model(os.path.join(tiny_run, "model.keras"), compile=False)
    logits = model.predict((np.stack(arrays) - np.load(os.path.join(tiny_run, "mean.npy"))) * 0.02, verbose=0)
    probs = tf.nn.softmax(logits).numpy()
    for r, p in zip(results, probs):
        np.testing.assert_array_equal(r.class_ids, np.argsort(-p, kind="stable")[:5])
        np.testing.assert_allclose(r.probabilities, np.sort(p)[::-1][:5], rtol=1e-4)
        assert r.true_label == "class_3" and r.class_names == [f"class_{i}" for i in r.class_ids]
    assert png_size(out) == ("PNG", (2 * 280, 2 * 340))  # 2 columns x 2 rows of 2.8 x 3.4 in at 100 dpi

    assert main(["predict", "--run-dir", tiny_run, paths[0], "--label", "no such class"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: label 'no such class' is neither a class name nor a class id")


def test_predict_names_a_missing_or_unreadable_file_in_one_line(tiny_run, tmp_path, capsys):
    """A missing path, a directory and a text file named .jpg (beside a good image): exit 1, one line
    naming the file and what was expected, no traceback."""
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(good)
    (tmp_path / "notes.jpg").write_text("not an image")
    cases = {
        str(tmp_path / "nope.png"): f"error: cannot read {tmp_path / 'nope.png'} (No such file or directory); "
                                    "expected an image file (JPEG, PNG, GIF, BMP or WebP)",
        str(tmp_path): f"error: cannot read {tmp_path} (a directory); expected an image file "
                       "(JPEG, PNG, GIF, BMP or WebP)",
        str(tmp_path / "notes.jpg"): "error: notes.jpg (12 bytes) is not a JPEG, PNG, GIF, BMP or WebP image",
    }
    for path, line in cases.items():
        capsys.readouterr()
        assert main(["predict", "--run-dir", tiny_run, str(good), path]) == 1, path
        assert capsys.readouterr().err.strip().splitlines() == [line]


def test_curves_of_a_missing_run_directory_says_so(tiny_run, tmp_path, capsys):
    assert main(["curves", str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'nope'} not found; expected a run directory "
                                               "(train.py writes it)")
    assert main(["curves", tiny_run, "--out", str(tmp_path / "c.png"), "--curve", "train:no_such_tag"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tiny_run}: no TensorBoard scalar 'no_such_tag' in tb/train; found [")
    assert "'epoch_loss'" in err and "\n" not in err


def test_projector_files(tiny_run, tmp_path):
    log_dir = tmp_path / "projector"
    assert main(["projector", "--run-dir", tiny_run, "--count", "50", "--log-dir", str(log_dir)]) == 0
    lines = (log_dir / "metadata.tsv").read_text().splitlines()
    assert lines[0] == "label\tclass" and len(lines) == 51
    label, name = lines[1].split("\t")
    assert name == f"class_{label}"
    assert png_size(log_dir / "sprite.png") == ("PNG", (8 * 28, 8 * 28))  # ceil(sqrt(50)) = 8 thumbnails a side
    config = (log_dir / "projector_config.pbtxt").read_text()
    assert "sprite.png" in config and "metadata.tsv" in config and "single_image_dim: 28" in config
    # an event file, so that TensorBoard counts the directory as a run (tests/test_browser.py opens it)
    assert [name for name in os.listdir(log_dir) if "tfevents" in name]
    checkpoint = tf.train.latest_checkpoint(str(log_dir))
    vectors = tf.train.load_checkpoint(checkpoint).get_tensor("embedding/.ATTRIBUTES/VARIABLE_VALUE")
    from alexnet_tf.data import synthetic
    x = synthetic.load(28, 3, 10, 64, 0)["train"][0]
    chosen = np.sort(np.random.default_rng(0).choice(64, 50, replace=False))  # the command's subset (seed 0)
    np.testing.assert_allclose(vectors, fc7_reference(tiny_run, x[chosen]), rtol=1e-4, atol=1e-5)


def test_sprite_shrinks_to_the_projector_limit(monkeypatch):
    monkeypatch.setattr(retrieval.projector, "SPRITE_MAX", 40)
    grid, (h, w) = retrieval.sprite(np.full((5, 30, 30, 1), 200, np.uint8))
    assert (h, w) == (13, 13) and grid.shape == (39, 39, 3)  # 3 thumbnails a side, 40 // 3 = 13 px
    assert grid[0, 0, 0] == 200 and grid[-1, -1, 0] == 0  # the 9th cell is empty


def test_queries_limit_every_baseline_to_the_same_queries():
    rng = np.random.default_rng(0)
    train, train_labels = rng.normal(size=(200, 8)).astype("float32"), rng.integers(0, 3, 200)
    val, val_labels = rng.normal(size=(30, 8)).astype("float32"), rng.integers(0, 3, 30)
    pixels = (train[:, :4], val[:, :4])
    rows = retrieval.evaluate_retrieval(train, train_labels, val, val_labels, bits_list=(), ks=(1,), queries=10,
                                        extra={"pixels": pixels}, verbose=False)
    assert [r["method"] for r in rows] == ["euclidean fc7", "pixels"]
    for row, (database, queries) in zip(rows, [(train, val), pixels]):
        # brute force: does the nearest training vector of each of the first 10 queries share its label?
        distances = ((queries[:10, None, :] - database[None]) ** 2).sum(-1)
        assert row["p@1"] == pytest.approx(np.mean(train_labels[distances.argmin(1)] == val_labels[:10]))


def test_codes_command_writes_the_report(tiny_run, capsys):
    capsys.readouterr()
    assert main(["codes", "--run-dir", tiny_run, "--bits", "8", "4", "--k", "1", "5", "--epochs", "2"]) == 0
    # a line per auto-encoder epoch while it trains, for each code length
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  auto-encoder")]
    assert [line.split(", reconstruction")[0] for line in progress] == [
        f"  auto-encoder, {bits} bits: epoch {epoch}/2" for bits in (8, 4) for epoch in (1, 2)]
    with open(os.path.join(tiny_run, "retrieval", "report.json")) as f:
        rows = json.load(f)
    assert [r["method"].split(" (")[0] for r in rows] == [
        "euclidean fc7", "hamming autoencoder", "hamming random hyperplanes", "hamming autoencoder",
        "hamming random hyperplanes"]
    assert rows[1]["bits"] == 8 and rows[1]["bytes_per_image"] == 8 and rows[0]["bytes_per_image"] == 32 * 4
    for r in rows:
        assert 0 <= r["p@1"] <= 1 and r["ms_per_query"] > 0
    encoder = keras.saving.load_model(os.path.join(tiny_run, "retrieval", "encoder_8.keras"))
    assert encoder.output.shape[-1] == 8
