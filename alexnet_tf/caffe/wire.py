"""The protobuf binary wire format, read by hand with the fields of schema.py.

A blob's packed floats become a numpy array over the file's own bytes (`np.frombuffer`), so the
61M weights of bvlc_alexnet are not copied or parsed one by one; a field that runs past the end of
its message raises `Truncated`, bytes that cannot be the expected message raise `Invalid`.
"""

import numpy as np

from alexnet_tf.caffe.schema import MESSAGES, WIRE_TYPES


class Truncated(Exception):
    """A varint or a length-delimited field runs past the end of its message."""


class Invalid(Exception):
    """Bytes that are not a protobuf message of the expected type."""


def varint(buf, pos, end):
    """The varint at buf[pos] -> (its value, the position after it)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise Truncated(pos)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise Invalid(f"a varint longer than 10 bytes at byte {pos}")


def _field(buf, pos, end):
    """The field at buf[pos] -> (number, wire type, value, the position after it), the position past
    `end` when the field is cut. The value is a varint's number, a fixed-size field's offset or a
    length-delimited field's (start, stop)."""
    key_at = pos
    key, pos = varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0 or wire in (3, 4, 6, 7):  # groups (3, 4) are not used by caffe.proto; 6, 7 do not exist
        raise Invalid(f"field number {number} with wire type {wire} at byte {key_at}")
    if wire == 0:
        value, pos = varint(buf, pos, end)
        return number, wire, value, pos
    if wire in (1, 5):
        return number, wire, pos, pos + (8 if wire == 1 else 4)
    length, pos = varint(buf, pos, end)
    return number, wire, (pos, pos + length), pos + length


def _values(buf, kind, wire, value, packed, where):
    """The values of one occurrence of a scalar field (a packed one holds several); `where` names it in errors."""
    if kind == "string":
        return [bytes(buf[value[0]:value[1]]).decode("utf-8", errors="replace")]
    if kind == "int":
        if not packed:
            return [value]
        out, (p, stop) = [], value
        while p < stop:
            v, p = varint(buf, p, stop)
            out.append(v)
        return out
    if kind == "float":
        lo, hi = value if packed else (value, value + 4)
        return np.frombuffer(buf[lo:hi], "<f4").tolist()
    # "floats", "doubles": packed (Caffe writes these packed), or one element unpacked; one array either way
    dtype, size = ("<f4", 4) if kind == "floats" else ("<f8", 8)
    lo, hi = (value, value + size) if wire in (1, 5) else value
    if (hi - lo) % size:
        raise Invalid(f"{where}: {hi - lo} bytes is not a whole number of values")
    return [np.frombuffer(buf[lo:hi], dtype)]


def decode(buf, start, end, message, path):
    """Fields of `message` in buf[start:end] -> {name: [values]}; unknown fields are skipped.

    `path` (a list) receives where decoding is, for the error message ("layers[12].blobs[0]").
    Recursive for nested messages, but only along schema.MESSAGES, which has no cycle: a file cannot
    nest deeper than the schema (NetParameter > LayerParameter > BlobProto > BlobShape), however it is made.
    """
    table = MESSAGES[message]
    out = {}
    pos = start
    while pos < end:
        key_at = pos
        number, wire, value, pos = _field(buf, pos, end)
        if pos > end:
            if number in table:
                name, kind = table[number]
                named = peek_name(buf, value[0], end, kind) if wire == 2 and kind in MESSAGES else None
                path.append(f"{name}[{len(out.get(name, []))}]" + (f" {named!r}" if named else ""))
            raise Truncated(pos)
        if number not in table:
            continue
        name, kind = table[number]
        expected = WIRE_TYPES.get(kind, 2)
        packed = kind in ("int", "float") and wire == 2  # a repeated scalar field may be written packed
        if wire != expected and not packed and not (kind in ("floats", "doubles") and wire in (1, 5)):
            raise Invalid(f"{message}.{name} (field {number}) at byte {key_at} has wire type {wire}, expected {expected}")
        values = out.setdefault(name, [])
        if kind in MESSAGES:
            path.append(f"{name}[{len(values)}]")
            values.append(decode(buf, value[0], value[1], kind, path))
            path.pop()
        else:
            values.extend(_values(buf, kind, wire, value, packed, f"{message}.{name} at byte {key_at}"))
    return out


def peek_name(buf, start, end, message):
    """The `name` field of a message cut short, if it comes before the cut (Caffe writes it first)."""
    number = next((n for n, (name, kind) in MESSAGES[message].items() if name == "name"), None)
    pos = start
    try:
        while pos < end:
            key, pos = varint(buf, pos, end)
            wire = key & 7
            if wire == 0:
                _, pos = varint(buf, pos, end)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                length, pos = varint(buf, pos, end)
                if key >> 3 == number and pos + length <= end:
                    return bytes(buf[pos:pos + length]).decode("utf-8", errors="replace")
                pos += length
            else:
                return None
    except (Truncated, Invalid):
        pass
    return None


def starts_like(buf, message):
    """Whether the file's first field is one of `message`'s, with its wire type: a cut file still
    starts like the message it was; a foreign file (an image, a tar) almost never does."""
    try:
        key, _ = varint(buf, 0, min(len(buf), 10))
    except (Truncated, Invalid):
        return False
    entry = MESSAGES[message].get(key >> 3)
    return entry is not None and (key & 7) == WIRE_TYPES.get(entry[1], 2)
