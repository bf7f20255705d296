"""Check that a Caffe net is bvlc_alexnet's, and map its blobs onto this project's two-tower model.

Caffe's AlexNet (models/bvlc_alexnet/deploy.prototxt) is the paper's two-GPU net written as one
net with `group: 2`: a grouped convolution's group g reads input channels [g*C/2, (g+1)*C/2) and
writes output channels [g*O/2, (g+1)*O/2), which is tower g here. The layers, their order and
their parameters are checked against

  conv1 11x11/4 96      relu1  norm1 LRN  pool1 MAX 3/2
  conv2 5x5/1 pad 2 256 group 2   relu2  norm2  pool2
  conv3 3x3/1 pad 1 384 (both halves)  relu3
  conv4 3x3/1 pad 1 384 group 2   relu4
  conv5 3x3/1 pad 1 256 group 2   relu5  pool5
  fc6 4096  relu6  fc7 4096  relu7  fc8 1000

(Dropout, Softmax, data, loss and accuracy layers change nothing at test time and are ignored).
A narrowed net is accepted too: every conv layer's kernel count scaled by conv1's count / 96 (this
model's `model.width`), any even fc6/fc7 width and any fc8 class count.

Blob layouts: a convolution's weights are (O, I/group, kh, kw) with a bias (O,); an InnerProduct's
are (O, I) and compute y = W x + b, x flattened from Caffe's (C, H, W) order. The mapping:

  conv kernel   (O, I, kh, kw) -> (kh, kw, I, O) (HWIO), tower t = output rows [t*O/2, (t+1)*O/2)
  conv1         input channels reversed: Caffe's images are BGR, this model's RGB
  conv3         ungrouped: both towers' kernels read all 2 x 128 channels (the model's concat3)
  fc6           input row c*36 + y*6 + x (c over both towers' 256 maps) -> this model's
                t*(36*128) + (y*6 + x)*128 + (c - 128 t): each tower's maps flattened as (H, W, C)
  fc kernels    transposed, (O, I) -> (I, O); fc6, fc7 units [t*O/2, (t+1)*O/2) on tower t
"""

from dataclasses import dataclass

import numpy as np

from alexnet_tf.caffe.proto import CaffeFileError
from alexnet_tf.architecture import PAPER_CONV_CHANNELS, tower_channels

IMAGE_SIZE = 227   # Caffe's crop: conv1 11x11/4 without padding gives 55 (cuda-convnet pads 224 instead)
POOL5_SIDE = 6     # 227 -> 55 -> 27 -> 13 -> 13 -> 13 -> 6 (pooling outputs are exact: ceil = floor)
LRN = dict(local_size=5, alpha=1e-4, beta=0.75, k=1.0)  # bvlc_alexnet's norm1, norm2 (Caffe's alpha/n convention)

# (Caffe layer, type, parameters); convolutions: (kernel, stride, pad, group, index into the kernel counts)
PROGRAM = (
    ("conv1", "Convolution", (11, 4, 0, 1, 0)), ("relu1", "ReLU", None), ("norm1", "LRN", None),
    ("pool1", "Pooling", None),
    ("conv2", "Convolution", (5, 1, 2, 2, 1)), ("relu2", "ReLU", None), ("norm2", "LRN", None),
    ("pool2", "Pooling", None),
    ("conv3", "Convolution", (3, 1, 1, 1, 2)), ("relu3", "ReLU", None),
    ("conv4", "Convolution", (3, 1, 1, 2, 3)), ("relu4", "ReLU", None),
    ("conv5", "Convolution", (3, 1, 1, 2, 4)), ("relu5", "ReLU", None), ("pool5", "Pooling", None),
    ("fc6", "InnerProduct", None), ("relu6", "ReLU", None),
    ("fc7", "InnerProduct", None), ("relu7", "ReLU", None),
    ("fc8", "InnerProduct", None),
)
COMPUTING = {"Convolution", "ReLU", "LRN", "Pooling", "InnerProduct"}
# Layers without effect on a test-time forward pass of AlexNet (data, dropout, softmax, loss, ...).
IGNORED = {"Data", "ImageData", "Input", "MemoryData", "DummyData", "HDF5Data", "WindowData", "Dropout",
           "Softmax", "SoftmaxWithLoss", "Accuracy", "Split", "Silence", "Flatten", "HDF5Output", "NONE"}
_ORDER = " ".join(name for name, _, _ in PROGRAM)


@dataclass
class CaffeAlexNet:
    """The blobs of a checked net (Caffe layouts, float32) and the model options they need."""

    width: float           # model.width: conv1's kernels / 96
    fc_units: int          # fc6, fc7 outputs
    num_classes: int       # fc8 outputs
    blobs: dict            # Caffe layer of PROGRAM -> (weights, bias)
    names: dict            # Caffe layer of PROGRAM -> the name it has in the file

    @property
    def kernels(self):
        """Kernels per conv layer for both towers together, conv1..conv5."""
        return [2 * c for c in tower_channels(2, self.width)]


def _fail(layer, text):
    raise CaffeFileError(f"not bvlc_alexnet's AlexNet: layer {layer.index} {layer.name!r} ({layer.type}) {text}")


def _two(layer, name, default):
    """A ConvolutionParameter / PoolingParameter size given once or as name_h, name_w -> (h, w)."""
    values = layer.params.get(name) or []
    h, w = layer.param(f"{name}_h"), layer.param(f"{name}_w")
    if h is not None or w is not None:
        return (int(h if h is not None else default), int(w if w is not None else default))
    if not values:
        return (default, default)
    return (int(values[0]), int(values[-1]))


def _check_params(layer, expected):
    """The layer's own parameters against bvlc_alexnet's."""
    p = layer.param
    if layer.type == "Convolution":
        kernel, stride, pad, group, _ = expected
        got = dict(kernel=_two(layer, "kernel_size", 0), stride=_two(layer, "stride", 1), pad=_two(layer, "pad", 0),
                   group=int(p("group", 1)), dilation=_two(layer, "dilation", 1), bias_term=int(p("bias_term", 1)))
        want = dict(kernel=(kernel, kernel), stride=(stride, stride), pad=(pad, pad), group=group, dilation=(1, 1),
                    bias_term=1)
    elif layer.type == "Pooling":
        got = dict(pool=int(p("pool", 0)), kernel=_two(layer, "kernel_size", 0), stride=_two(layer, "stride", 1),
                   pad=_two(layer, "pad", 0), global_pooling=int(p("global_pooling", 0)))
        want = dict(pool=0, kernel=(3, 3), stride=(2, 2), pad=(0, 0), global_pooling=0)  # pool 0 = MAX
    elif layer.type == "LRN":
        got = dict(local_size=int(p("local_size", 5)), alpha=float(p("alpha", 1.0)), beta=float(p("beta", 0.75)),
                   k=float(p("k", 1.0)), norm_region=int(p("norm_region", 0)))  # caffe.proto's defaults
        want = dict(LRN, norm_region=0)  # 0 = ACROSS_CHANNELS
    elif layer.type == "ReLU":
        got, want = dict(negative_slope=float(p("negative_slope", 0.0))), dict(negative_slope=0.0)
    else:  # InnerProduct
        got = dict(bias_term=int(p("bias_term", 1)), axis=int(p("axis", 1)), transpose=int(p("transpose", 0)))
        want = dict(bias_term=1, axis=1, transpose=0)
    for key, value in want.items():
        same = np.isclose(got[key], value, rtol=1e-6, atol=0) if isinstance(value, float) else got[key] == value
        if not same:
            _fail(layer, f"has {key} {got[key]}; expected {value} as bvlc_alexnet's {layer.name or 'layer'} "
                         f"({', '.join(f'{k} {v}' for k, v in want.items())})")


def _input_side(structure):
    """The input's (channels, side) stated by the net, if it states one: an Input layer, the net's
    input shapes, or a data layer's crop_size."""
    shapes = list(structure.input_shapes)
    for layer in structure.layers:
        shapes += layer.inputs
        crop = layer.transform.get("crop_size")
        if crop and crop[0]:
            shapes.append((None, 3, int(crop[0]), int(crop[0])))
    for shape in shapes:
        if len(shape) == 4 and (shape[1] not in (None, 3) or shape[2] != IMAGE_SIZE or shape[3] != IMAGE_SIZE):
            raise CaffeFileError(f"not bvlc_alexnet's AlexNet: its input is {'x'.join(str(d) for d in shape[1:] if d)}; "
                                 f"expected 3x{IMAGE_SIZE}x{IMAGE_SIZE} (the network's geometry holds for 227 crops)")


def _program(structure):
    """The net's computing layers, matched one to one with PROGRAM, in order."""
    matched = []
    for layer in structure.layers:
        if layer.type in IGNORED:
            continue
        if layer.type not in COMPUTING:
            _fail(layer, f"has no counterpart in AlexNet; expected only the layers {_ORDER} "
                         "(and data, dropout, softmax, loss layers)")
        if len(matched) == len(PROGRAM):
            _fail(layer, f"comes after fc8; expected the net to end with fc8 ({_ORDER})")
        name, kind, expected = PROGRAM[len(matched)]
        if layer.type != kind:
            _fail(layer, f"stands where AlexNet has {name} ({kind}); expected the order {_ORDER}"
                  + (" (CaffeNet pools before it normalises: a different network)"
                     if name.startswith("norm") and layer.type == "Pooling" else ""))
        _check_params(layer, expected)
        matched.append(layer)
    if len(matched) < len(PROGRAM):
        name, kind, _ = PROGRAM[len(matched)]
        after = f"after {matched[-1].name!r}" if matched else "before any layer"
        raise CaffeFileError(f"not bvlc_alexnet's AlexNet: the net ends {after}; expected {name} ({kind}) next "
                             f"({_ORDER})")
    return matched


def _blob_array(layer, i, shape, what):
    """Blob i of `layer` as a float32 array of `shape`, or a one-line error naming it."""
    if len(layer.blobs) <= i:
        _fail(layer, f"has {len(layer.blobs)} blobs; expected its {what} as blob {i} (a .caffemodel, "
                     "not a deploy.prototxt, holds them)")
    blob = layer.blobs[i]
    got = tuple(blob.shape)
    while len(got) > len(shape) and got[0] == 1:  # legacy 4-D shapes: (1, 1, 1, O) biases, (1, 1, O, I) fc weights
        got = got[1:]
    if got != tuple(shape):
        _fail(layer, f"blob {i} ({what}) has shape {tuple(blob.shape)}; expected {tuple(shape)}")
    if blob.data.size != int(np.prod(shape)):
        _fail(layer, f"blob {i} ({what}) holds {blob.data.size:,} values for its shape {tuple(blob.shape)}; "
                     f"expected {int(np.prod(shape)):,}")
    return np.asarray(blob.data, np.float32).reshape(shape)


def _weights_shape(layer, dims):
    """Blob 0's shape of `layer` without legacy leading 1s, if it has `dims` dimensions, else None (the
    blob checks of check_alexnet report that)."""
    if not layer.blobs:
        return None
    shape = tuple(int(d) for d in layer.blobs[0].shape)
    while len(shape) > dims and shape[0] == 1:
        shape = shape[1:]
    return shape if len(shape) == dims else None


def _agrees(layer, source, channels=None):
    """The num_output, kernel_size and group that `layer` of the net definition (the prototxt, or the
    caffemodel's own layer parameters) states, against the shape of `source`'s weights (the caffemodel's
    layer of that name): a convolution's are (num_output, `channels` / group, kernel_h, kernel_w), an
    InnerProduct's (num_output, inputs). A definition that disagrees with the weights (num_output 62 over
    64 kernels) describes another net, whatever the blobs alone would allow."""
    conv = layer.type == "Convolution"
    shape = _weights_shape(source, 4 if conv else 2)
    if shape is None:
        return  # no or odd weights: _blob_array says so
    where = f"layer {layer.index} {layer.name!r} ({layer.type}) of the net definition says"
    against = f"but the caffemodel's weights of {source.name!r} have shape {shape}"
    expected = "expected the definition that belongs to these weights"
    stated = layer.param("num_output")
    if stated is not None and int(stated) != shape[0]:
        raise CaffeFileError(f"{where} num_output {int(stated)} {against}, {shape[0]} outputs; {expected}")
    if not conv:
        return
    kernel = _two(layer, "kernel_size", 0)
    if kernel != shape[2:]:
        raise CaffeFileError(f"{where} kernel_size {kernel[0]}x{kernel[1]} {against}, {shape[2]}x{shape[3]} "
                             f"kernels; {expected}")
    group = int(layer.param("group", 1))
    if group < 1 or channels % group or channels // group != shape[1]:
        raise CaffeFileError(f"{where} group {group} over its {channels} input channels {against}, kernels "
                             f"reading {shape[1]} channels each; {expected}")


def check_alexnet(structure, weights=None):
    """`structure` (a proto.Net: the caffemodel itself, or a deploy.prototxt) checked against
    bvlc_alexnet, with the blobs of `weights` (the caffemodel; default: `structure`) found by layer
    name as Caffe's Net::CopyTrainedLayersFrom finds them. Returns a `CaffeAlexNet`; raises
    CaffeFileError naming the first layer or blob that does not fit.
    """
    weights = weights or structure
    _input_side(structure)
    matched = _program(structure)
    layers = {name: layer for (name, _, _), layer in zip(PROGRAM, matched)}
    with_blobs = {}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        source = weights.get(layers[name].name) if weights is not structure else layers[name]
        if source is None:
            raise CaffeFileError(f"the caffemodel has no layer {layers[name].name!r} (layer {layers[name].index} of "
                                 f"the prototxt); expected the trained blobs of every Convolution and InnerProduct layer")
        with_blobs[name] = source

    conv1 = with_blobs["conv1"]
    if not conv1.blobs:
        _blob_array(conv1, 0, (PAPER_CONV_CHANNELS[0], 3, 11, 11), "weights")
    out1 = int(conv1.blobs[0].shape[0]) if conv1.blobs[0].shape else 0
    if out1 < 2 or out1 % 2:
        _fail(conv1, f"has {out1} kernels; expected an even count, one half per tower (bvlc_alexnet: 96)")
    width = out1 / PAPER_CONV_CHANNELS[0]
    kernels = [2 * c for c in tower_channels(2, width)]
    scaled = "" if width == 1 else f" (conv1's {out1} kernels scale AlexNet by {width:g})"
    blobs, inputs = {}, 3
    for name, kind, expected in PROGRAM:
        if kind != "Convolution":
            continue
        kernel, _, _, group, i = expected
        layer = with_blobs[name]
        _agrees(layers[name], layer, inputs)
        try:
            w = _blob_array(layer, 0, (kernels[i], inputs // group, kernel, kernel), "weights")
            b = _blob_array(layer, 1, (kernels[i],), "bias")
        except CaffeFileError as e:
            raise CaffeFileError(f"{e.detail}{scaled}") from None
        blobs[name] = (w, b)
        inputs = kernels[i]
    fc6, fc7, fc8 = (with_blobs[n] for n in ("fc6", "fc7", "fc8"))
    for name in ("fc6", "fc7", "fc8"):
        _agrees(layers[name], with_blobs[name])
    units = int(fc6.blobs[0].shape[-2]) if fc6.blobs and len(fc6.blobs[0].shape) >= 2 else 0
    if units < 2 or units % 2:
        _fail(fc6, f"has {units} outputs; expected an even count, one half per tower (bvlc_alexnet: 4096)")
    classes = int(fc8.blobs[0].shape[-2]) if fc8.blobs and len(fc8.blobs[0].shape) >= 2 else 0
    if classes < 2:
        _fail(fc8, f"has {classes} outputs; expected one per class (bvlc_alexnet: 1000)")
    for layer, name, fan_in, out in ((fc6, "fc6", kernels[4] * POOL5_SIDE ** 2, units), (fc7, "fc7", units, units),
                                     (fc8, "fc8", units, classes)):
        try:
            blobs[name] = (_blob_array(layer, 0, (out, fan_in), "weights"), _blob_array(layer, 1, (out,), "bias"))
        except CaffeFileError as e:
            raise CaffeFileError(f"{e.detail}{scaled if name == 'fc6' else ''}") from None
    return CaffeAlexNet(width, units, classes, blobs, {name: layer.name for name, layer in layers.items()})


def keras_weights(net):
    """{Keras layer name: [kernel, bias]} for `alexnet_tf.model.alexnet(towers=2, width=net.width,
    fc_units=net.fc_units, num_classes=net.num_classes, image_size=227)`; see the module docstring."""
    out = {}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        w, b = net.blobs[name]
        kernel = w.transpose(2, 3, 1, 0)                 # (O, I, kh, kw) -> (kh, kw, I, O)
        if name == "conv1":
            kernel = kernel[:, :, ::-1, :]               # BGR -> RGB input channels
        half = w.shape[0] // 2
        for t in range(2):
            out[f"{name}_{t}"] = [kernel[..., t * half:(t + 1) * half], b[t * half:(t + 1) * half]]
    w6, b6 = net.blobs["fc6"]
    c5 = net.kernels[4] // 2
    # Caffe's rows x = pool5[(t c), y, x] -> this model's concat6 = [flatten_t(pool5_t[y, x, c]) for t]
    kernel6 = w6.reshape(-1, 2, c5, POOL5_SIDE, POOL5_SIDE).transpose(1, 3, 4, 2, 0).reshape(-1, w6.shape[0])
    kernels = {"fc6": (kernel6, b6), "fc7": (net.blobs["fc7"][0].T, net.blobs["fc7"][1])}
    for name, (kernel, b) in kernels.items():
        half = kernel.shape[1] // 2
        for t in range(2):
            out[f"{name}_{t}"] = [kernel[:, t * half:(t + 1) * half], b[t * half:(t + 1) * half]]
    out["fc8"] = [net.blobs["fc8"][0].T, net.blobs["fc8"][1]]
    return {name: [np.ascontiguousarray(a, np.float32) for a in arrays] for name, arrays in out.items()}


def load_into(model, net):
    """Set every weight of `model` (built as in `keras_weights`) from the Caffe blobs of `net`."""
    mapped = keras_weights(net)
    with_weights = {layer.name for layer in model.layers if layer.weights}
    if with_weights != set(mapped):
        raise ValueError(f"model layers with weights {sorted(with_weights)}; expected {sorted(mapped)}")
    for name, arrays in mapped.items():
        model.get_layer(name).set_weights(arrays)
