"""SavedModel export: a clean process loads it and serves the Keras model's top-5; decoding and the
evaluation transform against independent references; saved_model_cli; bad input."""

import io
import json
import os
import re
import struct
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import serving
from alexnet_tf.data import preprocess

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


def encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def random_rgb(seed, size=(28, 28)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def distinct_images():
    """Three 28x28 RGB images unlike each other: noise, a white square on black, a colour ramp."""
    square = np.zeros((28, 28, 3), np.uint8)
    square[6:20, 8:22] = 255
    ramp = np.zeros((28, 28, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 28)[None, :]
    ramp[..., 2] = np.linspace(255, 0, 28)[:, None]
    return np.stack([random_rgb(0), square, ramp])


def keras_top5(run_dir, images):
    """Reference: the saved Keras model on (image - mean) * scale, softmax and top-5 in numpy."""
    import alexnet_tf  # noqa: F401  (registers the custom layer)
    from alexnet_tf.config import load_config
    model = keras.saving.load_model(os.path.join(run_dir, "model.keras"), compile=False)
    mean = np.load(os.path.join(run_dir, "mean.npy"))
    scale = load_config(os.path.join(run_dir, "config.yaml")).data.scale
    logits = model.predict((images.astype(np.float64) - mean) * scale, verbose=0).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ids = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    return ids, np.take_along_axis(probs, ids, 1)


CLEAN_SCRIPT = r"""
import base64, importlib.util, json, sys
# The package is installed (editable) in this environment: hide it, as on a serving machine without it.
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "alexnet_tf":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
import tensorflow as tf
blobs = [base64.b64decode(b) for b in json.loads(sys.stdin.read())]
loaded = tf.saved_model.load(sys.argv[1])
out = {"signatures": sorted(loaded.signatures)}
serve = loaded.signatures["serving_default"]
good = serve(image_bytes=tf.constant(blobs[:3]))
out["good"] = {k: v.numpy().tolist() for k, v in good.items() if k != "class_names"}
out["class_names"] = [[s.decode() for s in row] for row in good["class_names"].numpy()]
try:
    serve(image_bytes=tf.constant([blobs[0], b"this is not an image"]))
    out["bad"] = "no error"
except tf.errors.InvalidArgumentError as e:
    out["bad"] = e.message
again = serve(image_bytes=tf.constant(blobs[:1]))
out["again"] = again["class_ids"].numpy().tolist()
odd = serve(image_bytes=tf.constant(blobs[3:]))  # grey JPEG, CMYK JPEG, RGBA PNG, GIF, BMP, 97x61 JPEG
out["odd_shapes"] = {k: list(v.shape) for k, v in odd.items()}
out["odd_probabilities"] = odd["probabilities"].numpy().tolist()
ten = loaded.signatures["ten_crop"](image_bytes=tf.constant(blobs[:3]))
out["ten_crop"] = ten["class_ids"].numpy().tolist()
pixels = loaded.signatures["pixels"](images=tf.constant(json.loads(sys.argv[2]), tf.float32))
out["pixels"] = pixels["class_ids"].numpy().tolist()
out["project_imported"] = [m for m in sys.modules if m.startswith("alexnet_tf")]
try:
    out["project_importable"] = importlib.util.find_spec("alexnet_tf") is not None
except ModuleNotFoundError:
    out["project_importable"] = False
print(json.dumps(out))
"""


@pytest.mark.slow
def test_export_serves_the_keras_top5_in_a_clean_process(tiny_run, tmp_path):
    import base64
    path = os.path.join(tiny_run, "export", "1")  # written by training.train
    assert os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isdir(os.path.join(path, "variables"))
    images = distinct_images()
    rgba = np.dstack([random_rgb(5), np.full((28, 28, 1), 128, np.uint8)])
    blobs = [encode(Image.fromarray(x), "PNG") for x in images] + [
        encode(Image.fromarray(random_rgb(3)[..., 0]), "JPEG"),          # grey JPEG
        encode(Image.fromarray(random_rgb(4)).convert("CMYK"), "JPEG"),  # CMYK JPEG
        encode(Image.fromarray(rgba, "RGBA"), "PNG"),                     # PNG with alpha
        encode(Image.fromarray(random_rgb(6)), "GIF"),
        encode(Image.fromarray(random_rgb(7)), "BMP"),
        encode(Image.fromarray(random_rgb(8, (61, 97))), "JPEG"),         # not the model's size
    ]
    # -I: isolated mode (no PYTHONPATH, no user site, the script's directory not on sys.path); cwd outside the repo
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN_SCRIPT, os.path.abspath(path), json.dumps(images.tolist())],
                          input=json.dumps([base64.b64encode(b).decode() for b in blobs]),
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=240,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["project_imported"] == [] and not out["project_importable"]
    assert out["signatures"] == ["pixels", "serving_default", "ten_crop"]

    ids, probs = keras_top5(tiny_run, images)
    np.testing.assert_array_equal(out["good"]["class_ids"], ids)
    np.testing.assert_allclose(out["good"]["probabilities"], probs, rtol=1e-4, atol=1e-6)
    with open(os.path.join(tiny_run, "classes.json")) as f:
        names = json.load(f)
    assert out["class_names"] == [[names[i] for i in row] for row in ids]
    np.testing.assert_array_equal(out["pixels"], ids)  # the float-pixel signature agrees

    assert "image_bytes[1] (20 bytes) is not a JPEG, PNG, GIF, BMP or WebP image" in out["bad"]
    np.testing.assert_array_equal(out["again"], ids[:1])  # the model keeps serving after the error
    assert out["odd_shapes"] == {"class_ids": [6, 5], "class_names": [6, 5], "probabilities": [6, 5]}
    odd = np.array(out["odd_probabilities"])
    assert (odd > 0).all() and (odd.sum(1) <= 1 + 1e-6).all() and (np.diff(odd, axis=1) <= 0).all()
    assert np.ptp(np.array(out["good"]["probabilities"])[:, 0]) > 1e-3  # the outputs depend on the image
    assert np.array(out["ten_crop"]).shape == (3, 5)


@pytest.mark.slow
def test_saved_model_cli_show_and_run(tiny_run, tmp_path):
    path = os.path.join(tiny_run, "export", "1")
    show = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", path, "--tag_set", "serve", "--signature_def",
                           "serving_default"], capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr[-2000:]
    for text in ("inputs['image_bytes']", "dtype: DT_STRING", "outputs['class_ids']", "outputs['class_names']",
                 "outputs['probabilities']"):
        assert text in show.stdout, show.stdout
    blobs = np.array([encode(Image.fromarray(random_rgb(s)), "PNG") for s in range(2)], dtype=object)
    np.save(tmp_path / "images.npy", blobs, allow_pickle=True)
    run = subprocess.run([SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", f"image_bytes={tmp_path / 'images.npy'}",
                          "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    ids, probs = keras_top5(tiny_run, np.stack([random_rgb(s) for s in range(2)]))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "class_ids.npy"), ids)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "probabilities.npy"), probs, rtol=1e-4, atol=1e-6)


def test_export_versions_and_overwrite(tiny_run, tmp_path, capsys):
    from alexnet_tf.__main__ import main
    assert serving.existing_versions(os.path.join(tiny_run, "export")) == [1]
    assert main(["export", "--run-dir", tiny_run, "--checkpoint", "best"]) == 0
    assert serving.existing_versions(os.path.join(tiny_run, "export")) == [1, 2]
    capsys.readouterr()
    assert main(["export", "--run-dir", tiny_run, "--version", "2"]) == 1  # exists, no --overwrite
    # in the command line's words: its flags, not the Python API's overwrite=True
    assert capsys.readouterr().err == (f"error: {os.path.join(tiny_run, 'export', '2')} exists; expected another "
                                       "--version, or --overwrite to replace it\n")
    assert main(["export", "--run-dir", tiny_run, "--version", "-1"]) == 2
    assert capsys.readouterr().err == ("config error: --version -1; expected a non-negative integer (TF Serving's "
                                       "version directories)\n")
    assert not any(d.startswith(".tmp") for d in os.listdir(os.path.join(tiny_run, "export")))
    with pytest.raises(ValueError, match="non-negative integer"):
        serving.save(None, str(tmp_path), version=-1)


def test_export_of_an_incomplete_run_directory_names_the_missing_file(tmp_path, capsys):
    from alexnet_tf.__main__ import main
    assert main(["export", "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path}/config.yaml not found; expected the run's config.yaml" in err and err.count("\n") == 1


# === Decoding, against PIL ===

def decode(blob, channels):
    return serving.decode_image(tf.constant(blob), channels).numpy()


def test_decode_grey_colour_alpha_cmyk_gif_bmp():
    rgb = random_rgb(0, (9, 13))
    grey = rgb[..., 0]
    # grey PNG -> RGB repeats it; RGB PNG -> grey is ITU-R 601 luma (PIL's "L" rounds it)
    np.testing.assert_array_equal(decode(encode(Image.fromarray(grey), "PNG"), 3), np.repeat(grey[..., None], 3, -1))
    luma = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)
    np.testing.assert_allclose(decode(encode(Image.fromarray(rgb), "PNG"), 1)[..., 0], luma, atol=0.6)
    # RGBA: composited over white
    alpha = np.random.default_rng(1).integers(0, 256, (9, 13, 1)).astype(np.float32)
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    expected = rgb * (alpha / 255) + 255 * (1 - alpha / 255)
    np.testing.assert_allclose(decode(encode(Image.fromarray(rgba, "RGBA"), "PNG"), 3), expected, atol=1e-3)
    la = np.dstack([grey, alpha]).astype(np.uint8)
    np.testing.assert_allclose(decode(encode(Image.fromarray(la, "LA"), "PNG"), 1)[..., 0],
                               grey * (alpha[..., 0] / 255) + 255 * (1 - alpha[..., 0] / 255), atol=1e-3)
    # CMYK JPEG of flat colours decodes to the same RGB as PIL's own CMYK -> RGB conversion
    flat = np.zeros((16, 16, 3), np.uint8)
    flat[:8] = (200, 30, 40)
    flat[8:] = (20, 160, 90)
    cmyk = Image.fromarray(flat).convert("CMYK")
    np.testing.assert_allclose(decode(encode(cmyk, "JPEG", quality=100), 3)[2:6, 2:14],
                               np.asarray(cmyk.convert("RGB"), np.float32)[2:6, 2:14], atol=6)
    # GIF (first frame, palette) and BMP are lossless here
    np.testing.assert_array_equal(decode(encode(Image.fromarray(flat), "GIF"), 3), flat)
    np.testing.assert_array_equal(decode(encode(Image.fromarray(rgb), "BMP"), 3), rgb)
    assert decode(encode(Image.fromarray(rgb), "BMP"), 1).shape == (9, 13, 1)


def test_bad_bytes_raise_invalid_argument_naming_the_element():
    fn = tf.function(lambda b: serving.decode_image(b[0], 3, 7))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[7\] \(3 bytes\) is not a JPEG, PNG"):
        fn(tf.constant([b"abc"]))
    # a truncated PNG passes the format check and fails in the decoder, also as InvalidArgument
    truncated = encode(Image.fromarray(random_rgb(0)), "PNG")[:60]
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(tf.constant([truncated]))
    assert fn(tf.constant([encode(Image.fromarray(random_rgb(0)), "PNG")])).shape == (28, 28, 3)


# === The evaluation transform ===

def in_tf_data(fn, x):
    return next(iter(tf.data.Dataset.from_tensors(x).map(fn)))


def test_eval_preprocess_geometry_on_a_linear_ramp():
    # f(y, x) = 2y + 3x + 5 on a 112 x 168 image: the central 112 x 112 square starts at column 28
    # and shrinks by 4 to 28 x 28. A (bilinear, antialiased) resize reproduces a linear function at
    # the sample points y = 4i + 1.5, x = 28 + 4j + 1.5 away from the borders.
    yy, xx = np.mgrid[0:112, 0:168].astype(np.float64)
    image = (2 * yy + 3 * xx + 5)[None, ..., None]
    mean = np.full((28, 28, 1), 10.0, np.float32)

    def fn(x):
        return preprocess.eval_preprocess(x, mean, image_size=28, resize_size=28, scale=0.5)

    i, j = np.mgrid[0:28, 0:28]
    expected = (2 * (4 * i + 1.5) + 3 * (4 * (j + 7) + 1.5) + 5 - 10.0) * 0.5
    for out in (fn(image.astype(np.float32)), in_tf_data(fn, image.astype(np.float32))):
        out = np.asarray(out)[0, ..., 0]
        assert out.shape == (28, 28)
        np.testing.assert_allclose(out[1:-1, 1:-1], expected[1:-1, 1:-1], rtol=1e-5)


def test_eval_preprocess_is_the_training_normalisation_at_model_size():
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    mean = np.random.default_rng(1).uniform(0, 255, (28, 28, 1)).astype(np.float32)
    out = preprocess.eval_preprocess(x, mean, image_size=28, resize_size=28, scale=1 / 255)
    np.testing.assert_allclose(out, (x.astype(np.float64) - mean) / 255, atol=1e-5)


def test_ten_crops_and_resized_mean():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype(np.float32)
    mean = np.zeros((4, 4, 1), np.float32)  # resized to 8x8: still zero
    out = np.asarray(preprocess.eval_preprocess(x, mean, image_size=5, resize_size=8, crops="ten"))
    assert out.shape == (10, 2, 5, 5, 1)
    windows = [x[:, :5, :5], x[:, :5, 3:], x[:, 3:, :5], x[:, 3:, 3:], x[:, 1:6, 1:6]]
    for c, w in enumerate(windows):
        np.testing.assert_allclose(out[c], w, atol=1e-4)
        np.testing.assert_allclose(out[c + 5], w[:, :, ::-1], atol=1e-4)
    constant_mean = np.full((4, 4, 1), 7.0, np.float32)
    out = np.asarray(preprocess.eval_preprocess(x, constant_mean, image_size=8, resize_size=8))
    np.testing.assert_allclose(out, x - 7.0, atol=1e-4)


def test_ten_crop_signature_averages_the_patches(tiny_run):
    # at the small geometry (resize 28 = crop 28) the ten patches are the image five times and its
    # mirror image five times: the average of the two softmaxes, computed here with the Keras model
    from alexnet_tf.run_dir import load_run
    classifier = serving.Classifier.from_run(load_run(tiny_run))
    images = distinct_images()
    blobs = tf.constant([encode(Image.fromarray(x), "PNG") for x in images])
    out = classifier.classify_bytes_ten_crop(blobs)
    model = keras.saving.load_model(os.path.join(tiny_run, "model.keras"), compile=False)
    x = (images.astype(np.float64) - np.load(os.path.join(tiny_run, "mean.npy"))) * 0.02
    probs = (tf.nn.softmax(model.predict(x, verbose=0)) + tf.nn.softmax(model.predict(x[:, :, ::-1], verbose=0))) / 2
    ids = np.argsort(-probs.numpy(), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(out["class_ids"], ids)
    np.testing.assert_allclose(out["probabilities"], np.take_along_axis(probs.numpy(), ids, 1), rtol=1e-4)


def test_warmup_requests_are_valid_prediction_logs_that_the_saved_model_serves(tiny_run):
    """The hand-written wire format read back with TF Serving's own protos (tensorflow-serving-api),
    each request replayed through the loaded SavedModel's signature of that name."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    export = os.path.join(tiny_run, "export", "1")
    path = os.path.join(export, "assets.extra", "tf_serving_warmup_requests")
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    assert 1 <= len(records) <= 1000  # TF Serving's limit
    loaded = tf.saved_model.load(export)
    seen = []
    for log in records:
        request = log.predict_log.request
        name = request.model_spec.signature_name
        seen.append(name)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        # the same message built with the official classes serializes to the same bytes
        official = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
            request=predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=name),
                                               inputs={k: tf.make_tensor_proto(v) for k, v in inputs.items()})))
        assert official == log
        signature = loaded.signatures[name]
        assert set(inputs) == set(signature.structured_input_signature[1])
        out = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        batch = len(next(iter(inputs.values())))
        assert out["class_ids"].shape == (batch, 5) and out["probabilities"].shape == (batch, 5)
    assert sorted(seen) == ["pixels", "serving_default", "ten_crop"]
    # real client requests: a JPEG and a PNG of another shape, decodable as such
    blobs = [tf.make_ndarray(r.predict_log.request.inputs["image_bytes"]) for r in records
             if r.predict_log.request.model_spec.signature_name == "serving_default"][0]
    assert blobs[0][:3] == b"\xff\xd8\xff" and blobs[1][:8] == b"\x89PNG\r\n\x1a\n"
    assert tf.io.decode_image(blobs[0]).shape[:2] != tf.io.decode_image(blobs[1]).shape[:2]


def test_overwrite_never_leaves_a_broken_version(tiny_run, tmp_path, monkeypatch):
    """export --overwrite, killed (here: failing) at each step of the swap: base/<version> is always a
    whole SavedModel (the old or the new), never variables/ without saved_model.pb."""
    from alexnet_tf.run_dir import load_run
    classifier = serving.Classifier.from_run(load_run(tiny_run))
    base = str(tmp_path / "export")
    serving.save(classifier, base, version=3)
    real_rename, real_rmtree = os.rename, serving.shutil.rmtree
    for fail in ("second rename", "delete old"):
        calls = []

        def rename(a, b):
            calls.append("rename")
            if fail == "second rename" and calls.count("rename") == 2:
                raise KeyboardInterrupt("killed")
            real_rename(a, b)

        def rmtree(path, ignore_errors=False):
            if fail == "delete old" and os.path.basename(path) == ".old-3" and not ignore_errors:
                raise KeyboardInterrupt("killed")
            real_rmtree(path, ignore_errors=ignore_errors)

        monkeypatch.setattr(serving.os, "rename", rename)
        monkeypatch.setattr(serving.shutil, "rmtree", rmtree)
        with pytest.raises(KeyboardInterrupt):
            serving.save(classifier, base, version=3, overwrite=True)
        monkeypatch.undo()
        version = os.path.join(base, "3")
        if fail == "second rename":  # old moved aside, new not yet in: the version is absent, not broken
            assert not os.path.exists(version) and os.path.isfile(os.path.join(base, ".old-3", "saved_model.pb"))
            real_rename(os.path.join(base, ".old-3"), version)  # (what an operator would do; the next save also recovers)
        else:
            assert os.path.isfile(os.path.join(version, "saved_model.pb"))
        assert tf.saved_model.load(version).signatures["serving_default"] is not None
    serving.save(classifier, base, version=3, overwrite=True)
    assert sorted(os.listdir(base)) == [".lock", "3"]  # .lock: the export lock (run_dir.export_lock)


def test_header_sizes_against_pil_and_decompression_bombs_refused():
    """header_size reads (height, width) from every accepted format's header as PIL wrote it; a file
    whose header declares more than MAX_PIXELS (patched into a real small file, so nothing else is
    wrong with it) is refused before decoding, naming the element and the declared size."""
    import struct
    from alexnet_tf.data.decode import MAX_PIXELS, header_size
    rgb = random_rgb(0, (37, 53))
    files = {fmt: encode(Image.fromarray(rgb), fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP")}
    files["WEBP lossless"] = encode(Image.fromarray(rgb), "WEBP", lossless=True)   # VP8L chunk
    files["WEBP lossy"] = encode(Image.fromarray(rgb), "WEBP", quality=80)         # VP8 chunk
    files["WEBP alpha"] = encode(Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"), "WEBP")  # VP8X
    for name, data in files.items():
        assert [int(v) for v in header_size(tf.constant(data))] == [37, 53], name
    assert [int(v) for v in header_size(tf.constant(b"abc"))] == [0, 0]

    def patched(data, offset, fmt, *values):
        return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt):]

    jpeg = files["JPEG"]
    sof = jpeg.index(b"\xff\xc0") + 5  # baseline SOF: length (2), precision (1), then height, width
    bombs = {
        "PNG": patched(files["PNG"], 16, ">II", 65535, 65535),
        "GIF": patched(files["GIF"], 6, "<HH", 65535, 65535),
        "BMP": patched(files["BMP"], 18, "<ii", 40000, -40000),
        "JPEG": patched(jpeg, sof, ">HH", 60000, 60000),
        # VP8X canvas: width-1 and height-1 as 24-bit little-endian numbers at bytes 24 and 27
        "WEBP alpha": files["WEBP alpha"][:24] + b"\xff\xff\x00" + b"\xff\x3f\x00" + files["WEBP alpha"][30:],
    }
    fn = tf.function(lambda b: serving.decode_image(b[0], 3, 4))
    for name, data in bombs.items():
        h, w = (int(v) for v in header_size(tf.constant(data)))
        assert h * w > MAX_PIXELS, name
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"image_bytes\[4\] declares {w}x{h} pixels \(width x height\); the limit is {MAX_PIXELS}"):
            fn(tf.constant([data]))
    assert fn(tf.constant([files["PNG"]])).shape == (37, 53, 3)  # and the next image is served
    # the training files' decoder refuses them too, and the folder pre-scan's one-line reason says why
    from alexnet_tf.data.decode import decode_error
    for name, data in bombs.items():
        h, w = (int(v) for v in header_size(tf.constant(data)))
        assert f"the image declares {w}x{h} pixels (width x height)" in decode_error(data), name
    assert decode_error(files["PNG"]) is None


def test_a_request_above_the_batch_cap_is_refused_and_the_next_served(tiny_run):
    """The exported bytes signatures take at most serving.MAX_BATCH images per request (the ten-crop one
    MAX_BATCH // 10): one more is InvalidArgument naming the count and the limit; the limit itself and
    the next request are served."""
    loaded = tf.saved_model.load(os.path.join(tiny_run, "export", "1"))
    png = encode(Image.fromarray(random_rgb(0)), "PNG")
    for name, limit in (("serving_default", serving.MAX_BATCH), ("ten_crop", serving.MAX_BATCH // 10)):
        signature = loaded.signatures[name]
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=re.escape(f"a request of {limit + 1} images; the limit is {limit} per request")):
            signature(image_bytes=tf.constant([png] * (limit + 1)))
        assert signature(image_bytes=tf.constant([png] * limit))["class_ids"].shape == (limit, 5)


@pytest.mark.slow
def test_a_huge_jpeg_is_decoded_at_a_reduced_dct_scale():
    """A 4,800 x 3,600 JPEG (above decode.DCT_SCALE_ABOVE pixels) is decoded at 1/8 scale, 600 x 450, when
    the caller resizes to 256 (the smallest 1/2^k scale whose shorter side is still >= 256), and the
    256 x 256 result stays within a few grey levels of decoding it whole (tf.io.decode_jpeg, the
    reference); a 4,000 x 3,000 JPEG (below the threshold) decodes at full size, and without min_side
    (no reduced decode) the big one is above decode.MAX_PIXELS and refused."""
    from alexnet_tf.data import decode
    y, x = np.mgrid[0:3600, 0:4800]
    smooth = np.stack([x * 255 // 4800, y * 255 // 3600, (x + y) * 255 // 8400], -1).astype(np.uint8)
    big = encode(Image.fromarray(smooth), "JPEG", quality=95)
    assert 4800 * 3600 > decode.DCT_SCALE_ABOVE > 4000 * 3000
    scaled = decode.decode_image(tf.constant(big), 3, min_side=256)
    whole = tf.cast(tf.io.decode_jpeg(big, channels=3), tf.float32)
    assert scaled.shape == (450, 600, 3) and whole.shape == (3600, 4800, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"the limit is {decode.MAX_PIXELS} pixels"):
        decode.decode_image(tf.constant(big), 3)
    a = preprocess.resize_central_square(scaled[None], 256)[0].numpy()
    b = preprocess.resize_central_square(whole[None], 256)[0].numpy()
    assert np.abs(a - b).mean() < 1.0 and np.percentile(np.abs(a - b), 99) < 4, np.abs(a - b).mean()
    assert decode.decode_image(tf.constant(big), 3, min_side=500).shape == (900, 1200, 3)  # 1/4: 3600 // 8 < 500
    # the training decoder: the central square at 1/8 scale, and load_image's 256 x 256 against the full decode
    assert decode.decode_square(tf.constant(big), min_side=256).shape == (450, 450, 3)
    trained = decode.load_image(tf.constant(big), 256).numpy().astype(float)
    full = tf.image.resize(whole[:, 600:4200], [256, 256], antialias=True).numpy()  # the central 3600 x 3600
    assert np.abs(trained - full).mean() < 1.0, np.abs(trained - full).mean()
    assert decode.decode_error(big) is None
    below = encode(Image.fromarray(smooth[:3000, :4000]), "JPEG", quality=95)
    assert decode.decode_image(tf.constant(below), 3, min_side=256).shape == (3000, 4000, 3)


def test_jpegs_decoded_downscaled_may_declare_up_to_400_megapixels():
    """With min_side (every evaluation decoder) a JPEG may declare up to decode.MAX_JPEG_PIXELS (a 200 MP
    phone photo decodes at 1/8 scale); without it, and for the other formats, MAX_PIXELS holds. A small
    JPEG's header patched to 15,000 x 15,000 (225 MP) passes the size check with min_side (what the
    decoder then makes of its 28 x 28 data does not matter here) and is refused by it without; 25,000 x 20,000 is refused by both."""
    from alexnet_tf.data import decode
    jpeg = encode(Image.fromarray(random_rgb(0)), "JPEG")
    sof = jpeg.index(b"\xff\xc0") + 5

    def declaring(h, w):
        return tf.constant(jpeg[:sof] + struct.pack(">HH", h, w) + jpeg[sof + 4:])

    assert decode.MAX_PIXELS < 15000 * 15000 < decode.MAX_JPEG_PIXELS < 25000 * 20000
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"the limit is {decode.MAX_PIXELS} pixels"):
        decode.decode_image(declaring(15000, 15000), 3)
    try:  # libjpeg may fill the missing data in (at 1/8 scale) or fail: either way not at the size check
        decode.decode_image(declaring(15000, 15000), 3, min_side=256)
    except tf.errors.InvalidArgumentError as e:
        assert "declares" not in str(e)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"the limit is {decode.MAX_JPEG_PIXELS} pixels"):
        decode.decode_image(declaring(25000, 20000), 3, min_side=256)


BAD_REQUESTS_SCRIPT = r"""
import base64, json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
good, *bad = [base64.b64decode(b) for b in json.loads(sys.stdin.read())]
serve(image_bytes=tf.constant([good]))  # traced and warm: what follows is the requests' own output
sys.stderr.write("REQUESTS START\n")
sys.stderr.flush()
results = []
for blob in bad:
    try:
        serve(image_bytes=tf.constant([good, blob]))
        results.append("served")
    except tf.errors.InvalidArgumentError as e:
        results.append("InvalidArgument: " + " ".join(e.message.split()))
sys.stderr.flush()
sys.stderr.write("REQUESTS END\n")
print(json.dumps(results))
"""


def bad_image_requests():
    """Damaged images as a load test sends them: JPEGs cut at every length that makes libjpeg (or TensorFlow's
    jpeg_mem) print a line of its own ("Input file read error", "Improper call to JPEG library in state 201",
    "Premature end of JPEG data"), random bytes after a JPEG's first three, unknown markers, and damaged
    PNG, GIF, BMP, WebP and text files."""
    rng = np.random.default_rng(0)
    jpeg = encode(Image.fromarray(random_rgb(0, (120, 160))), "JPEG")
    png = encode(Image.fromarray(random_rgb(1)), "PNG")
    bad = [jpeg[:cut] for cut in (3, 4, 10, 20, 50, 100, 150, 200, 300, 600, len(jpeg) // 2, len(jpeg) - 2)]
    bad += [b"\xff\xd8\xff" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes() for _ in range(6)]
    bad += [b"\xff\xd8\xff" + b"x" * 50, jpeg[:2] + b"\xff\xc8\x00\x04ab" + jpeg[2:],   # JPG marker (C8): refused by libjpeg
            jpeg[:2] + jpeg[2:].replace(b"\xff\xda", b"\xff\xd9", 1),                  # EOI instead of SOS
            png[:40], png[:33] + b"\0" * (len(png) - 33), b"GIF89a" + b"\0" * 10, b"BM" + b"\0" * 30,
            b"RIFF" + b"\0" * 30, b"this is not an image"]
    return jpeg, bad


@pytest.mark.slow
def test_bad_requests_are_invalid_argument_without_a_line_each_on_stderr(tiny_run, tmp_path):
    """N damaged images sent to the exported SavedModel in a fresh process (as TF Serving runs it): every
    request fails with InvalidArgument naming the element, and nothing reaches stderr while they run
    (before the JPEG marker check, libjpeg printed one line per bad JPEG request)."""
    import base64
    good, bad = bad_image_requests()
    requests = bad * 3
    proc = subprocess.run([sys.executable, "-c", BAD_REQUESTS_SCRIPT, os.path.join(tiny_run, "export", "1")],
                          input=json.dumps([base64.b64encode(b).decode() for b in [good, *requests]]),
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(requests) == 3 * 27
    assert all(r.startswith("InvalidArgument: ") for r in results), results
    during = proc.stderr.split("REQUESTS START\n")[1].split("REQUESTS END\n")[0]
    assert during.splitlines() == [], during[:3000]
    # every damaged JPEG is refused by the marker check, naming the element, before libjpeg sees it
    damaged = [i for i, r in enumerate(results[:len(bad)]) if "image_bytes[1] " in r and "is a damaged JPEG: " in r]
    assert damaged == [i for i, b in enumerate(bad) if b.startswith(b"\xff\xd8\xff")], results


def jpeg_variants():
    """Valid JPEGs of every layout the marker scan must accept, as PIL writes them (with their sizes)."""
    rgb = random_rgb(3, (45, 67))
    thumbnail = encode(Image.fromarray(random_rgb(4, (8, 8))), "JPEG")  # holds its own SOF and EOI markers
    exif = Image.Exif()
    exif[0x010E] = "a description"
    plain = encode(Image.fromarray(rgb), "JPEG")
    return {
        "baseline": plain,
        "progressive": encode(Image.fromarray(rgb), "JPEG", progressive=True),
        "optimized": encode(Image.fromarray(rgb), "JPEG", optimize=True, quality=50),
        "grey": encode(Image.fromarray(rgb[..., 0]), "JPEG"),
        "cmyk": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        "restart markers": encode(Image.fromarray(rgb), "JPEG", restart_marker_blocks=1),
        "comment, ICC profile, EXIF": encode(Image.fromarray(rgb), "JPEG", comment=b"\xff\xd9 a comment",
                                             icc_profile=b"\xff\xc0" * 100, exif=exif.tobytes()),
        "APP1 holding a whole JPEG": plain[:2] + b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
                                    + plain[2:],
        "fill bytes before a marker": plain[:2] + b"\xff\xff\xff" + plain[3:],
        "bytes after the end": plain + b"trailing bytes some cameras add",
    }


def test_the_jpeg_marker_scan_accepts_every_layout_and_refuses_only_what_libjpeg_refuses(capfd):
    """jpeg_markers.scan, the check that keeps damaged JPEGs away from libjpeg (which prints about them):
    on the layouts PIL writes it finds nothing and reads PIL's size; on damaged copies of a JPEG (cut at
    every length, a byte changed anywhere in the headers or the last bytes) it refuses every cut one,
    and refuses only files that libjpeg itself (tf.io.decode_jpeg) refuses or decodes with a complaint
    on stderr (bytes skipped where a marker belongs: "Corrupt JPEG data: 1 extraneous bytes")."""
    from alexnet_tf.data import jpeg_markers
    scan = tf.function(jpeg_markers.scan)
    for name, data in jpeg_variants().items():
        code, h, w = (int(v) for v in scan(tf.constant(data)))
        assert (code, h, w) == (0, 45, 67), (name, jpeg_markers.PROBLEMS[code])
        assert tf.io.decode_jpeg(data).shape[:2] == (45, 67)
    plain = jpeg_variants()["baseline"]
    sos = plain.index(b"\xff\xda")
    rng = np.random.default_rng(0)
    cuts = [plain[:cut] for cut in range(3, len(plain))]
    changed = []
    for position in list(range(2, sos + 14)) + list(range(len(plain) - 4, len(plain))):
        for value in (0x00, 0xFF, 0xD9, 0xC8, int(rng.integers(0, 256))):
            if plain[position] != value:
                changed.append(plain[:position] + bytes([value]) + plain[position + 1:])
    codes = [int(scan(tf.constant(data))[0]) for data in cuts + changed]
    assert all(codes[:len(cuts)]), [i + 3 for i, c in enumerate(codes[:len(cuts)]) if not c]
    capfd.readouterr()
    for data, code in zip(cuts + changed, codes):
        if code:
            try:
                tf.io.decode_jpeg(data)
            except tf.errors.InvalidArgumentError:
                continue
            assert capfd.readouterr().err.strip(), (jpeg_markers.PROBLEMS[code], data[:30])
    assert sum(1 for c in codes[len(cuts):] if c) > 100  # the changed headers are mostly refused too
