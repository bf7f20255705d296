"""Caffe's files read without Caffe: a .caffemodel (binary NetParameter), a .binaryproto (BlobProto,
the mean image) and a .prototxt (NetParameter in protobuf text format).

The protobuf wire format is read by hand, with the field numbers of BVLC/caffe's
src/caffe/proto/caffe.proto (the tables below): a blob's packed floats become a numpy array over
the file's own bytes (`np.frombuffer`, no copy), so the 61M weights of bvlc_alexnet load in well
under a second, and a file that ends early is told apart from one that is not protobuf at all.

Both layer formats of NetParameter are read into the same `Layer` records:
  layer  = 100  LayerParameter, type a string ("Convolution"), blobs = 7   (Caffe since 2015)
  layers = 2    V1LayerParameter, type an enum (CONVOLUTION = 4), blobs = 6 (the 2014 model zoo)
and both blob shapes: BlobProto.shape (BlobShape.dim) and the legacy num/channels/height/width.
"""

import re
from dataclasses import dataclass, field

import numpy as np


class CaffeFileError(ValueError):
    """A Caffe file that cannot be read: not Caffe's format, truncated, or not AlexNet. One line."""


# === caffe.proto: the fields read here, {field number: (name, kind)} per message ===
# Kinds: "string", "int" (varint: uint32/int32/int64/bool/enum), "float" (fixed32), "floats" (packed
# float, as an array), "doubles" (packed double), or the name of a message. Other fields are skipped.
_MESSAGES = {
    "NetParameter": {1: ("name", "string"), 2: ("layers", "V1LayerParameter"), 3: ("input", "string"),
                     4: ("input_dim", "int"), 8: ("input_shape", "BlobShape"), 100: ("layer", "LayerParameter")},
    "LayerParameter": {1: ("name", "string"), 2: ("type", "string"), 3: ("bottom", "string"), 4: ("top", "string"),
                       7: ("blobs", "BlobProto"), 100: ("transform_param", "TransformationParameter"),
                       106: ("convolution_param", "ConvolutionParameter"),
                       117: ("inner_product_param", "InnerProductParameter"), 118: ("lrn_param", "LRNParameter"),
                       121: ("pooling_param", "PoolingParameter"), 123: ("relu_param", "ReLUParameter"),
                       143: ("input_param", "InputParameter")},
    "V1LayerParameter": {1: ("layer", "V0LayerParameter"), 2: ("bottom", "string"), 3: ("top", "string"),
                         4: ("name", "string"), 5: ("type", "int"), 6: ("blobs", "BlobProto"),
                         10: ("convolution_param", "ConvolutionParameter"),
                         17: ("inner_product_param", "InnerProductParameter"), 18: ("lrn_param", "LRNParameter"),
                         19: ("pooling_param", "PoolingParameter"), 30: ("relu_param", "ReLUParameter"),
                         36: ("transform_param", "TransformationParameter")},
    "V0LayerParameter": {1: ("name", "string")},
    "BlobProto": {1: ("num", "int"), 2: ("channels", "int"), 3: ("height", "int"), 4: ("width", "int"),
                  5: ("data", "floats"), 7: ("shape", "BlobShape"), 8: ("double_data", "doubles")},
    "BlobShape": {1: ("dim", "int")},
    "ConvolutionParameter": {1: ("num_output", "int"), 2: ("bias_term", "int"), 3: ("pad", "int"),
                             4: ("kernel_size", "int"), 5: ("group", "int"), 6: ("stride", "int"),
                             9: ("pad_h", "int"), 10: ("pad_w", "int"), 11: ("kernel_h", "int"), 12: ("kernel_w", "int"),
                             13: ("stride_h", "int"), 14: ("stride_w", "int"), 16: ("axis", "int"), 18: ("dilation", "int")},
    "InnerProductParameter": {1: ("num_output", "int"), 2: ("bias_term", "int"), 5: ("axis", "int"),
                              6: ("transpose", "int")},
    "LRNParameter": {1: ("local_size", "int"), 2: ("alpha", "float"), 3: ("beta", "float"),
                     4: ("norm_region", "int"), 5: ("k", "float")},
    "PoolingParameter": {1: ("pool", "int"), 2: ("kernel_size", "int"), 3: ("stride", "int"), 4: ("pad", "int"),
                         5: ("kernel_h", "int"), 6: ("kernel_w", "int"), 7: ("stride_h", "int"), 8: ("stride_w", "int"),
                         9: ("pad_h", "int"), 10: ("pad_w", "int"), 12: ("global_pooling", "int"),
                         13: ("round_mode", "int")},
    "ReLUParameter": {1: ("negative_slope", "float")},
    "InputParameter": {1: ("shape", "BlobShape")},
    "TransformationParameter": {1: ("scale", "float"), 2: ("mirror", "int"), 3: ("crop_size", "int"),
                                5: ("mean_value", "float")},
}

# Enum values by name, for the text format (binary files hold the numbers).
ENUMS = {
    "pool": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "norm_region": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "round_mode": {"CEIL": 0, "FLOOR": 1},
}

# V1LayerParameter.LayerType -> LayerParameter.type, for the layer types an AlexNet file holds;
# any other V1 type keeps its enum name (it is only reported, never run).
V1_TYPES = {0: "NONE", 1: "Accuracy", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 8: "Flatten",
            12: "ImageData", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU", 20: "Softmax",
            21: "SoftmaxWithLoss", 22: "Split", 29: "MemoryData", 32: "DummyData", 36: "Silence"}
_V1_NAMES = {"ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
             "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
             "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28,
             "IM2COL": 11, "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
             "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
             "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
             "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31}
_V1_BY_NUMBER = {v: k for k, v in _V1_NAMES.items()}


def v1_type(value):
    """A V1LayerParameter.type (enum number, or its name in a prototxt) -> the current type string."""
    number = _V1_NAMES.get(value, value) if isinstance(value, str) else value
    return V1_TYPES.get(number) or _V1_BY_NUMBER.get(number, f"V1 type {value}")


# === Wire format ===

class _Truncated(Exception):
    """A varint or a length-delimited field runs past the end of its message."""


class _Invalid(Exception):
    """Bytes that are not a protobuf message of the expected type."""


_WIRE = {"string": 2, "int": 0, "float": 5, "floats": 2, "doubles": 2}  # messages: 2


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated(pos)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Invalid(f"a varint longer than 10 bytes at byte {pos}")


def _decode(buf, start, end, message, path):
    """Fields of `message` in buf[start:end] -> {name: [values]}; unknown fields are skipped.

    `path` (a list) receives where decoding is, for the error message ("layers[12].blobs[0]").
    """
    table = _MESSAGES[message]
    out = {}
    pos = start
    while pos < end:
        key_at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or wire in (3, 4, 6, 7):  # groups (3, 4) are not used by caffe.proto; 6, 7 do not exist
            raise _Invalid(f"field number {number} with wire type {wire} at byte {key_at}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = pos, pos + 8
        elif wire == 5:
            value, pos = pos, pos + 4
        else:
            length, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        if pos > end:
            if number in table:
                name, kind = table[number]
                named = _peek_name(buf, value[0], end, kind) if wire == 2 and kind in _MESSAGES else None
                path.append(f"{name}[{len(out.get(name, []))}]" + (f" {named!r}" if named else ""))
            raise _Truncated(pos)
        if number not in table:
            continue
        name, kind = table[number]
        expected = _WIRE.get(kind, 2)
        packed = kind in ("int", "float") and wire == 2  # a repeated scalar field may be written packed
        if wire != expected and not packed and not (kind in ("floats", "doubles") and wire in (1, 5)):
            raise _Invalid(f"{message}.{name} (field {number}) at byte {key_at} has wire type {wire}, expected {expected}")
        values = out.setdefault(name, [])
        if kind == "string":
            values.append(bytes(buf[value[0]:value[1]]).decode("utf-8", errors="replace"))
        elif kind == "int":
            if packed:
                p, stop = value
                while p < stop:
                    v, p = _varint(buf, p, stop)
                    values.append(v)
            else:
                values.append(value)
        elif kind == "float":
            lo, hi = value if packed else (value, value + 4)
            values.extend(np.frombuffer(buf[lo:hi], "<f4").tolist())
        elif kind in ("floats", "doubles"):  # packed (Caffe writes these packed), or one element unpacked
            dtype, size = ("<f4", 4) if kind == "floats" else ("<f8", 8)
            lo, hi = (value, value + size) if wire in (1, 5) else value
            if (hi - lo) % size:
                raise _Invalid(f"{message}.{name} at byte {key_at}: {hi - lo} bytes is not a whole number of values")
            values.append(np.frombuffer(buf[lo:hi], dtype))
        else:
            path.append(f"{name}[{len(values)}]")
            values.append(_decode(buf, value[0], value[1], kind, path))
            path.pop()
    return out


def _peek_name(buf, start, end, message):
    """The `name` field of a message cut short, if it comes before the cut (Caffe writes it first)."""
    number = next((n for n, (name, kind) in _MESSAGES[message].items() if name == "name"), None)
    pos = start
    try:
        while pos < end:
            key, pos = _varint(buf, pos, end)
            wire = key & 7
            if wire == 0:
                _, pos = _varint(buf, pos, end)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                length, pos = _varint(buf, pos, end)
                if key >> 3 == number and pos + length <= end:
                    return bytes(buf[pos:pos + length]).decode("utf-8", errors="replace")
                pos += length
            else:
                return None
    except (_Truncated, _Invalid):
        pass
    return None


# === Records ===

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
        return next((layer for layer in self.layers if layer.name == name), None)


_PARAM_FIELDS = ("convolution_param", "inner_product_param", "lrn_param", "pooling_param", "relu_param")


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
    for key in _PARAM_FIELDS:
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


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CaffeFileError(f"cannot read {what} {path} ({e.strerror}); expected a readable file") from None


def _starts_like(buf, message):
    """Whether the file's first field is one of `message`'s, with its wire type: a cut file still
    starts like the message it was; a foreign file (an image, a tar) almost never does."""
    try:
        key, _ = _varint(buf, 0, min(len(buf), 10))
    except (_Truncated, _Invalid):
        return False
    entry = _MESSAGES[message].get(key >> 3)
    return entry is not None and (key & 7) == _WIRE.get(entry[1], 2)


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
        return _decode(memoryview(buf), 0, len(buf), message, trail)
    except _Truncated as e:
        if not _starts_like(buf, message):
            raise CaffeFileError(f"{path} is not a {what}{_hint(buf)}: its first field is not one of {message}'s; "
                                 f"expected {expected}") from None
        where = ".".join(trail) or message
        raise CaffeFileError(f"{path} is truncated: {where} runs past the end of the file (it needs {e.args[0]:,} "
                             f"bytes, the file has {len(buf):,}); expected the complete file (download it again)") from None
    except _Invalid as e:
        raise CaffeFileError(f"{path} is not a {what}{_hint(buf)}: {e.args[0]}; expected {expected}") from None


def read_caffemodel(path):
    """A .caffemodel (binary NetParameter with the trained blobs) -> `Net`."""
    buf = _read(path, "caffemodel")
    if not buf:
        raise CaffeFileError(f"{path} is empty; expected a Caffe .caffemodel (binary NetParameter)")
    fields = _parse(buf, "NetParameter", path, "caffemodel", "a Caffe .caffemodel (binary NetParameter)")
    if not fields.get("layer") and not fields.get("layers"):
        hint = _hint(buf)
        try:
            if _decode(memoryview(buf), 0, len(buf), "BlobProto", []).get("data"):
                hint = " (it is a BlobProto: a mean .binaryproto goes to --mean)"
        except (_Truncated, _Invalid):
            pass
        raise CaffeFileError(f"{path} is not a caffemodel{hint}: it holds no layers (NetParameter.layer or .layers); "
                             "expected a Caffe .caffemodel such as bvlc_alexnet.caffemodel")
    return _net(fields, path)


def read_binaryproto(path):
    """A .binaryproto (one BlobProto, e.g. imagenet_mean.binaryproto) -> `Blob`."""
    buf = _read(path, "mean file")
    expected = "a Caffe .binaryproto BlobProto such as imagenet_mean.binaryproto"
    fields = _parse(buf, "BlobProto", path, "binaryproto mean", expected) if buf else {}
    blob = _blob(fields)
    if not blob.data.size:
        raise CaffeFileError(f"{path} holds no blob data; expected {expected}")
    if int(np.prod(blob.shape)) != blob.data.size:
        raise CaffeFileError(f"{path}: blob shape {blob.shape} needs {int(np.prod(blob.shape)):,} values but holds "
                             f"{blob.data.size:,}; expected {expected}")
    return blob


# === Text format (.prototxt) ===

_TOKEN = re.compile(r'\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|([{}<>:;,\[\]])|([^\s{}<>:;,\[\]"\'#]+)')


def _tokens(text, path):
    pos, out = 0, []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise CaffeFileError(f"{path} line {line}: cannot read {text[pos:pos + 20]!r}; expected protobuf text format")
        pos = m.end()
        if m.group(1) is not None or m.group(2) is not None:
            out.append(("str", m.group(1) if m.group(1) is not None else m.group(2), m.start()))
        elif m.group(3):
            out.append(("sym", m.group(3), m.start()))
        elif m.group(4):
            out.append(("word", m.group(4), m.start()))
    return out


def _scalar(word):
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    return {"true": 1, "false": 0}.get(word, word)  # enum names stay strings


def _text_message(tokens, i, text, path, close=None):
    out = {}
    while i < len(tokens):
        kind, value, at = tokens[i]
        if kind == "sym" and value == close:
            return out, i + 1
        if kind != "word":
            break
        i += 1
        if i < len(tokens) and tokens[i][1] == ":" and tokens[i][0] == "sym":
            i += 1
        if i >= len(tokens):
            break
        nkind, nvalue, _ = tokens[i]
        if nkind == "sym" and nvalue in "{<":
            sub, i = _text_message(tokens, i + 1, text, path, "}" if nvalue == "{" else ">")
            out.setdefault(value, []).append(sub)
        elif nkind == "sym" and nvalue == "[":
            i += 1
            while i < len(tokens) and tokens[i][1] != "]":
                if tokens[i][0] != "sym":
                    out.setdefault(value, []).append(tokens[i][1] if tokens[i][0] == "str" else _scalar(tokens[i][1]))
                i += 1
            i += 1
        elif nkind in ("str", "word"):
            out.setdefault(value, []).append(nvalue if nkind == "str" else _scalar(nvalue))
            i += 1
        else:
            break
        while i < len(tokens) and tokens[i][1] in (";", ","):
            i += 1
    if close is None and i >= len(tokens):
        return out, i
    at = tokens[i][2] if i < len(tokens) else len(text)
    line = text.count("\n", 0, at) + 1
    raise CaffeFileError(f"{path} line {line}: unexpected {'end of file' if i >= len(tokens) else repr(tokens[i][1])}; "
                         "expected protobuf text format (a deploy.prototxt)")


def _text_enums(fields):
    """Enum names of the parameter messages -> their numbers, as in a binary file."""
    for key in _PARAM_FIELDS:
        for p in fields.get(key, []):
            for name, table in ENUMS.items():
                if name in p:
                    p[name] = [table.get(v, v) if isinstance(v, str) else v for v in p[name]]


def read_prototxt(path):
    """A .prototxt (NetParameter in text format, e.g. deploy.prototxt) -> `Net` without blobs."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CaffeFileError(f"cannot read prototxt {path} ({e.strerror}); expected a readable file") from None
    except UnicodeDecodeError:
        raise CaffeFileError(f"{path} is not a text file; expected a Caffe .prototxt (a binary .caffemodel goes to "
                             "--caffemodel)") from None
    fields, _ = _text_message(_tokens(text, path), 0, text, path)
    for layer in fields.get("layer", []) + fields.get("layers", []):
        _text_enums(layer)
    if not fields.get("layer") and not fields.get("layers"):
        raise CaffeFileError(f"{path} holds no layers (layer {{ ... }} or layers {{ ... }}); expected a Caffe "
                             "net definition such as models/bvlc_alexnet/deploy.prototxt")
    return _net(fields, path)
