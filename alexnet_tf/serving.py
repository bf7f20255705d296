"""The model as TF Serving sees it: decoding and the evaluation preprocessing in the graph, and the SavedModel.

    RUN_DIR/export/<version>/saved_model.pb, variables/     (the layout TF Serving loads)
    RUN_DIR/export/<version>/assets.extra/tf_serving_warmup_requests   a few requests TF Serving
                                                        runs when it loads the version (warm-up)

Signatures (every one returns the top-k, k = min(5, classes), sorted by probability):
  serving_default  image_bytes: string [B]              encoded JPEG/PNG/GIF/BMP/WebP images of any size
  pixels           images: float32 [B, H, W, C]         0..255 pixels of any (batch-uniform) size
  ten_crop         image_bytes: string [B]              as serving_default, softmax averaged over
                                                        the paper's ten patches (§4.1)
  outputs          class_ids int32 [B, k], class_names string [B, k], probabilities float32 [B, k]

The SavedModel needs neither this package nor the custom LRN class to load: the graph holds
only TensorFlow ops (tf.saved_model.load, saved_model_cli, TF Serving).
"""

import errno
import os
import re
import shutil

import keras
import numpy as np
import tensorflow as tf

from alexnet_tf.crops import eval_resize_size
from alexnet_tf import run_dir
from alexnet_tf.data import preprocess
from alexnet_tf.errors import PathExists
from alexnet_tf.ops import fused_lrn
from alexnet_tf.data.decode import ALPHA_BACKGROUND, decode_image  # noqa: F401  (decode_image: predict, retrieval)

TOP_K = 5
# Images per request of the bytes signatures (the ten-crop one counts each image as its 10 crops): a
# request's memory grows with its batch (decoded images, the model's activations), so one client cannot
# take the server down with a huge batch. 256 covers TF Serving's usual batching sizes; split larger ones.
MAX_BATCH = 256


class Classifier:
    """The model with its input pipeline: the functions behind the SavedModel signatures.

    `predict` and the tests call these same functions eagerly, so what they report is what the
    exported model serves.
    """

    def __init__(self, model, mean, class_names, *, image_size, resize_size, scale, channels,
                 background=ALPHA_BACKGROUND):
        num_classes = model.output.shape[-1]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {num_classes} outputs; expected equal")
        self.model = model
        self.mean = np.asarray(mean, np.float32)
        self.class_names = tf.constant([str(c) for c in class_names])
        self.k = min(TOP_K, num_classes)
        self.image_size, self.resize_size, self.scale = image_size, resize_size, scale
        self.channels, self.background = channels, background

    @classmethod
    def from_config(cls, model, config, mean, class_names, background=ALPHA_BACKGROUND):
        """Geometry and scale follow the run's config."""
        m = config.model
        return cls(model, mean, class_names, image_size=m.image_size, resize_size=eval_resize_size(config),
                   scale=config.data.scale, channels=m.channels, background=background)

    @classmethod
    def from_run(cls, run, background=ALPHA_BACKGROUND):
        """From `run_dir.load_run(...)`."""
        return cls.from_config(run.model, run.config, run.mean, run.class_names, background)

    # === Preprocessing ===

    def preprocess(self, images, crops="center"):
        """(B, H, W, C) 0..255 pixels -> model inputs (B, S, S, C), or (10, B, S, S, C) for crops='ten'."""
        return preprocess.eval_preprocess(images, self.mean, image_size=self.image_size,
                                          resize_size=self.resize_size, scale=self.scale, crops=crops)

    def preprocess_bytes(self, image_bytes, crops="center"):
        """(B,) encoded images of any sizes -> model inputs (B, S, S, C), or (B, 10, S, S, C) for
        crops='ten'; each image is decoded and resized on its own."""
        s, c = self.image_size, self.channels
        shape = [s, s, c] if crops == "center" else [10, s, s, c]

        def one(args):
            data, index = args
            image = decode_image(data, c, index, self.background, min_side=self.resize_size)[None]     # (1, H, W, C)
            x = self.preprocess(image, crops)
            return tf.ensure_shape(x[0] if crops == "center" else x[:, 0], shape)

        count, limit = tf.shape(image_bytes)[0], MAX_BATCH if crops == "center" else MAX_BATCH // 10
        capped = tf.debugging.Assert(count <= limit, [tf.strings.format(
            "a request of {} images; the limit is {} per request{} (serving.MAX_BATCH): split it", (
                count, limit, "" if crops == "center" else " of the ten-crop signature"))])
        with tf.control_dependencies([capped]):
            indices = tf.range(count)
        return tf.map_fn(one, (image_bytes, indices), fn_output_signature=tf.TensorSpec(shape, tf.float32))

    # === Signatures ===

    def _top_k(self, probabilities):
        top = tf.math.top_k(probabilities, k=self.k)
        return {"class_ids": top.indices, "class_names": tf.gather(self.class_names, top.indices),
                "probabilities": top.values}

    def _probabilities(self, inputs):
        return tf.nn.softmax(tf.cast(self.model(inputs, training=False), tf.float32))

    def classify_bytes(self, image_bytes):
        return self._top_k(self._probabilities(self.preprocess_bytes(image_bytes)))

    def classify_pixels(self, images):
        return self._top_k(self._probabilities(self.preprocess(tf.cast(images, tf.float32))))

    def classify_bytes_ten_crop(self, image_bytes):
        crops = self.preprocess_bytes(image_bytes, crops="ten")                  # (B, 10, S, S, C)
        s, c = self.image_size, self.channels
        probabilities = self._probabilities(tf.reshape(crops, [-1, s, s, c]))   # (B * 10, classes)
        return self._top_k(tf.reduce_mean(tf.reshape(probabilities, [-1, 10, probabilities.shape[-1]]), axis=1))

    def signatures(self):
        """{name: (function, input_signature)} for the SavedModel."""
        bytes_spec = [tf.TensorSpec([None], tf.string, name="image_bytes")]
        pixels_spec = [tf.TensorSpec([None, None, None, self.channels], tf.float32, name="images")]
        return {
            "serving_default": (self.classify_bytes, bytes_spec),
            "pixels": (self.classify_pixels, pixels_spec),
            "ten_crop": (self.classify_bytes_ten_crop, bytes_spec),
        }


# === Warm-up requests ===
# TF Serving runs the PredictionLog records of assets.extra/tf_serving_warmup_requests (a TFRecord
# file, <= 1000 records) when it loads a version, so the first client does not pay for tracing and
# lazy initialisation. The records are written here from their protobuf wire format, because the
# message classes live in tensorflow-serving-api, a client package the model does not need (the
# tests read the file back with it). Field numbers from tensorflow_serving/apis/*.proto:
#   PredictionLog.predict_log = 6; PredictLog.request = 1; PredictRequest.model_spec = 1,
#   PredictRequest.inputs = 2 (map<string, TensorProto>: entry key = 1, value = 2);
#   ModelSpec.signature_name = 3.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def _varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2): key, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def predict_log(signature_name, inputs):
    """A serialized PredictionLog holding PredictRequest(signature_name, inputs={name: array})."""
    request = _field(1, _field(3, signature_name.encode()))
    for name, value in inputs.items():
        request += _field(2, _field(1, name.encode()) + _field(2, tf.make_tensor_proto(value).SerializeToString()))
    return _field(6, _field(1, request))


def warmup_images(classifier):
    """Two encoded images as clients send them: a JPEG at the evaluation size and a PNG of another
    shape (each signature decodes and resizes per image), smooth colour ramps with some texture."""
    rng = np.random.default_rng(0)
    images = []
    for h, w in ((classifier.resize_size, classifier.resize_size), (classifier.resize_size + 13, classifier.resize_size * 3 // 2)):
        y, x = np.mgrid[0:h, 0:w]
        ramp = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 0 * x], -1)
        pixels = np.clip(ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)[..., :classifier.channels]
        images.append(pixels)
    return [tf.io.encode_jpeg(images[0]).numpy(), tf.io.encode_png(images[1]).numpy()], images[0]


def write_warmup(classifier, saved_model_dir):
    """assets.extra/tf_serving_warmup_requests: one request per signature, the bytes ones with both images."""
    blobs, pixels = warmup_images(classifier)
    records = [predict_log("serving_default", {"image_bytes": np.array(blobs, dtype=object)}),
               predict_log("pixels", {"images": pixels[None].astype(np.float32)}),
               predict_log("ten_crop", {"image_bytes": np.array(blobs[:1], dtype=object)})]
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return path


# === Writing the SavedModel ===

def existing_versions(base):
    """Integer version directories under `base` (what TF Serving considers), sorted."""
    if not os.path.isdir(base):
        return []
    return sorted(int(d) for d in os.listdir(base) if re.fullmatch(r"\d+", d))


def save(classifier, base, version=None, overwrite=False, wait=run_dir.EXPORT_WAIT):
    """Write `classifier` to base/<version>/ (default: one above the highest existing version).

    One export at a time (run_dir.export_lock: a second waits up to `wait` s, then ExportBusy). The
    version is claimed by creating its hidden directory base/.tmp-<version> exclusively; the
    SavedModel is written there and renamed into place, so a TF Serving instance watching `base`
    never loads a half-written version, and an existing version is never replaced without
    `overwrite` (PathExists). Returns the version directory.
    """
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise ValueError(f"version={version!r}; expected a non-negative integer (TF Serving's version directories)")
    os.makedirs(base, exist_ok=True)
    with run_dir.export_lock(base, wait):
        _recover(base)
        version, tmp = _claim(base, version, overwrite)
        try:
            with fused_lrn.reference_only():  # traced with TensorFlow's ops only, never the fused LRN op
                archive = keras.export.ExportArchive()
                archive.track(classifier.model)
                for name, (fn, spec) in classifier.signatures().items():
                    archive.add_endpoint(name, fn, input_signature=spec)
                archive.write_out(tmp, verbose=False)
            write_warmup(classifier, tmp)
            return _place(tmp, base, version, overwrite)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else what a failure left


def _recover(base):
    """What a killed export left in `base` (the lock is held: no export is running). An --overwrite
    killed between its two renames left the old version as .old-<N> and no <N>: it is put back;
    .tmp-<N> (a half-written version) and an .old-<N> whose <N> exists are deleted."""
    for name in os.listdir(base):
        old = re.fullmatch(r"\.old-(\d+)", name)
        if old and not os.path.lexists(os.path.join(base, old.group(1))):
            os.rename(os.path.join(base, name), os.path.join(base, old.group(1)))
        elif old or re.fullmatch(r"\.tmp-\d+", name):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _claim(base, version, overwrite):
    """(version, its hidden directory base/.tmp-<version>), the directory created exclusively: a
    number taken by another writer makes os.mkdir fail instead of two exports sharing it."""
    if version is not None:
        path = os.path.join(base, str(version))
        if os.path.lexists(path) and not overwrite:
            raise PathExists(f"{path} exists; expected another version, or overwrite=True to replace it")
        tmp = os.path.join(base, f".tmp-{version}")
        try:
            os.mkdir(tmp)
        except FileExistsError:
            raise PathExists(f"{tmp} exists: another process is writing version {version} into {base}; "
                             "expected one writer (this one holds the export lock)") from None
        return version, tmp
    version = (existing_versions(base) or [0])[-1] + 1
    while True:
        tmp = os.path.join(base, f".tmp-{version}")
        try:
            os.mkdir(tmp)
            return version, tmp
        except FileExistsError:
            version += 1


def _place(tmp, base, version, overwrite):
    """Rename the finished base/.tmp-<version> to base/<version>; returns the latter.

    Without `overwrite` the target must not exist. os.rename over an existing directory fails
    only when that one is not empty, so existence is checked first (under the export lock nothing
    else of this package creates it; a non-empty directory made meanwhile by hand still makes the
    rename fail, reported the same way). With `overwrite` the old version is renamed aside, the new
    one renamed in, then the old one deleted, so that a kill at any moment leaves base/<version>
    the old or the new model, whole (or, between the renames, absent, which `_recover` repairs).
    """
    path = os.path.join(base, str(version))
    refused = PathExists(f"{path} exists (made while this export was writing); expected another version, "
                         "or overwriting to replace it")
    if os.path.lexists(path) and overwrite:
        old = os.path.join(base, f".old-{version}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old)
        return path
    if os.path.lexists(path):
        raise refused
    try:
        os.rename(tmp, path)
    except OSError as e:
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise refused from None
        raise
    return path
