"""The protobuf text format of a .prototxt (e.g. deploy.prototxt), read by hand.

Text fields become the same {name: [values]} dicts the binary decoder (wire.py) gives, with
nested messages as such dicts; `enum_numbers` turns enum names into the numbers a binary file holds.
"""

import re

from alexnet_tf.caffe import CaffeFileError
from alexnet_tf.caffe.schema import ENUMS, PARAM_FIELDS

# Messages nested deeper than this are refused (protobuf's own parsers stop at 100 too); a Caffe net
# definition nests 3 or 4 levels (net > layer > convolution_param > weight_filler).
MAX_DEPTH = 100
_TOKEN = re.compile(r'\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|([{}<>:;,\[\]])|([^\s{}<>:;,\[\]"\'#]+)')


def _tokens(text, path):
    """text -> [(kind, value, offset)], kind "str" (a quoted string), "sym" ({}<>:;,[]) or "word"."""
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
    """An unquoted value: an int, a float, true/false as 1/0, else the word (an enum name)."""
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    return {"true": 1, "false": 0}.get(word, word)  # enum names stay strings


def parse(text, path):
    """Protobuf text format -> {name: [values]} (a nested message as such a dict, enum names as strings);
    `path` names the file in the one-line errors."""
    fields, _ = _text_message(_tokens(text, path), 0, text, path)
    return fields


def _text_message(tokens, i, text, path, close=None, depth=0):
    """The fields of the message starting at tokens[i] up to `close` (the end for the outermost)
    -> (fields, the index after it). Recursive for nested messages, at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        line = text.count("\n", 0, tokens[i - 1][2]) + 1
        raise CaffeFileError(f"{path} line {line}: messages nested more than {MAX_DEPTH} deep; expected a Caffe "
                             "net definition (a few levels: layer { convolution_param { ... } })")
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
            sub, i = _text_message(tokens, i + 1, text, path, "}" if nvalue == "{" else ">", depth + 1)
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


def enum_numbers(fields):
    """Enum names of a layer's parameter messages -> their numbers, as in a binary file (in place)."""
    for key in PARAM_FIELDS:
        for p in fields.get(key, []):
            for name, table in ENUMS.items():
                if name in p:
                    p[name] = [table.get(v, v) if isinstance(v, str) else v for v in p[name]]
