"""Data sources and preprocessing: known dataset properties, numpy references, eager and in tf.data."""

import gzip
import re

import numpy as np
import pytest
import tensorflow as tf

from alexnet_tf.data import fashion_mnist, preprocess


def test_fashion_mnist_known_properties():
    data = fashion_mnist.load()
    (x, y), (xv, yv) = data["train"], data["val"]
    assert x.shape == (60000, 28, 28, 1) and xv.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    np.testing.assert_array_equal(np.bincount(y), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(yv), [1000] * 10)
    assert x.max() == 255 and x.min() == 0
    # The mean training pixel of Fashion-MNIST is 0.2860 on the [0, 1] scale (widely quoted constant).
    assert abs(x.mean() / 255 - 0.2860) < 5e-4


def test_idx_reader_against_a_hand_made_file(tmp_path):
    payload = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in payload.shape)
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + payload.tobytes())
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(path)), payload)


def _damaged_copies(tmp_path):
    """Copies of the real Fashion-MNIST files, each with one file damaged as disks and downloads damage
    them: {case: (directory, the damaged file)}."""
    import shutil
    real = fashion_mnist.find_dir()
    cases = {}
    for case, name in (("bit flip", "train-images-idx3-ubyte.gz"), ("truncated gzip", "t10k-images-idx3-ubyte.gz"),
                       ("1,000 labels short", "train-labels-idx1-ubyte.gz"), ("image file short", "t10k-images-idx3-ubyte.gz")):
        d = tmp_path / case.replace(" ", "_").replace(",", "")
        shutil.copytree(real, d)
        path = d / name
        blob = bytearray(path.read_bytes())
        if case == "bit flip":
            blob[len(blob) // 2] ^= 0x10
            path.write_bytes(bytes(blob))
        elif case == "truncated gzip":
            path.write_bytes(bytes(blob[: len(blob) // 2]))
        else:  # a valid gzip holding a short IDX file
            raw = gzip.decompress(bytes(blob))
            if case == "1,000 labels short":  # a consistent header with 59,000 labels
                raw = raw[:4] + (59_000).to_bytes(4, "big") + raw[8:-1000]
            else:  # the header still says 10,000 images, the data stop 100 bytes early
                raw = raw[:-100]
            path.write_bytes(gzip.compress(raw))
        cases[case] = (d, path)
    return cases


def test_damaged_fashion_mnist_files_are_one_line_naming_the_file(tmp_path, capsys):
    """A flipped bit in a .gz, a .gz cut in half, a label file 1,000 labels short, an image file short:
    train.py exits 1 with one line naming the file and what is wrong (was: BadGzipFile, EOFError and
    'cannot reshape' tracebacks)."""
    from alexnet_tf import train_command
    from conftest import run_main
    expected = {"bit flip": "damaged gzip file", "truncated gzip": "damaged gzip file (EOFError",
                "1,000 labels short": "59000 labels of at most 9, expected 60000 labels in 0..9",
                "image file short": "7839900 bytes after the header, expected 7840000 for shape (10000, 28, 28)"}
    for case, (d, path) in _damaged_copies(tmp_path).items():
        status, _, err = run_main(capsys, train_command.main, ["--run-dir", tmp_path / "run", "--set", f"data.path={d}"])
        lines = err.strip().splitlines()
        assert status == 1 and len(lines) == 1, (case, err[-2000:])
        assert lines[0].startswith(f"{path}: ") and expected[case] in lines[0], (case, lines[0])
        assert "reinstall it" in lines[0]


def test_missing_dataset_names_where_it_looked(tmp_path):
    with pytest.raises(fashion_mnist.DatasetNotFound) as err:
        fashion_mnist.load(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path) in message and "apt-get install dataset-fashion-mnist" in message and "\n" not in message


def images(shape=(4, 6, 7, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def in_tf_data(fn, *arrays):
    """Apply fn inside a tf.data pipeline (graph mode), as training does."""
    ds = tf.data.Dataset.from_tensors(arrays).map(fn)
    return next(iter(ds))


def test_mean_image_and_channel_mean():
    x = images((10, 5, 5, 3))
    np.testing.assert_allclose(preprocess.mean_of(x, "image"), x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(preprocess.mean_of(x, "channel")[2, 3], x.reshape(-1, 3).mean(0), rtol=1e-6)
    mean = preprocess.mean_of(x, "image")
    expected = x.astype(np.float32) - mean
    np.testing.assert_allclose(preprocess.subtract_mean(x, mean), expected)
    np.testing.assert_allclose(in_tf_data(lambda a: preprocess.subtract_mean(a, mean), x), expected)


def test_random_flip_mirrors_exactly_the_chosen_images():
    x = images()
    seed = tf.constant([3, 4], tf.int64)
    for out in (preprocess.random_flip(x, seed), in_tf_data(lambda a, s: preprocess.random_flip(a, s), x, seed)):
        out = np.asarray(out)
        flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x)]
        kept = [np.array_equal(o, xi) for o, xi in zip(out, x)]
        assert all(f != k for f, k in zip(flipped, kept))  # each image is either mirrored or untouched
    # the choice is a fair coin: over many images about half are mirrored
    many = images((2000, 2, 3, 1))
    out = np.asarray(preprocess.random_flip(many, seed))
    rate = np.mean([not np.array_equal(o, m) for o, m in zip(out, many)])
    assert 0.45 < rate < 0.55


def test_random_crop_is_a_window_of_the_input():
    x = images((64, 9, 9, 2))
    seed = tf.constant([1, 2], tf.int64)
    for out in (preprocess.random_crop(x, 5, seed), in_tf_data(lambda a, s: preprocess.random_crop(a, 5, s), x, seed)):
        out = np.asarray(out)
        assert out.shape == (64, 5, 5, 2)
        offsets = set()
        for o, xi in zip(out, x):
            found = [(i, j) for i in range(5) for j in range(5) if np.array_equal(xi[i:i + 5, j:j + 5], o)]
            assert found, "crop is not a window of its image"
            offsets.add(found[0])
        assert len(offsets) > 10  # positions vary across the batch
    # deterministic for a given seed
    np.testing.assert_array_equal(preprocess.random_crop(x, 5, seed), preprocess.random_crop(x, 5, seed))


def test_center_crop_and_pad():
    x = images((2, 8, 9, 1))
    np.testing.assert_array_equal(preprocess.center_crop(x, 4), x[:, 2:6, 2:6])
    np.testing.assert_array_equal(in_tf_data(lambda a: preprocess.center_crop(a, 4), x), x[:, 2:6, 2:6])
    padded = np.asarray(preprocess.pad(x.astype(np.float32), 2))
    np.testing.assert_array_equal(padded, np.pad(x.astype(np.float32), ((0, 0), (2, 2), (2, 2), (0, 0))))


def test_pipeline_batches_and_normalisation():
    import alexnet_tf
    from alexnet_tf.data import make_datasets
    from conftest import tiny_overrides
    # train.deterministic: with parallel batch maps out of order, a busy machine can hand out a batch of
    # epoch 2 before the last one of epoch 1, and the first 4 batches are then no permutation
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"data.flip": False, "data.scale": 0.5,
                                                         "train.deterministic": True}))
    data = make_datasets(cfg)
    from alexnet_tf.data import synthetic
    (x, y), (xv, yv) = (lambda a: (a["train"], a["val"]))(synthetic.load(28, 1, 10, 64, 0))
    assert (data.train_steps, data.val_steps) == (4, 4)
    vx, vy = next(iter(data.val))
    np.testing.assert_allclose(vx, (xv[:16].astype(np.float32) - x.astype(np.float64).mean(0)) * 0.5, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(vy, yv[:16])
    # one epoch of training batches is a permutation of the training set
    seen = np.concatenate([b[1].numpy() for b in data.train.take(4)])
    np.testing.assert_array_equal(np.sort(seen), np.sort(y))


# === ImageNet-style preprocessing: PCA lighting, the 10 patches, rescaling (§2, §4.1) ===

def test_pca_lighting_adds_one_offset_per_image_along_the_eigenvectors():
    from alexnet_tf.data.stats import FB_RESNET_EIGVEC
    x = images((512, 4, 5, 3)).astype(np.float32)
    amplitudes = np.array([60.0, 5.0, 1.0], np.float32)
    eigvec = FB_RESNET_EIGVEC.astype(np.float32)
    seed = tf.constant([5, 6], tf.int64)
    eager = np.asarray(preprocess.pca_lighting(x, amplitudes, eigvec, 0.1, seed))
    graph = np.asarray(in_tf_data(lambda a, s: preprocess.pca_lighting(a, amplitudes, eigvec, 0.1, s), x, seed))
    np.testing.assert_allclose(graph, eager, rtol=1e-6)
    offset = eager - x                                                # (B, H, W, 3)
    np.testing.assert_allclose(offset, offset[:, :1, :1, :].repeat(4, 1).repeat(5, 2), atol=1e-4)  # same for every pixel
    # numpy: offset = P (alpha * amplitudes), so alpha = P^-1 offset / amplitudes is N(0, 0.1) per image
    alpha = np.linalg.solve(eigvec.astype(np.float64), offset[:, 0, 0, :].T.astype(np.float64)).T / amplitudes
    assert abs(alpha.std() - 0.1) < 0.01 and abs(alpha.mean()) < 0.01
    assert np.abs(np.corrcoef(alpha.T) - np.eye(3)).max() < 0.15      # independent components
    # and exactly the numpy formula with the same draws: x + [p1 p2 p3][a1 s1, a2 s2, a3 s3]^T
    draws = tf.random.stateless_normal([512, 3], seed, stddev=0.1).numpy().astype(np.float64)
    expected = x + ((draws * amplitudes) @ eigvec.T.astype(np.float64))[:, None, None, :]
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-3)


def test_lighting_is_drawn_again_for_each_presentation():
    import alexnet_tf
    from alexnet_tf.data import make_datasets
    from conftest import tiny_overrides
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{
        "model.channels": 3, "data.synthetic_size": 16, "data.flip": False, "data.mean": "none", "data.lighting": True}))
    data = make_datasets(cfg)
    from alexnet_tf.data import synthetic
    source = synthetic.load(28, 3, 10, 16, 0)["train"][0].astype(np.float32)
    offsets = []
    for x, _ in data.train.take(2):  # batch 16 = one epoch each
        x = np.asarray(x)
        epoch = {}
        for image in x:
            diff = image[None] - source                                   # against every training image
            match = int(np.argmin(diff.std(axis=(1, 2)).sum(-1)))         # the one it differs from by a constant
            assert diff[match].std(axis=(0, 1)).max() < 1e-3
            epoch[match] = diff[match, 0, 0]
        assert len(epoch) == 16                                           # each image once per epoch
        offsets.append(np.array([epoch[i] for i in range(16)]))
    assert (np.abs(offsets[0] - offsets[1]).max(axis=1) > 1e-3).all()   # a new draw for every image in epoch 2
    assert len({tuple(np.round(o, 4)) for o in offsets[0]}) == 16         # and a different one per image


def test_ten_crops_against_numpy_slices():
    x = images((3, 12, 14, 2))
    s = 8
    ref = [x[:, :s, :s], x[:, :s, 6:], x[:, 4:, :s], x[:, 4:, 6:], x[:, 2:10, 3:11]]
    ref = np.stack(ref + [r[:, :, ::-1] for r in ref])
    np.testing.assert_array_equal(preprocess.ten_crops(x, s), ref)
    np.testing.assert_array_equal(in_tf_data(lambda a: preprocess.ten_crops(a, s), x), ref)


def test_load_image_rescales_the_shorter_side_and_keeps_the_centre():
    import io
    from PIL import Image
    from alexnet_tf.data.decode import load_image
    # 60x90 PNG of 6 px flat blocks: shorter side 60 -> 20 (x1/3), central 60x60 square = columns 15..75
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 256, (10, 15, 3)), np.ones((6, 6, 1))).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "PNG")
    for out in (load_image(tf.constant(b.getvalue()), 20),
                in_tf_data(lambda d: load_image(d, 20), b.getvalue())):
        out = np.asarray(out)
        assert out.shape == (20, 20, 3) and out.dtype == np.uint8
        # output pixel (i, j) covers source rows 3i..3i+2, columns 15+3j..15+3j+2; where that window
        # and its antialiasing neighbours sit inside one 6 px block the value is the block's colour
        square = rgb[:, 15:75]
        for i in range(20):
            for j in range(20):
                r, c = 3 * i + 1, 3 * j + 1
                if 1 < r % 6 < 4 and 1 < c % 6 < 4:
                    np.testing.assert_array_equal(out[i, j], square[r, c])


def test_train_examples_is_a_fixed_subset_of_the_training_images():
    import alexnet_tf
    from alexnet_tf.config import ConfigError
    from alexnet_tf.data import load_arrays, make_datasets

    full = fashion_mnist.load()["train"][0]
    row_of = {x.tobytes(): i for i, x in enumerate(full)}
    fm = ["data.source=fashion_mnist", "model.image_size=28", "model.channels=1", "model.num_classes=10",
          "model.geometry=small"]
    subsets = []
    for seed in (0, 5):
        arrays, _ = load_arrays(alexnet_tf.load_config(None, fm + ["data.train_examples=2000", f"train.seed={seed}"]))
        (x, y), (xv, _) = arrays["train"], arrays["val"]
        assert x.shape == (2000, 28, 28, 1) and len(y) == 2000 and len(xv) == 10000  # validation untouched
        rows = [row_of[i.tobytes()] for i in x]  # every image is a training image (Fashion-MNIST has no duplicates here)
        assert len(set(rows)) == 2000 and rows == sorted(rows) and max(rows) > 50000 and min(rows) < 1000
        assert np.bincount(y, minlength=10).min() > 150  # a random draw: every class present, near 200 each
        subsets.append(rows)
    assert subsets[0] == subsets[1]  # the same images for every train.seed
    data = make_datasets(alexnet_tf.load_config(None, fm + ["data.train_examples=2000", "data.mean=image"]))
    assert data.train_size == 2000 and data.train_steps == 2000 // 128
    np.testing.assert_allclose(data.mean, full[subsets[0]].astype(np.float64).mean(0), atol=1e-3)  # mean of the subset
    for bad, fragment in (("data.train_examples=60001", "exceeds the 60000 training images"),
                          ("data.train_examples=-1", "expected an integer in [0, inf)")):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            alexnet_tf.load_config(None, fm + [bad])
    with pytest.raises(ConfigError, match="expected 0 for data.source = folder"):
        alexnet_tf.load_config(None, ["data.source=folder", "data.path=/tmp", "data.train_examples=10"])


def test_val_examples_holds_out_training_images_and_keeps_the_test_split():
    """data.val_examples = 5000 (the default run): validation images are training images never trained
    on, the same 5,000 for every train.seed; the 10,000 test images become the separate test split."""
    import alexnet_tf
    from alexnet_tf.config import ConfigError
    from alexnet_tf.data import load_arrays

    source = fashion_mnist.load()
    full, test = source["train"][0], source["val"][0]
    row_of = {x.tobytes(): i for i, x in enumerate(full)}
    fm = ["data.source=fashion_mnist", "model.image_size=28", "model.channels=1", "model.num_classes=10",
          "model.geometry=small", "data.val_examples=5000"]
    held = []
    for seed in (0, 3):
        arrays, _ = load_arrays(alexnet_tf.load_config(None, fm + [f"train.seed={seed}"]))
        (x, y), (xv, yv), (xt, yt) = arrays["train"], arrays["val"], arrays["test"]
        assert (len(x), len(xv), len(xt)) == (55000, 5000, 10000) and (len(y), len(yv), len(yt)) == (55000, 5000, 10000)
        train_rows = [row_of[i.tobytes()] for i in x]
        val_rows = [row_of[i.tobytes()] for i in xv]
        assert not set(train_rows) & set(val_rows)                  # held out: never trained on
        assert sorted(train_rows + val_rows) == list(range(60000))  # together, every training image once
        assert np.array_equal(xt, test)                            # the test split is Fashion-MNIST's 10,000 test images
        assert np.bincount(yv, minlength=10).min() > 400           # a random draw: every class near 500
        held.append(val_rows)
    assert held[0] == held[1]
    # train_examples subsets what is left after the hold-out
    arrays, _ = load_arrays(alexnet_tf.load_config(None, fm + ["data.train_examples=1000"]))
    assert not {row_of[i.tobytes()] for i in arrays["train"][0]} & set(held[0])
    for bad, fragment in (("data.val_examples=60000", "leaves no training images of the 60000"),
                          ("data.train_examples=55001", "exceeds the 55000 training images of data.source = fashion_mnist "
                                                        "left after data.val_examples = 5000")):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            alexnet_tf.load_config(None, fm + [bad])
    with pytest.raises(ConfigError, match="data.val_examples = 10 subsets in-memory data; expected 0 for data.source = folder"):
        alexnet_tf.load_config(None, ["data.source=folder", "data.path=/tmp", "data.val_examples=10"])


def numpy_bilinear(image, size):
    """Bilinear rescaling with half-pixel centres, by hand: output pixel i samples the input at
    (i + 0.5) * h / size - 0.5, clamped to the edge pixels; (h, w, C) -> (size, size, C)."""
    h, w = image.shape[:2]

    def taps(n_in):
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, pos - lo

    r0, r1, fr = taps(h)
    c0, c1, fc = taps(w)
    x = image.astype(np.float64)
    rows = x[r0] * (1 - fr)[:, None, None] + x[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def test_upscale_is_bilinear_and_the_mean_image_commutes_with_it():
    from alexnet_tf.data import preprocess
    x = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 2)).astype(np.uint8)
    up = preprocess.upscale(x, 20).numpy()
    assert up.shape == (5, 20, 20, 2) and up.dtype == np.float32
    for i in range(5):
        np.testing.assert_allclose(up[i], numpy_bilinear(x[i], 20), atol=1e-3)
    # linear: the rescaled mean image is the mean of the rescaled images (what data.upscale relies on)
    mean_then_up = preprocess.upscale(x.astype(np.float64).mean(0)[None], 20).numpy()[0]
    np.testing.assert_allclose(mean_then_up, up.astype(np.float64).mean(0), atol=1e-3)


def test_upscaled_pipeline_crops_the_rescaled_images():
    """data.upscale = 36, model.image_size = 28: validation batches are the centre 28x28 of the images
    rescaled to 36 minus the rescaled mean; training batches are 28x28 windows of the rescaled images."""
    import alexnet_tf
    from alexnet_tf.config import ConfigError
    from alexnet_tf.data import make_datasets, synthetic
    from conftest import tiny_overrides

    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"data.upscale": 36, "data.flip": False, "train.deterministic": True}))
    data = make_datasets(cfg)
    arrays = synthetic.load(28, 1, 10, 64, 0)
    (x, _), (xv, yv) = arrays["train"], arrays["val"]
    mean = numpy_bilinear(x.astype(np.float64).mean(0), 36)
    assert data.mean.shape == (36, 36, 1)
    np.testing.assert_allclose(data.mean, mean, atol=1e-3)
    vx, vy = next(iter(data.val))
    expected = np.stack([numpy_bilinear(i, 36) for i in xv[:16]]) - mean
    np.testing.assert_allclose(vx, expected[:, 4:32, 4:32], atol=1e-3)
    np.testing.assert_array_equal(vy, yv[:16])
    # every training image is a 28x28 window of one rescaled training image (mean subtracted), not always the centre
    rescaled = np.stack([numpy_bilinear(i, 36) for i in x]) - mean
    tx, ty = next(iter(data.train))
    offsets = set()
    for image in tx.numpy():
        hits = [(n, t, l) for n in range(len(x)) for t in range(9) for l in range(9)
                if np.abs(rescaled[n, t:t + 28, l:l + 28] - image).max() < 1e-2]
        assert hits, "a training image that is no window of a rescaled training image"
        offsets.add(hits[0][1:])
    assert tx.shape == (16, 28, 28, 1) and len(offsets) > 1
    for bad, fragment in (({"data.upscale": 20}, "data.upscale = 20 is smaller than model.image_size = 28"),
                          ({"data.upscale": 36, "data.random_crop": 2}, "data.random_crop = 2 and data.upscale = 36 both crop")):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            alexnet_tf.load_config(None, tiny_overrides(**bad))
    with pytest.raises(ConfigError, match="data.upscale = 256 rescales in-memory images; for data.source = folder"):
        alexnet_tf.load_config(None, ["data.source=folder", "data.path=/tmp", "data.upscale=256"])
    # Fashion-MNIST at the paper's geometry: 224 crops of 256 (configs/init_paper_geometry.yaml)
    alexnet_tf.load_config(None, ["data.source=fashion_mnist", "model.channels=1", "model.num_classes=10",
                                  "data.upscale=256", "model.image_size=224"])
    with pytest.raises(ConfigError, match=re.escape("needs model.image_size=28 (or data.upscale >= model.image_size)")):
        alexnet_tf.load_config(None, ["data.source=fashion_mnist", "model.channels=1", "model.num_classes=10",
                                      "model.image_size=224"])
