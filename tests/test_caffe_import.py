"""`import-caffe` against Caffe's own definitions: caffemodels written here in the protobuf wire
format by a hand encoder (not the importer's reader), in both layer formats, and a numpy forward
pass that follows Caffe's layers (grouped convolution, LRN with alpha/n and k=1 across all of a
layer's channels, max pooling with Caffe's ceil rounding, InnerProduct over the (C, H, W)
flattening) on BGR mean-subtracted input. The imported Keras model, fed RGB pixels minus the mean
as every tool feeds it, must give the same logits (max |difference| / max |logit| <= 1e-4).

Field numbers: BVLC/caffe src/caffe/proto/caffe.proto.
"""

import json
import os
import struct

import numpy as np
import pytest

from alexnet_tf import serving
from alexnet_tf.caffe import importer, weights
from alexnet_tf.caffe.proto import CaffeFileError

TOLERANCE = 1e-4

# === A protobuf wire-format writer (varint keys, length-delimited fields, packed floats) ===
# Its varint is the SavedModel warm-up writer's (serving.py): a writer shared with other code, still
# independent of the caffemodel reader under test (alexnet_tf/caffe/proto.py).
varint = serving._varint


def key(field, wire):
    return varint(field << 3 | wire)


def vint(field, n):
    return key(field, 0) + varint(n)


def ld(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def text(field, s):
    return ld(field, s.encode())


def f32(field, x):
    return key(field, 5) + struct.pack("<f", x)


def blob(array, legacy=False, double=False):
    """BlobProto: shape (7: BlobShape.dim = 1, packed) and data (5, packed float) or double_data (8);
    legacy: num/channels/height/width (1-4), padded with leading 1s as Caffe's old blobs are."""
    array = np.asarray(array)
    if legacy:
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(vint(i + 1, d) for i, d in enumerate(dims))
    else:
        head = ld(7, ld(1, b"".join(varint(d) for d in array.shape)))
    data = ld(8, array.astype("<f8").tobytes()) if double else ld(5, array.astype("<f4").tobytes())
    return head + data


# V1LayerParameter.LayerType numbers
V1 = {"Data": 5, "Convolution": 4, "ReLU": 18, "LRN": 15, "Pooling": 17, "InnerProduct": 14, "Dropout": 6,
      "SoftmaxWithLoss": 21, "Input": None}
# (field of LayerParameter, field of V1LayerParameter) for each parameter message
PARAM_FIELDS = {"Convolution": (106, 10), "InnerProduct": (117, 17), "LRN": (118, 18), "Pooling": (121, 19),
                "ReLU": (123, 30)}


def layer_bytes(spec, v1, legacy_blobs=False):
    """One layer: spec = dict(name, type, bottom, top, params (bytes), blobs (arrays), crop)."""
    kind = spec["type"]
    if v1:  # V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum), blobs 6, blobs_lr 7
        out = text(4, spec["name"]) + vint(5, V1[kind])
        out += b"".join(text(2, b) for b in spec.get("bottom", ())) + b"".join(text(3, t) for t in spec.get("top", ()))
        out += b"".join(ld(6, blob(a, legacy_blobs)) for a in spec.get("blobs", ()))
        out += b"".join(f32(7, lr) for lr in (1.0, 2.0)[:len(spec.get("blobs", ()))])  # ignored fields
        if spec.get("crop"):
            out += ld(36, vint(3, spec["crop"]) + vint(2, 1))   # transform_param: crop_size, mirror
    else:  # LayerParameter: name 1, type 2, bottom 3, top 4, param 6 (ParamSpec), blobs 7
        out = text(1, spec["name"]) + text(2, kind)
        out += b"".join(text(3, b) for b in spec.get("bottom", ())) + b"".join(text(4, t) for t in spec.get("top", ()))
        out += b"".join(ld(6, f32(3, 1.0) + f32(4, 1.0)) for _ in spec.get("blobs", ()))  # ParamSpec lr/decay mult
        out += b"".join(ld(7, blob(a, double=(i == 1 and spec["name"] == "conv4"))) for i, a in enumerate(spec.get("blobs", ())))
        if spec.get("crop"):
            out += ld(100, vint(3, spec["crop"]))
    if kind in PARAM_FIELDS and spec.get("params") is not None:
        out += ld(PARAM_FIELDS[kind][1 if v1 else 0], spec["params"])
    return out


def net_bytes(specs, v1, name="AlexNet", legacy_blobs=False):
    """NetParameter: name 1, layers 2 (V1) or layer 100."""
    return text(1, name) + b"".join(ld(2 if v1 else 100, layer_bytes(s, v1, legacy_blobs)) for s in specs)


def conv_params(num_output, kernel, stride=1, pad=0, group=1):
    # ConvolutionParameter: num_output 1, pad 3, kernel_size 4, group 5, stride 6
    out = vint(1, num_output) + vint(4, kernel)
    out += (vint(6, stride) if stride != 1 else b"") + (vint(3, pad) if pad else b"") + (vint(5, group) if group != 1 else b"")
    return out


LRN_PARAMS = vint(1, 5) + f32(2, 1e-4) + f32(3, 0.75)   # LRNParameter: local_size 1, alpha 2, beta 3 (k = 1 default)
POOL_PARAMS = vint(1, 0) + vint(2, 3) + vint(3, 2)      # PoolingParameter: pool 1 (MAX), kernel_size 2, stride 3


def alexnet_specs(kernels=(96, 256, 384, 384, 256), fc=4096, classes=1000, seed=0):
    """bvlc_alexnet's train net (data, conv1 ... fc8, loss) with random weights at these widths.

    Weights N(0, sqrt(2 / fan_in)) keep the activations O(50) all the way (pixels minus the mean are
    O(50)), so LRN's alpha/n * sum a^2 is O(0.1-1) and matters; biases are small and random."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    def b(n):
        return rng.uniform(-1, 1, n).astype(np.float32)

    k1, k2, k3, k4, k5 = kernels
    s = [dict(name="data", type="Data", top=("data", "label"), crop=227)]

    def conv(name, bottom, out, fan, kernel, stride=1, pad=0, group=1):
        s.append(dict(name=name, type="Convolution", bottom=(bottom,), top=(name,),
                      params=conv_params(out, kernel, stride, pad, group), blobs=[w(out, fan, kernel, kernel), b(out)]))
        s.append(dict(name="relu" + name[-1], type="ReLU", bottom=(name,), top=(name,), params=None))

    def after(kind, name, bottom):
        s.append(dict(name=name, type=kind, bottom=(bottom,), top=(name,), params=LRN_PARAMS if kind == "LRN" else POOL_PARAMS))

    conv("conv1", "data", k1, 3, 11, stride=4)
    after("LRN", "norm1", "conv1")
    after("Pooling", "pool1", "norm1")
    conv("conv2", "pool1", k2, k1 // 2, 5, pad=2, group=2)
    after("LRN", "norm2", "conv2")
    after("Pooling", "pool2", "norm2")
    conv("conv3", "pool2", k3, k2, 3, pad=1)
    conv("conv4", "conv3", k4, k3 // 2, 3, pad=1, group=2)
    conv("conv5", "conv4", k5, k4 // 2, 3, pad=1, group=2)
    after("Pooling", "pool5", "conv5")
    bottom = "pool5"
    for i, (n_in, n_out) in ((6, (k5 * 36, fc)), (7, (fc, fc)), (8, (fc, classes))):
        s.append(dict(name=f"fc{i}", type="InnerProduct", bottom=(bottom,), top=(f"fc{i}",),
                      params=vint(1, n_out), blobs=[w(n_out, n_in), b(n_out)]))
        bottom = f"fc{i}"
        if i < 8:
            s.append(dict(name=f"relu{i}", type="ReLU", bottom=(bottom,), top=(bottom,), params=None))
            s.append(dict(name=f"drop{i}", type="Dropout", bottom=(bottom,), top=(bottom,), params=None))
    s.append(dict(name="loss", type="SoftmaxWithLoss", bottom=("fc8", "label"), top=("loss",), params=None))
    return s


# === Caffe's forward pass in numpy (float64, NCHW, one image (C, H, W)) ===

def caffe_conv(x, w, b, stride=1, pad=0, group=1):
    """Caffe's ConvolutionLayer: group g convolves input channels [g C/G, (g+1) C/G) with output kernels
    [g O/G, (g+1) O/G); output side floor((H + 2 pad - k) / stride) + 1."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_c, in_g, k, _ = w.shape
    side = (x.shape[1] - k) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride][:, :side, :side]
    parts = []
    for g in range(group):
        cols = windows[g * in_g:(g + 1) * in_g].transpose(1, 2, 0, 3, 4).reshape(side * side, -1)
        kernels = w[g * out_c // group:(g + 1) * out_c // group].reshape(out_c // group, -1).astype(np.float64)
        parts.append((cols @ kernels.T).T.reshape(-1, side, side))
    return np.concatenate(parts) + b[:, None, None]


def caffe_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRNLayer, ACROSS_CHANNELS: x / (k + alpha/size * sum over channels c-2..c+2 of x^2)^beta."""
    padded = np.pad(x ** 2, [(size // 2, size // 2)] + [(0, 0)] * (x.ndim - 1))
    window = sum(padded[i:i + x.shape[0]] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def caffe_max_pool(x, kernel=3, stride=2):
    """Caffe's PoolingLayer MAX: output side ceil((H - kernel) / stride) + 1, windows clipped at the edge."""
    side = int(np.ceil((x.shape[1] - kernel) / stride)) + 1
    out = np.empty((x.shape[0], side, side))
    for i in range(side):
        for j in range(side):
            out[:, i, j] = x[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel].max(axis=(1, 2))
    return out


def caffe_forward(specs, image_bgr):
    """fc8 of the net `specs` for one (3, 227, 227) BGR mean-subtracted image."""
    blobs = {s["name"]: s["blobs"] for s in specs if s.get("blobs")}
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    x = np.asarray(image_bgr, np.float64)
    x = caffe_max_pool(caffe_lrn(relu(caffe_conv(x, *blobs["conv1"], stride=4))))
    x = caffe_max_pool(caffe_lrn(relu(caffe_conv(x, *blobs["conv2"], pad=2, group=2))))
    x = relu(caffe_conv(x, *blobs["conv3"], pad=1))
    x = relu(caffe_conv(x, *blobs["conv4"], pad=1, group=2))
    x = caffe_max_pool(relu(caffe_conv(x, *blobs["conv5"], pad=1, group=2)))
    x = x.reshape(-1)                                       # Caffe's InnerProduct flattens (C, H, W)
    for name in ("fc6", "fc7"):
        x = relu(blobs[name][0].astype(np.float64) @ x + blobs[name][1])
    return blobs["fc8"][0].astype(np.float64) @ x + blobs["fc8"][1]


def relative_difference(got, expected):
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())


# === Inputs ===

SMALL = dict(kernels=(24, 64, 96, 96, 64), fc=64, classes=10)   # AlexNet at width 0.25 (conv1 24 = 96 / 4)


def images(count, seed=1):
    """(count, 256, 256, 3) RGB 0..255 pictures with structure (gradients and blobs), not noise only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    out = []
    for _ in range(count):
        c = rng.uniform(0, 1, (3, 4))
        planes = [255 * (c[i, 0] * xx + c[i, 1] * yy + c[i, 2] * np.sin(8 * c[i, 3] * (xx + yy))) for i in range(3)]
        img = np.stack(planes, -1) + rng.normal(0, 20, (256, 256, 3))
        out.append(np.clip(img, 0, 255).round())
    return np.stack(out).astype(np.float32)


def caffe_mean_bgr(seed=2):
    """A (3, 256, 256) BGR mean image unlike any of its own channel flips or transposes."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    return np.stack([90 + 0.1 * xx, 120 + 0.05 * yy, 130 - 0.08 * xx + 0.03 * yy]).astype(np.float32)


def caffe_input(image_rgb, mean_bgr):
    """What Caffe's test net sees: the central 227 crop of a 256x256 image, BGR, minus the mean's crop, CHW."""
    o = (256 - 227) // 2
    crop = image_rgb[o:o + 227, o:o + 227, ::-1].transpose(2, 0, 1)   # RGB HWC -> BGR CHW
    return crop - mean_bgr[:, o:o + 227, o:o + 227]


def write(path, data):
    path.write_bytes(data)
    return str(path)


def synset_words(tmp_path, count):
    lines = [f"n{i:08d} class{i}, synonym {i}" for i in range(count)]
    return write(tmp_path / "synset_words.txt", ("\n".join(lines) + "\n").encode())


def model_logits(run, pictures):
    """The run's model on `pictures` through the evaluation transform every tool uses (serving.Classifier)."""
    from alexnet_tf.serving import Classifier
    classifier = Classifier.from_run(run)
    return np.asarray(run.model(classifier.preprocess(pictures), training=False))


# === The narrowed net, V1 format (the 2014 model zoo's) with a mean image: every tool reads the run ===

@pytest.fixture(scope="module")
def small_v1(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caffe_v1")
    specs = alexnet_specs(**SMALL)
    model = write(tmp / "small.caffemodel", net_bytes(specs, v1=True, legacy_blobs=True))
    mean = write(tmp / "mean.binaryproto", blob(caffe_mean_bgr()[None], legacy=True))
    run_dir = str(tmp / "run")
    from alexnet_tf.__main__ import main
    assert main(["import-caffe", "--caffemodel", model, "--mean", mean, "--synset-words", synset_words(tmp, 10),
                 "--run-dir", run_dir, "--set", "data.source=folder", "--set", f"data.path={tmp / 'folder'}"]) == 0
    return specs, run_dir, tmp


def test_v1_caffemodel_gives_caffes_logits(small_v1):
    from alexnet_tf.run_dir import load_run
    specs, run_dir, _ = small_v1
    run = load_run(run_dir)
    pictures = images(2)
    expected = np.stack([caffe_forward(specs, caffe_input(p, caffe_mean_bgr())) for p in pictures])
    assert relative_difference(model_logits(run, pictures), expected) <= TOLERANCE


def test_run_directory_holds_the_caffe_conventions(small_v1):
    _, run_dir, tmp = small_v1
    from alexnet_tf.run_dir import read_config
    m, d = read_config(run_dir).model, read_config(run_dir).data
    assert (m.image_size, m.lrn_convention, m.lrn_across_towers, m.width, m.fc_units, m.num_classes) == \
        (227, "caffe", True, 0.25, 64, 10)
    assert (d.source, d.mean, d.scale, d.resize) == ("folder", "image", 1.0, 256)   # --set data.source=folder
    assert json.load(open(os.path.join(run_dir, "classes.json"))) == [f"class{i}" for i in range(10)]
    mean = np.load(os.path.join(run_dir, "mean.npy"))
    np.testing.assert_array_equal(mean, caffe_mean_bgr().transpose(1, 2, 0)[:, :, ::-1])  # (256, 256, 3) RGB
    record = json.load(open(os.path.join(run_dir, "caffe.json")))
    assert record["layer_format"] == "layers" and record["net_name"] == "AlexNet"
    assert record["mean"]["bytes"] == os.path.getsize(os.path.join(tmp, "mean.binaryproto"))
    assert os.path.isfile(os.path.join(run_dir, "export", "1", "saved_model.pb"))


def test_lrn_across_towers_is_what_makes_it_caffes(small_v1):
    """Without model.lrn_across_towers the channels at the tower boundary are normalised differently:
    the comparison above can see it."""
    import alexnet_tf
    from alexnet_tf.run_dir import load_run, read_config
    specs, run_dir, _ = small_v1
    run = load_run(run_dir)
    own = alexnet_tf.build_model(read_config(run_dir, ["model.lrn_across_towers=false"]))
    own.set_weights(run.model.get_weights())
    pictures = images(1)
    expected = caffe_forward(specs, caffe_input(pictures[0], caffe_mean_bgr()))[None]
    assert relative_difference(np.asarray(own(pictures[:, 14:241, 14:241] - run.mean[14:241, 14:241])), expected) > 1e-3


@pytest.mark.slow
def test_predict_and_evaluate_read_the_imported_run(small_v1, capsys):
    from PIL import Image

    from alexnet_tf.__main__ import main
    specs, run_dir, tmp = small_v1
    pictures = images(4, seed=3)
    logits = np.stack([caffe_forward(specs, caffe_input(p, caffe_mean_bgr())) for p in pictures])
    ranked = np.argsort(-logits, axis=1)
    # a folder dataset: images 0, 1 labelled with Caffe's top-1 class, 2, 3 with its least likely one
    labels = [ranked[0, 0], ranked[1, 0], ranked[2, -1], ranked[3, -1]]
    root = tmp / "folder"
    paths = []
    for i, (picture, label) in enumerate(zip(pictures, labels)):
        for split in ("train", "val"):
            os.makedirs(root / split / f"class{label}", exist_ok=True)
            path = root / split / f"class{label}" / f"{i}.png"
            Image.fromarray(picture.astype(np.uint8)).save(path)
        paths.append(str(path))

    assert main(["predict", "--run-dir", run_dir, paths[0]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[-1] == f"class{ranked[0, 0]}", out   # the first of the top-5 lines

    sets = ["--set", "data.source=folder", "--set", f"data.path={root}", "--set", f"data.cache_dir={tmp / 'cache'}",
            "--set", "data.scan=false"]
    assert main(["evaluate", "--run-dir", run_dir, *sets]) == 0
    result = json.load(open(os.path.join(run_dir, "evaluation.json")))
    top5_of_last = [ranked[i, -1] in ranked[i, :5] for i in (2, 3)]
    assert result["images"] == 4
    assert result["center"]["top1_error"] == pytest.approx(0.5)
    assert result["center"]["top5_error"] == pytest.approx(0.5 - 0.25 * sum(top5_of_last))


def test_the_savedmodel_serves_caffes_predictions(small_v1):
    import tensorflow as tf
    specs, run_dir, _ = small_v1
    served = tf.saved_model.load(os.path.join(run_dir, "export", "1"))
    pictures = images(2, seed=6)
    logits = np.stack([caffe_forward(specs, caffe_input(p, caffe_mean_bgr())) for p in pictures])
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    top = served.signatures["pixels"](images=tf.constant(pictures))
    # random weights give logits of +-100: below the first few, the probabilities are 0 in float32 and tie
    np.testing.assert_array_equal(top["class_ids"][:, 0], np.argmax(logits, axis=1))
    np.testing.assert_allclose(top["probabilities"], -np.sort(-probabilities, axis=1)[:, :5], rtol=1e-3, atol=1e-6)
    png = tf.io.encode_png(tf.constant(pictures[0].astype(np.uint8))).numpy()
    assert served.signatures["serving_default"](image_bytes=tf.constant([png]))["class_names"][0, 0].numpy().decode() \
        == f"class{np.argmax(logits[0])}"


@pytest.mark.slow
def test_filters_and_export_read_the_imported_run(small_v1, tmp_path):
    from alexnet_tf.__main__ import main
    _, run_dir, _ = small_v1
    assert main(["filters", "--run-dir", run_dir, "--out", str(tmp_path / "fig3.png")]) == 0
    assert os.path.getsize(tmp_path / "fig3.png") > 0
    assert main(["export", "--run-dir", run_dir]) == 0
    assert os.path.isfile(os.path.join(run_dir, "export", "2", "saved_model.pb"))


# === The current layer format, structure from a deploy.prototxt, Caffe's per-channel mean ===

DEPLOY = """name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 24 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 64 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3" convolution_param { num_output: 96 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
  convolution_param { num_output: 96 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
  convolution_param { num_output: 64 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 64 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 64 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""


def test_layer_format_with_deploy_prototxt_and_channel_mean(tmp_path):
    from alexnet_tf.run_dir import load_run
    specs = alexnet_specs(**SMALL, seed=5)
    # only the layers with blobs, parameters left out: the structure comes from the prototxt
    stripped = [dict(s, params=None) for s in specs if s.get("blobs")]
    model = write(tmp_path / "small.caffemodel", net_bytes(stripped, v1=False))
    prototxt = write(tmp_path / "deploy.prototxt", DEPLOY.encode())
    run_dir = str(tmp_path / "run")
    config = importer.import_caffe(model, run_dir, prototxt=prototxt, synset_words=synset_words(tmp_path, 10),
                                   overrides=["data.source=folder", f"data.path={tmp_path}"], export=False)
    assert config.data.mean == "channel"
    run = load_run(run_dir)
    np.testing.assert_array_equal(run.mean[100, 7], [123, 117, 104])   # Caffe's 104/117/123 are B, G, R
    mean_bgr = np.broadcast_to(np.array([104, 117, 123], np.float32)[:, None, None], (3, 256, 256))
    pictures = images(2, seed=4)
    expected = np.stack([caffe_forward(specs, caffe_input(p, mean_bgr)) for p in pictures])
    assert relative_difference(model_logits(run, pictures), expected) <= TOLERANCE
    assert json.load(open(os.path.join(run_dir, "caffe.json")))["layer_format"] == "layer"


# === Full size: bvlc_alexnet's shapes (61M weights), V1 format with legacy blob shapes ===

@pytest.mark.slow
def test_full_size_alexnet(tmp_path):
    from alexnet_tf.run_dir import load_run
    specs = alexnet_specs(seed=7)
    model = write(tmp_path / "bvlc_alexnet.caffemodel", net_bytes(specs, v1=True, legacy_blobs=True))
    mean = write(tmp_path / "imagenet_mean.binaryproto", blob(caffe_mean_bgr()[None]))
    wnids = importer.ilsvrc2012_wnids()
    words = write(tmp_path / "synset_words.txt", "".join(f"{w} name {i}, other\n" for i, w in enumerate(wnids)).encode())
    run_dir = str(tmp_path / "run")
    importer.import_caffe(model, run_dir, mean=mean, synset_words=words, export=False)
    run = load_run(run_dir)
    assert run.model.count_params() == 60_965_224 and run.class_names[0] == "name 0"
    pictures = images(1, seed=8)
    expected = caffe_forward(specs, caffe_input(pictures[0], caffe_mean_bgr()))[None]
    assert relative_difference(model_logits(run, pictures), expected) <= TOLERANCE


def test_default_class_names_are_the_sorted_ilsvrc2012_wnids():
    names = importer.class_names(1000)
    assert len(names) == 1000 and names == sorted(names) and names[0] == "n01440764"


# === One-line errors ===

@pytest.fixture(scope="module")
def small_bytes():
    return net_bytes(alexnet_specs(**SMALL), v1=False)


def import_error(tmp_path, data=None, specs=None, v1=False, overrides=("data.source=folder", "data.path=x"), **kwargs):
    """The CaffeFileError message of importing these bytes (or this net); it must be one line."""
    path = write(tmp_path / "net.caffemodel", data if data is not None else net_bytes(specs, v1=v1))
    with pytest.raises(CaffeFileError) as e:
        importer.import_caffe(path, str(tmp_path / "run"), overrides=overrides, export=False, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    assert not os.path.exists(tmp_path / "run")  # nothing written
    return message


def test_a_file_that_is_not_a_caffemodel(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    assert "is not a caffemodel (it is an image)" in import_error(tmp_path, png)
    message = import_error(tmp_path, DEPLOY.encode())
    assert "is not a caffemodel (it is text" in message and "--prototxt" in message
    message = import_error(tmp_path, blob(caffe_mean_bgr()[None]))  # a mean file
    assert "holds no layers" in message and "goes to --mean" in message
    assert "is empty" in import_error(tmp_path, b"")


def test_a_truncated_caffemodel(tmp_path, small_bytes):
    message = import_error(tmp_path, small_bytes[:len(small_bytes) * 3 // 5])
    assert "is truncated: layer[" in message and f"the file has {len(small_bytes) * 3 // 5:,}" in message
    assert "'fc6'" in message   # 60 % of the way: inside fc6's weights, which are most of the file


def test_the_command_prints_one_line(tmp_path, small_bytes, capsys):
    from alexnet_tf.__main__ import main
    path = write(tmp_path / "cut.caffemodel", small_bytes[:1000])
    assert main(["import-caffe", "--caffemodel", path, "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is truncated" in err and "\n" not in err


def test_a_net_that_is_not_alexnet_names_the_layer(tmp_path):
    specs = alexnet_specs(**SMALL)
    by_name = {s["name"]: i for i, s in enumerate(specs)}

    def changed(name, **fields):
        return [dict(s, **fields) if s["name"] == name else s for s in specs]

    # 60 kernels in conv2, its definition agreeing (else that disagreement is reported first), where conv1's 24 make 64
    wrong_blob = changed("conv2", blobs=[np.zeros((60, 12, 5, 5), np.float32), np.zeros(60, np.float32)],
                         params=conv_params(60, 5, pad=2, group=2))
    message = import_error(tmp_path, specs=wrong_blob)
    assert "'conv2'" in message and "(60, 12, 5, 5)" in message and "expected (64, 12, 5, 5)" in message

    message = import_error(tmp_path, specs=changed("conv2", params=conv_params(64, 3, pad=1, group=2)))
    assert "'conv2'" in message and "kernel (3, 3); expected (5, 5)" in message

    caffenet = list(specs)  # CaffeNet: pool1 before norm1
    i, j = by_name["norm1"], by_name["pool1"]
    caffenet[i], caffenet[j] = caffenet[j], caffenet[i]
    message = import_error(tmp_path, specs=caffenet, v1=True)
    assert "'pool1' (Pooling) stands where AlexNet has norm1 (LRN)" in message and "CaffeNet" in message

    message = import_error(tmp_path, specs=changed("norm2", params=vint(1, 5) + f32(3, 0.75)))  # alpha left at 1
    assert "'norm2' (LRN) has alpha 1.0; expected 0.0001" in message

    message = import_error(tmp_path, specs=[s for s in specs if s["name"] not in ("fc8", "loss")])
    assert "ends after 'drop7'" in message or "ends after 'relu7'" in message
    assert "expected fc8 (InnerProduct)" in message

    message = import_error(tmp_path, specs=changed("data", crop=224))
    assert "3x224x224; expected 3x227x227" in message


def test_a_definition_that_disagrees_with_the_weights_is_one_line(tmp_path, capsys):
    """Every num_output, kernel_size and group of the definition (a prototxt, or the caffemodel's own layer
    parameters) against the blob shapes: a prototxt saying 62 kernels over a caffemodel with 64 is refused
    in one line, exit 1, although 62 alone would be a valid narrowed AlexNet's count too."""
    from alexnet_tf.__main__ import main
    specs = alexnet_specs(**SMALL)
    stripped = [dict(s, params=None) for s in specs if s.get("blobs")]
    model = write(tmp_path / "small.caffemodel", net_bytes(stripped, v1=False))
    wrong = DEPLOY.replace("num_output: 64 pad: 2 kernel_size: 5 group: 2", "num_output: 62 pad: 2 kernel_size: 5 group: 2")
    assert wrong != DEPLOY
    prototxt = write(tmp_path / "deploy.prototxt", wrong.encode())
    status = main(["import-caffe", "--caffemodel", model, "--prototxt", prototxt, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert err == ("error: layer 5 'conv2' (Convolution) of the net definition says num_output 62 but the caffemodel's "
                   "weights of 'conv2' have shape (64, 12, 5, 5), 64 outputs; expected the definition that belongs to "
                   "these weights\n")
    assert not (tmp_path / "run").exists()

    def changed(name, **fields):
        return [dict(s, **fields) if s["name"] == name else s for s in specs]

    # the caffemodel's own parameters: fc6 says 60 outputs over 64-row weights
    message = import_error(tmp_path, specs=changed("fc6", params=vint(1, 60)))
    assert "'fc6' (InnerProduct) of the net definition says num_output 60" in message and "64 outputs" in message
    # kernel_size: the definition's 5x5 (AlexNet's conv2) over 3x3 kernels
    message = import_error(tmp_path, specs=changed("conv2", blobs=[np.zeros((64, 12, 3, 3), np.float32),
                                                                   np.zeros(64, np.float32)]))
    assert "'conv2' (Convolution) of the net definition says kernel_size 5x5" in message and "3x3 kernels" in message
    # group: the definition's group 2 over conv1's 24 channels means 12 per kernel; these read all 24
    message = import_error(tmp_path, specs=changed("conv2", blobs=[np.zeros((64, 24, 5, 5), np.float32),
                                                                   np.zeros(64, np.float32)]))
    assert "says group 2 over its 24 input channels" in message and "kernels reading 24 channels each" in message


def test_a_prototxt_nested_100000_deep_is_one_line(tmp_path, small_bytes):
    """100,000 nested `layer {` (800 kB): refused at text_format.MAX_DEPTH levels with one line, not a
    RecursionError; the limit leaves room for every real net definition (DEPLOY nests 3 deep)."""
    from alexnet_tf.caffe import text_format
    deep = write(tmp_path / "deep.prototxt", b"layer {\n" * 100_000)
    message = import_error(tmp_path, small_bytes, prototxt=deep)
    assert message == (f"error: {deep} line {text_format.MAX_DEPTH + 1}: messages nested more than "
                       f"{text_format.MAX_DEPTH} deep; expected a Caffe net definition (a few levels: "
                       "layer { convolution_param { ... } })")
    nested = "layer { " * text_format.MAX_DEPTH + "}" * text_format.MAX_DEPTH
    assert text_format.parse("name: 'n' " + nested, "p")["name"] == ["n"]  # exactly the limit is read


def test_bad_companion_files(tmp_path, small_bytes):
    bad_mean = write(tmp_path / "mean.binaryproto", blob(np.zeros((1, 3, 100, 100), np.float32)))
    assert "expected (1, 3, H, W) with H, W >= 227" in import_error(tmp_path, small_bytes, mean=bad_mean)
    words = write(tmp_path / "words.txt", b"n0 a\nn1 b\n")
    assert "has 2 lines; expected 10" in import_error(tmp_path, small_bytes, synset_words=words)
    assert "fc8 has 10 outputs; give --synset-words" in import_error(tmp_path, small_bytes)
    assert "--set model.width would change the network" in import_error(tmp_path, small_bytes,
                                                                        overrides=["model.width=0.5"])
    message = import_error(tmp_path, small_bytes, overrides=())
    assert "fc8 has 10 outputs, not ILSVRC-2012's 1000" in message and "--set data.source=folder" in message


def test_a_run_directory_is_not_overwritten(tmp_path, small_bytes):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("name: other\n")
    path = write(tmp_path / "net.caffemodel", small_bytes)
    with pytest.raises(FileExistsError, match="already holds a run"):
        importer.import_caffe(path, str(tmp_path / "run"), overrides=["data.source=folder", "data.path=x"], export=False)


# === The LRN layer option the import needs ===

def test_lrn_output_channels_normalise_across_the_whole_input():
    import tensorflow as tf

    from alexnet_tf import LocalResponseNormalization
    a = np.abs(np.random.default_rng(0).normal(0, 40, (2, 3, 4, 12))).astype("float32")
    expected = caffe_lrn(a.transpose(3, 0, 1, 2).astype(np.float64)).transpose(1, 2, 3, 0)   # channels first
    for start, stop in ((0, 6), (6, 12)):
        layer = LocalResponseNormalization(convention="caffe", output_channels=(start, stop))
        x = tf.constant(a)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        np.testing.assert_allclose(y, expected[..., start:stop], rtol=1e-5)
        # the hand-written gradient against autodiff of the same formula
        g = tape.gradient(y, x, output_gradients=tf.ones_like(y) * 0.5)
        with tf.GradientTape() as tape:
            tape.watch(x)
            d = 1.0 + 1e-4 / 5 * tf.matmul(tf.square(x), tf.constant(layer._band))
            z = x[..., start:stop] * d ** -0.75
        np.testing.assert_allclose(g, tape.gradient(z, x, output_gradients=tf.ones_like(z) * 0.5), rtol=1e-4, atol=1e-7)
        assert LocalResponseNormalization.from_config(layer.get_config()).output_channels == (start, stop)


def test_paper_model_is_unchanged_by_default():
    import alexnet_tf
    model = alexnet_tf.build_model(alexnet_tf.load_config(None))
    assert not any(layer.name.startswith("concat_lrn") for layer in model.layers)
    assert model.get_layer("lrn1_0").output_channels is None


def test_weights_module_constants_match_the_model():
    from alexnet_tf.model import cuda_convnet_padding
    assert cuda_convnet_padding(weights.IMAGE_SIZE, 11, 4) == 0   # 227: no cuda-convnet padding


@pytest.mark.slow
def test_neighbours_and_fine_tuning_start_from_the_imported_run(small_v1, tmp_path, capsys):
    """`neighbours` reads an imported run once its config points at data (the user's ImageNet; here a
    folder), and train.py fine-tunes from it with train.init_from: with lr 1e-12 one epoch leaves every
    copied layer at the Caffe weights, and fc8 (3 classes instead of 10) starts afresh."""
    import shutil

    import keras
    from PIL import Image

    from alexnet_tf import train_command
    from alexnet_tf.__main__ import main
    from alexnet_tf.config import dump, load_config
    from conftest import run_main
    specs, imported, _ = small_v1
    root = tmp_path / "folder"
    for i, picture in enumerate(images(6, seed=5)):
        for split in ("train", "val"):
            os.makedirs(root / split / f"class{i % 3}", exist_ok=True)
            Image.fromarray(picture.astype(np.uint8)).save(root / split / f"class{i % 3}" / f"{i}.png")
    data = ["data.source=folder", f"data.path={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_examples=0"]

    pointed = tmp_path / "imported"
    shutil.copytree(imported, pointed)
    config = load_config(str(pointed / "config.yaml"), data)
    dump(config, str(pointed / "config.yaml"))
    assert main(["neighbours", "--run-dir", str(pointed), "--queries", "2", "--k", "2", "--out", str(tmp_path / "nn.png")]) == 0
    assert (tmp_path / "nn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    sets = data + ["model.num_classes=3", "train.epochs=1", "data.batch_size=2", "train.lr=1e-12",
                   "train.weight_decay=0", "train.export=false"]
    status, out, err = run_main(capsys, train_command.main, [
        "--config", os.path.join(imported, "config.yaml"), "--run-dir", tmp_path / "tuned",
        "--set", f"train.init_from={imported}", *[a for o in sets for a in ("--set", o)]])
    assert status == 0, err[-2000:]
    assert "; initialised afresh: fc8" in out, out[-2000:]
    source = keras.saving.load_model(os.path.join(imported, "model.keras"))
    tuned = keras.saving.load_model(str(tmp_path / "tuned" / "model.keras"))
    for name in ("conv1_0", "conv3_1", "fc7_0"):
        for mine, theirs in zip(tuned.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-9, err_msg=name)
    assert tuned.get_layer("fc8").get_weights()[0].shape[-1] == 3
