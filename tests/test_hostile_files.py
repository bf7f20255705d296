"""Files a user names that are not what their names say: FIFOs (mkfifo), /dev/zero, directories, sockets,
symbolic link loops, 2 GB sparse files (truncate), links out of a dataset, and images whose headers
declare more pixels than the decoders decode. Every one is the real thing, made here; each costs one
line (or, in a folder dataset, a count and a warning), never a hang, a traceback or unbounded memory.

The commands run in one child process whose address space is capped (RLIMIT_AS) at its own peak after a
normal predict plus CAP_MARGIN, with a timeout: a regression that reads /dev/zero or decodes a 13,000^2
PNG fails there instead of calling the machine's out-of-memory killer, and one that opens a FIFO hangs
only until the timeout.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from alexnet_tf import user_files
from alexnet_tf.data import decode
from alexnet_tf.data.errors import DatasetNotFound
from alexnet_tf.data.sources import folder_source
from alexnet_tf.errors import ConfigError
from alexnet_tf.user_files import LIMITS, FileRefused, check_user_file, read_user_file
from conftest import ROOT, run_main
from fake_images import encode, pixels

IMAGE = "an image file (JPEG, PNG, GIF, BMP or WebP)"
CAP_MARGIN = 2 << 30  # bytes of address space above a normal predict's peak (a 4096^2 RGBA PNG needs ~1.35 GB)


@pytest.fixture(autouse=True)
def no_hang(request):
    """An in-process test that blocks (an open of a FIFO) fails after 60 s instead of hanging the suite
    (the child process of the slow test has its own timeout)."""
    if request.node.get_closest_marker("slow"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError("blocked for 60 s (opened a FIFO?)")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def sparse(path, size="2G"):
    subprocess.run(["truncate", "-s", size, str(path)], check=True)  # a hole: no disk, no page cache
    return str(path)


def unix_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # the socket file stays after the socket is closed
    s.close()
    return str(path)


@pytest.fixture(scope="module")
def specials(tmp_path_factory):
    """{name: path} of one of each: FIFO, character device, directory, symbolic link loop, dangling
    link, missing file, socket, a 2 GB sparse .jpg."""
    d = tmp_path_factory.mktemp("specials")
    os.mkfifo(d / "fifo.jpg")
    os.symlink("loop.jpg", d / "loop.jpg")
    os.symlink("nowhere.jpg", d / "dangling.jpg")
    (d / "dir.jpg").mkdir()
    return {"fifo": str(d / "fifo.jpg"), "device": "/dev/zero", "dir": str(d / "dir.jpg"), "loop": str(d / "loop.jpg"),
            "dangling": str(d / "dangling.jpg"), "missing": str(d / "missing.jpg"),
            "socket": unix_socket(d / "sock.jpg"), "sparse": sparse(d / "huge.jpg")}


WHY = {"fifo": "a FIFO", "device": "a character device", "dir": "a directory", "loop": "a symbolic link loop",
       "dangling": "No such file or directory", "missing": "No such file or directory", "socket": "a socket"}


def test_what_is_not_a_regular_file_is_refused_before_it_is_opened(specials):
    """Every kind of file, every special file: one line naming it and why; a FIFO does not block."""
    for kind, limit in LIMITS.items():
        for name, path in specials.items():
            if name == "sparse" and limit.limit >= 2 << 30:
                continue  # within the model kind's 4 GiB: below
            if name == "device" and limit.limit > 256 << 20:
                continue  # a regression would read up to the limit here, uncapped: the capped child covers it
            for read in (check_user_file, read_user_file):
                with pytest.raises(FileRefused) as e:
                    read(path, kind, "--x ")
                assert str(e.value) == (
                    f"error: --x {path} is 2,147,483,648 bytes; expected {limit.expected} of at most {limit.limit:,} bytes"
                    if name == "sparse" else f"error: cannot read --x {path} ({WHY[name]}); expected {limit.expected}")
    # the model kind (4 GiB) takes the 2 GB file: it is a regular file, and only checked
    assert check_user_file(specials["sparse"], "model") == 2 << 30


def test_a_file_longer_than_its_stat_size_is_still_read_bounded(monkeypatch, tmp_path):
    """/proc/self/cmdline: a regular file whose stat says 0 bytes; read with a 10-byte limit, the read
    stops after 11 bytes and says so, as for a file that grows while it is read."""
    monkeypatch.setitem(LIMITS, "words", user_files.Kind(10, "a word list"))
    assert os.stat("/proc/self/cmdline").st_size == 0 and len(open("/proc/self/cmdline", "rb").read()) > 10
    with pytest.raises(FileRefused, match=r"^error: /proc/self/cmdline grew to more than 10 bytes while it was read; "
                                          r"expected a word list of at most 10 bytes$"):
        read_user_file("/proc/self/cmdline", "words")
    (tmp_path / "ten").write_bytes(b"0123456789")
    assert read_user_file(str(tmp_path / "ten"), "words") == b"0123456789"  # the limit itself is read


def test_config_files_and_keys_naming_files_are_config_errors(specials, capsys, monkeypatch, tmp_path):
    """--config, data.stats_file and train.init_from at special files: exit 2, one line, before TensorFlow."""
    from alexnet_tf import config as config_lib
    from alexnet_tf import run_dir, train_command
    for name in ("fifo", "device", "loop", "dir", "socket"):
        with pytest.raises(ConfigError, match=rf"^config error: cannot read config file {specials[name]} "
                                              rf"\({WHY[name]}\); expected a YAML config$"):
            config_lib.load_config(specials[name])
    os.mkfifo(tmp_path / "model.keras")
    with pytest.raises(ConfigError, match=r"cannot read train.init_from .*model.keras \(a FIFO\); expected a Keras"):
        run_dir.init_weights_file(str(tmp_path / "model.keras"))
    for name in ("tensorflow", "keras", "alexnet_tf.training"):
        monkeypatch.setitem(sys.modules, name, None)
    status, out, err = run_main(capsys, train_command.main, ["--set", f"data.stats_file={specials['fifo']}",
                                                             "--run-dir", tmp_path / "run"])
    assert status == 2 and err.strip().splitlines() == [
        f"config error: cannot read data.stats_file {specials['fifo']} (a FIFO); expected a stats .npz "
        "(python -m alexnet_tf stats)"]
    assert not os.path.exists(tmp_path / "run")


# === The folder source ===

def hostile_folder(root, outside):
    """A folder dataset of 4 good training images and 2 validation images, among them by hand: in
    train/cat a symbolic link loop and a FIFO; in train/dog a directory named x.jpg, a socket, a 2 GB
    sparse .jpg, a link to an image outside the root and a link to an image inside it (kept)."""
    for split, cls, name, seed in (("train", "cat", "a.jpg", 1), ("train", "cat", "b.jpg", 2), ("train", "dog", "c.jpg", 3),
                                   ("val", "cat", "v1.jpg", 4), ("val", "dog", "v2.jpg", 5)):
        os.makedirs(root / split / cls, exist_ok=True)
        (root / split / cls / name).write_bytes(encode(pixels(40, 40, seed), "jpeg"))
    os.makedirs(outside, exist_ok=True)
    (outside / "o.jpg").write_bytes(encode(pixels(40, 40, 6), "jpeg"))
    cat, dog = root / "train" / "cat", root / "train" / "dog"
    os.symlink("loop.jpg", cat / "loop.jpg")
    os.mkfifo(cat / "fifo.jpg")
    (dog / "x.jpg").mkdir()
    unix_socket(dog / "sock.jpg")
    sparse(dog / "huge.jpg")
    os.symlink(outside / "o.jpg", dog / "out.jpg")
    os.symlink("../cat/a.jpg", dog / "inside.jpg")
    return root


def test_the_folder_listing_skips_and_counts_what_is_not_an_image_file(tmp_path, capsys):
    root = hostile_folder(tmp_path / "data", tmp_path / "elsewhere")
    train, val, classes = folder_source(str(root))
    err = capsys.readouterr().err.strip().splitlines()
    names = sorted(os.path.relpath(p, root) for p in train.paths)
    assert names == ["train/cat/a.jpg", "train/cat/b.jpg", "train/dog/c.jpg", "train/dog/inside.jpg"] and val.size == 2
    assert list(train.labels) == [0, 0, 1, 1]
    refused = {os.path.relpath(r["name"], root): r["reason"] for r in train.refused}
    limit = LIMITS["image"].limit
    assert refused == {
        "train/cat/fifo.jpg": "a FIFO", "train/cat/loop.jpg": "a symbolic link loop",
        "train/dog/huge.jpg": f"larger than the {limit:,}-byte image limit", "train/dog/sock.jpg": "a socket",
        "train/dog/x.jpg": "a directory",
        "train/dog/out.jpg": f"a symbolic link that resolves to {tmp_path / 'elsewhere' / 'o.jpg'}, outside the dataset root"}
    assert err[0] == (f"warning: skipping {root}/train/dog/out.jpg: a symbolic link that resolves to "
                      f"{tmp_path / 'elsewhere' / 'o.jpg'}, outside the dataset root (set data.follow_symlinks_outside: "
                      "true to read it)")
    assert err[1] == (f"warning: skipped 6 entries of {root}/train that are not image files to read (a FIFO: 1, a symbolic "
                      f"link loop: 1, larger than the {limit:,}-byte image limit: 1, outside the dataset root: 1, a socket: 1, "
                      f"a directory: 1), e.g. {root}/train/cat/fifo.jpg (a FIFO), {root}/train/cat/loop.jpg (a symbolic "
                      f"link loop), {root}/train/dog/huge.jpg (larger than the {limit:,}-byte image limit) ...")
    assert len(err) == 2 and not val.refused
    # data.follow_symlinks_outside: the outside image is read, and nothing is said about it
    train, _, _ = folder_source(str(root), follow_outside=True)
    assert sorted(os.path.basename(p) for p in train.paths) == ["a.jpg", "b.jpg", "c.jpg", "inside.jpg", "out.jpg"]
    assert len(train.refused) == 5 and "outside" not in capsys.readouterr().err


def test_a_class_folder_linked_from_outside_is_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("train", "val"):
        os.makedirs(root / split / "cat")
        (root / split / "cat" / "a.jpg").write_bytes(encode(pixels(40, 40, 1), "jpeg"))
    os.makedirs(tmp_path / "elsewhere" / "dog")
    for i in range(5):
        (tmp_path / "elsewhere" / "dog" / f"{i}.jpg").write_bytes(encode(pixels(40, 40, i), "jpeg"))
    os.symlink(tmp_path / "elsewhere" / "dog", root / "train" / "dog")
    train, _, classes = folder_source(str(root))
    assert classes == ("cat", "dog") and train.size == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "outside" in line and "skipping" in line]
    assert lines == [f"warning: skipping {root}/train/dog: the class folder resolves to {tmp_path}/elsewhere/dog, "
                     "outside the dataset root (set data.follow_symlinks_outside: true to read it)"]
    assert folder_source(str(root), follow_outside=True)[0].size == 6
    # a split folder that resolves outside: nothing of it is read, and the run stops in one line
    os.rename(root / "val", tmp_path / "val_elsewhere")
    os.symlink(tmp_path / "val_elsewhere", root / "val")
    with pytest.raises(DatasetNotFound, match=rf"^{root}/val resolves to {tmp_path}/val_elsewhere, outside the dataset "
                                              rf"root {root}; expected the split folder inside it, or set "
                                              "data.follow_symlinks_outside: true$"):
        folder_source(str(root))
    assert folder_source(str(root), follow_outside=True)[1].size == 1


# === Decoded pixels ===

def declaring(data, fmt, height, width):
    """Real image bytes whose header is patched to declare height x width (nothing else changed)."""
    import struct
    if fmt == "PNG":
        return data[:16] + struct.pack(">II", width, height) + data[24:]
    sof = data.index(b"\xff\xc0") + 5
    return data[:sof] + struct.pack(">HH", height, width) + data[sof + 4:]


def test_no_image_is_decoded_to_more_than_the_pixel_limit():
    """A PNG declaring 13,000^2 (169 MP, under the old 179 MP bomb limit: 2 GB as float32) is refused from
    its header by both decoders; so is a JPEG too thin to be decoded downscaled (65,000 x 300: its shorter
    side allows no reduced scale at resize 256), by the evaluation decoder that would decode it whole."""
    assert decode.MAX_PIXELS == 4096 * 4096
    png = encode(pixels(28, 28, 0), "png")
    fn = tf.function(lambda b: decode.decode_image(b[0], 3, 2, min_side=256))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[2\] declares 13000x13000 pixels \(width x "
                                                             r"height\); the limit is 16777216 pixels"):
        fn(tf.constant([declaring(png, "PNG", 13000, 13000)]))
    assert "the image declares 13000x13000 pixels" in decode.decode_error(declaring(png, "PNG", 13000, 13000))
    thin = declaring(encode(pixels(28, 28, 0), "jpeg"), "JPEG", 300, 65000)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[2\] declares 65000x300 pixels \(width x "
                                                             r"height\), 19500000 pixels decoded .*the limit is 16777216"):
        fn(tf.constant([thin]))
    assert fn(tf.constant([png])).shape == (28, 28, 3)  # and the next image is decoded


# === The commands, in one capped child process ===

CHILD = textwrap.dedent("""
    import contextlib, io, json, resource, sys
    from alexnet_tf.__main__ import main

    def run(argv):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = main(argv)
        except BaseException as e:  # a regression: a MemoryError, a traceback
            status = f"{type(e).__name__}: {str(e)[:300]}"
        return {"status": status, "err": [line for line in err.getvalue().splitlines() if line.strip()]}

    warm, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    assert run(warm)["status"] == 0
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    peak = int(status["VmPeak"].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (peak + int(sys.argv[3]), resource.RLIM_INFINITY))
    for name, argv in cases:
        print("RESULT " + json.dumps([name, run(argv)]), flush=True)
""")


def run_capped(warm, cases, timeout=600):
    env = dict(os.environ, MALLOC_ARENA_MAX="2", TF_CPP_MIN_LOG_LEVEL="3")  # fewer 64 MB malloc arenas: a steadier cap
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(warm), json.dumps(cases), str(CAP_MARGIN)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    results = dict(json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    assert len(results) == len(cases), (proc.returncode, proc.stderr[-3000:])
    return results


@pytest.mark.slow
def test_commands_on_special_files_cost_one_line_under_a_memory_cap(tiny_run, specials, tmp_path):
    """predict, neighbours and import-caffe on /dev/zero, FIFOs, a directory, a symbolic link loop, a 2 GB
    sparse .jpg, a real 13,000^2 PNG; train.py on the hostile folder dataset: each finishes (exit 1 and one
    line, or training with the entries counted out) within the capped address space."""
    from test_caffe_import import SMALL, alexnet_specs, net_bytes
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(small)
    Image.new("L", (13000, 13000)).save(tmp_path / "big.png")           # 169 MP: 2 GB as float32
    Image.new("RGBA", (4096, 4096), (10, 20, 30, 128)).save(tmp_path / "rgba.png")  # the limit itself
    caffemodel = tmp_path / "net.caffemodel"
    caffemodel.write_bytes(net_bytes(alexnet_specs(**SMALL), v1=False))
    root = hostile_folder(tmp_path / "data", tmp_path / "elsewhere")
    predict = ["predict", "--run-dir", tiny_run]
    caffe = ["import-caffe", "--run-dir", str(tmp_path / "caffe_run"), "--set", "data.source=folder",
             "--set", "data.path=x"]
    train = ["train", "--run-dir", str(tmp_path / "run"), "--set", "data.source=folder", "--set", f"data.path={root}",
             "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.resize=40", "--set", "data.val_examples=0",
             "--set", "model.image_size=32", "--set", "model.geometry=small", "--set", "model.num_classes=2",
             "--set", "model.width=0.125", "--set", "model.fc_units=32", "--set", "data.batch_size=2",
             "--set", "model.channels=3", "--set", "train.epochs=1", "--set", "train.export=false",
             "--set", "train.precision=float32"]
    cases = [(f"predict {name}", predict + [specials[name]]) for name in ("device", "fifo", "dir", "loop", "sparse")]
    cases += [("predict big.png", predict + [str(tmp_path / "big.png")]),
              ("predict rgba.png", predict + [str(tmp_path / "rgba.png")]),
              ("neighbours device", ["neighbours", "--run-dir", tiny_run, "/dev/zero", "--out", str(tmp_path / "n.png")]),
              ("caffemodel device", caffe + ["--caffemodel", "/dev/zero"]),
              ("caffemodel fifo", caffe + ["--caffemodel", specials["fifo"]]),
              ("mean fifo", caffe + ["--caffemodel", str(caffemodel), "--mean", specials["fifo"]]),
              ("train folder", train)]
    results = run_capped(predict + [str(small)], cases)

    def refused(path, why):
        return {"status": 1, "err": [f"error: cannot read {path} ({why}); expected {IMAGE}"]}
    for name in ("device", "fifo", "dir", "loop"):
        assert results[f"predict {name}"] == refused(specials[name], WHY[name]), name
    assert results["predict sparse"] == {"status": 1, "err": [
        f"error: {specials['sparse']} is 2,147,483,648 bytes; expected {IMAGE} of at most {LIMITS['image'].limit:,} bytes"]}
    assert results["predict big.png"] == {"status": 1, "err": [
        "error: big.png declares 13000x13000 pixels (width x height); the limit is 16777216 pixels"]}
    assert results["predict rgba.png"]["status"] == 0
    assert results["neighbours device"] == refused("/dev/zero", "a character device")
    assert results["caffemodel device"] == {"status": 1, "err": [
        "error: cannot read --caffemodel /dev/zero (a character device); expected a Caffe .caffemodel"]}
    assert results["caffemodel fifo"] == {"status": 1, "err": [
        f"error: cannot read --caffemodel {specials['fifo']} (a FIFO); expected a Caffe .caffemodel"]}
    assert results["mean fifo"] == {"status": 1, "err": [
        f"error: cannot read --mean {specials['fifo']} (a FIFO); expected a Caffe .binaryproto mean"]}
    assert results["train folder"]["status"] == 0, results["train folder"]
    recorded = json.loads((tmp_path / "run" / "data.json").read_text())
    assert (recorded["train_size"], recorded["val_size"]) == (4, 2)
    assert sorted(os.path.basename(s["name"]) for s in recorded["skipped"]) == [
        "fifo.jpg", "huge.jpg", "loop.jpg", "out.jpg", "sock.jpg", "x.jpg"]
