"""Caffe's files read without Caffe: a .caffemodel (binary NetParameter), a .binaryproto (BlobProto,
the mean image) and a .prototxt (NetParameter in protobuf text format), as `Net`, `Layer` and `Blob`.

The bytes are decoded by hand (wire.py, text_format.py) with the field numbers of BVLC/caffe's
src/caffe/proto/caffe.proto (schema.py); a file that ends early is told apart from one that is not
protobuf at all, each with a one-line `CaffeFileError`.

Both layer formats of NetParameter are read into the same `Layer` records:
  layer  = 100  LayerParameter, type a string ("Convolution"), blobs = 7   (Caffe since 2015)
  layers = 2    V1LayerParameter, type an enum (CONVOLUTION = 4), blobs = 6 (the 2014 model zoo)
and both blob shapes: BlobProto.shape (BlobShape.dim) and the legacy num/channels/height/width.
"""

from dataclasses import dataclass, field

import numpy as np

from alexnet_tf.caffe import CaffeFileError, text_format, wire
from alexnet_tf.caffe.schema import PARAM_FIELDS, v1_type
from alexnet_tf.user_files import read_user_file


@dataclass
class Blob:
    shape: tuple         # BlobShape.dim, or the legacy (num, channels, height, width)
    data: np.ndarray     # float32 (or float64 from double_data), flat
    legacy: bool = False  # the shape came from num/channels/height/width


@dataclass
class Layer:
    index: int           # position in the file
    name: str
    type: str            # LayerParameter.type: "Convolution", "LRN", ... (V1 enums translated)
    bottoms: tuple
    tops: tuple
    params: dict         # the type's parameter message as {field name: [values]}, e.g. convolution_param
    blobs: list = field(default_factory=list)
    transform: dict = field(default_factory=dict)  # transform_param of a data layer
    inputs: list = field(default_factory=list)     # input_param shapes of an Input layer

    def param(self, name, default=None):
        """The first value of a field of the layer's parameter message, or `default`."""
        values = self.params.get(name)
        return values[0] if values else default


@dataclass
class Net:
    name: str
    layers: list
    format: str          # "layer" (LayerParameter) or "layers" (V1LayerParameter)
    input_shapes: list   # NetParameter.input_shape / input_dim, as tuples

    def get(self, name):
        """The layer named `name`, or None."""
        return next((layer for layer in self.layers if layer.name == name), None)


def _blob(fields):
    if "shape" in fields:
        shape, legacy = tuple(int(d) for d in fields["shape"][0].get("dim", [])), False
    else:
        shape, legacy = tuple(int(fields.get(k, [0])[0]) for k in ("num", "channels", "height", "width")), True
    parts = fields.get("data") or fields.get("double_data") or []
    data = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.zeros(0, np.float32))
    return Blob(shape, data, legacy)


def _layer(index, fields, v1):
    if v1 and "layer" in fields and "type" not in fields:
        raise CaffeFileError(f"layers[{index}] is a V0LayerParameter (Caffe before 2014); expected the V1 or current "
                             "layer format (upgrade it with Caffe's tools/upgrade_net_proto_binary)")
    type_ = fields.get("type", [""])[0]
    params = {}
    for key in PARAM_FIELDS:
        if key in fields:
            params = fields[key][0]
    inputs = [tuple(int(d) for d in s.get("dim", [])) for p in fields.get("input_param", []) for s in p.get("shape", [])]
    return Layer(index=index, name=fields.get("name", [""])[0], type=v1_type(type_) if v1 else str(type_),
                 bottoms=tuple(fields.get("bottom", [])), tops=tuple(fields.get("top", [])), params=params,
                 blobs=[_blob(b) for b in fields.get("blobs", [])],
                 transform=fields.get("transform_param", [{}])[0], inputs=inputs)


def _net(fields, source):
    new, old = fields.get("layer", []), fields.get("layers", [])
    if new and old:
        raise CaffeFileError(f"{source} holds both layer formats (layer and layers); expected one")
    layers = [_layer(i, f, v1=not new) for i, f in enumerate(new or old)]
    shapes = [tuple(int(d) for d in s.get("dim", [])) for s in fields.get("input_shape", [])]
    dims = [int(d) for d in fields.get("input_dim", [])]
    shapes += [tuple(dims[i:i + 4]) for i in range(0, len(dims) - 3, 4)]
    return Net(fields.get("name", [""])[0], layers, "layer" if new else "layers", shapes)


def _read(path, kind, label):
    """The bytes of a file the user named (user_files: a regular file within its kind's size limit)."""
    return read_user_file(path, kind, label, CaffeFileError)


def _hint(buf):
    """What a foreign file looks like, for the error message."""
    head = bytes(buf[:256])
    if head.startswith((b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM")):
        return " (it is an image)"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return " (it is text: a net definition .prototxt goes to --prototxt)"
    return ""


def _parse(buf, message, path, what, expected):
    """Decode a whole file as `message`, with one-line errors for a cut or a foreign file."""
    trail = []
    try:
        return wire.decode(memoryview(buf), 0, len(buf), message, trail)
    except wire.Truncated as e:
        if not wire.starts_like(buf, message):
            raise CaffeFileError(f"{path} is not a {what}{_hint(buf)}: its first field is not one of {message}'s; "
                                 f"expected {expected}") from None
        where = ".".join(trail) or message
        raise CaffeFileError(f"{path} is truncated: {where} runs past the end of the file (it needs {e.args[0]:,} "
                             f"bytes, the file has {len(buf):,}); expected the complete file (download it again)") from None
    except wire.Invalid as e:
        raise CaffeFileError(f"{path} is not a {what}{_hint(buf)}: {e.args[0]}; expected {expected}") from None


def read_caffemodel(path):
    """A .caffemodel (binary NetParameter with the trained blobs) -> `Net`."""
    buf = _read(path, "caffemodel", "--caffemodel ")
    if not buf:
        raise CaffeFileError(f"{path} is empty; expected a Caffe .caffemodel (binary NetParameter)")
    fields = _parse(buf, "NetParameter", path, "caffemodel", "a Caffe .caffemodel (binary NetParameter)")
    if not fields.get("layer") and not fields.get("layers"):
        hint = _hint(buf)
        try:
            if wire.decode(memoryview(buf), 0, len(buf), "BlobProto", []).get("data"):
                hint = " (it is a BlobProto: a mean .binaryproto goes to --mean)"
        except (wire.Truncated, wire.Invalid):
            pass
        raise CaffeFileError(f"{path} is not a caffemodel{hint}: it holds no layers (NetParameter.layer or .layers); "
                             "expected a Caffe .caffemodel such as bvlc_alexnet.caffemodel")
    return _net(fields, path)


def read_binaryproto(path):
    """A .binaryproto (one BlobProto, e.g. imagenet_mean.binaryproto) -> `Blob`."""
    buf = _read(path, "mean", "--mean ")
    expected = "a Caffe .binaryproto BlobProto such as imagenet_mean.binaryproto"
    fields = _parse(buf, "BlobProto", path, "binaryproto mean", expected) if buf else {}
    blob = _blob(fields)
    if not blob.data.size:
        raise CaffeFileError(f"{path} holds no blob data; expected {expected}")
    if int(np.prod(blob.shape)) != blob.data.size:
        raise CaffeFileError(f"{path}: blob shape {blob.shape} needs {int(np.prod(blob.shape)):,} values but holds "
                             f"{blob.data.size:,}; expected {expected}")
    return blob


def read_prototxt(path):
    """A .prototxt (NetParameter in text format, e.g. deploy.prototxt) -> `Net` without blobs."""
    try:
        text = _read(path, "prototxt", "--prototxt ").decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeFileError(f"{path} is not a text file; expected a Caffe .prototxt (a binary .caffemodel goes to "
                             "--caffemodel)") from None
    fields = text_format.parse(text, path)
    for layer in fields.get("layer", []) + fields.get("layers", []):
        text_format.enum_numbers(layer)
    if not fields.get("layer") and not fields.get("layers"):
        raise CaffeFileError(f"{path} holds no layers (layer {{ ... }} or layers {{ ... }}); expected a Caffe "
                             "net definition such as models/bvlc_alexnet/deploy.prototxt")
    return _net(fields, path)
