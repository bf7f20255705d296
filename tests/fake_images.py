"""Small image files of every kind the input pipeline meets, with the pixels they should decode to.

Images are blocks of flat colour (10x10 px each), so JPEG's error is small and a decoded image
can be compared with the pixels it was made from.
"""

import io
import os
import tarfile

import numpy as np
from PIL import Image

BLOCK = 10


def pixels(height, width, seed):
    """uint8 (height, width, 3) made of BLOCK x BLOCK flat-colour blocks."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, (-(-height // BLOCK), -(-width // BLOCK), 3))
    return np.kron(coarse, np.ones((BLOCK, BLOCK, 1)))[:height, :width].astype(np.uint8)


def encode(rgb, kind):
    """Bytes of `rgb` as: jpeg, cmyk (a CMYK JPEG, as 22 ILSVRC training images), grey (a 1-channel
    JPEG), png, rgba_png, or a bad file: truncated, empty, text."""
    b = io.BytesIO()
    image = Image.fromarray(rgb)
    if kind == "jpeg":
        image.save(b, "JPEG", quality=95, subsampling=0)
    elif kind == "cmyk":
        image.convert("CMYK").save(b, "JPEG", quality=95, subsampling=0)
    elif kind == "grey":
        image.convert("L").save(b, "JPEG", quality=95, subsampling=0)
    elif kind == "png":
        image.save(b, "PNG")
    elif kind == "rgba_png":
        image.convert("RGBA").save(b, "PNG")
    elif kind == "truncated":
        image.save(b, "JPEG", quality=95, subsampling=0)
        return b.getvalue()[: len(b.getvalue()) // 3]
    elif kind == "empty":
        return b""
    elif kind == "text":
        return b"this is not an image\n"
    else:
        raise ValueError(kind)
    return b.getvalue()


def expected(rgb, kind):
    """What a correct decoder returns for `encode(rgb, kind)` (before JPEG error): RGB, grey on 3 channels."""
    if kind == "grey":
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        return np.repeat(grey[..., None], 3, axis=2)
    return rgb


def add_to_tar(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_fake_ilsvrc(manual_dir, train, val_kinds, val_size=(40, 60)):
    """ILSVRC2012_img_train.tar (one nXXXXXXXX.tar per synset inside) and ILSVRC2012_img_val.tar
    (flat ILSVRC2012_val_000000NN.JPEG) in the real layout.

    train: {synset: [(file name, kind, (h, w))]}; val_kinds: the kind of each validation image.
    Returns {file name: source pixels}.
    """
    os.makedirs(manual_dir, exist_ok=True)
    sources, seed = {}, 0
    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
        for synset, files in train.items():
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for name, kind, (h, w) in files:
                    rgb = pixels(h, w, seed)
                    seed += 1
                    sources[name] = expected(rgb, kind)
                    add_to_tar(inner, name, encode(rgb, kind))
            add_to_tar(outer, f"{synset}.tar", inner_bytes.getvalue())
    with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as tar:
        for i, kind in enumerate(val_kinds):
            name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
            rgb = pixels(*val_size, seed)
            seed += 1
            sources[name] = expected(rgb, kind)
            add_to_tar(tar, name, encode(rgb, kind))
    return sources
