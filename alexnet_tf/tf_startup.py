"""Starting TensorFlow without its start-up notices on the console, and with every real error kept.

Importing TensorFlow 2.21 and listing its devices writes to file descriptor 2, on a machine without an
NVIDIA driver:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796547944.649868  4929 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796547944.650169  4929 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...
    E0000 00:00:1796547948.977860  4929 cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)

(the first three twice: two of TensorFlow's libraries carry their own absl). TF_CPP_MIN_LOG_LEVEL does
not reach the first three: absl writes what is logged before its initialisation at every level. The
cuInit line goes only at level 3, which would hide every other error as well.

`start()` therefore imports TensorFlow and lists its devices with descriptor 2 running through a
line filter that drops exactly these notices (INFO lines, absl's pre-initialisation warning, and the
cuInit failure when no NVIDIA driver is installed, where no GPU can be used whatever cuInit says)
and passes every other line on as it comes: a warning, a real error, a traceback. The filter is in
place only for that start (then descriptor 2 is the terminal again), and only when the user has not
set TF_CPP_MIN_LOG_LEVEL: a user who sets it (0 shows everything) gets TensorFlow's output untouched.
"""

import contextlib
import os
import re
import sys
import threading

ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# absl's line prefix: severity letter, MMDD, time, thread id, file:line]
ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ ([\w.-]+):\d+\] (.*)$")
# Where an installed NVIDIA driver shows itself: its kernel module (Linux), its control device, WSL2's GPU device.
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")


def nvidia_driver_present():
    return any(os.path.exists(path) for path in NVIDIA_DRIVER_FILES)


def is_startup_notice(line, driver_present):
    """Whether `line` (without its newline) is one of TensorFlow's start-up notices that carry no error."""
    if line == ABSL_PREINIT:
        return True
    match = ABSL_LINE.match(line)
    if match is None:
        return False
    severity, _, message = match.groups()
    if severity == "I":
        return True
    # No driver: cuInit cannot succeed and the run is a CPU run; with one, a failed cuInit is a real error.
    return severity == "E" and message.startswith("failed call to cuInit") and not driver_present


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def _forward(read_end, out, drop):
    """Copy lines from the pipe to `out` as they come, leaving out those `drop` says; until end of file."""
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if not drop(line.decode("utf-8", "replace").rstrip("\r\n")):
                _write_all(out, line)


@contextlib.contextmanager
def filtered_stderr(drop):
    """File descriptor 2 (C++ and Python alike) through the line filter `drop` while the block runs.

    Without a usable descriptor 2 (closed, or no file descriptors) the block runs unfiltered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, saved, drop), daemon=True, name="stderr-filter")
    forwarder.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the forwarder reads to its end and stops
        forwarder.join(timeout=10)
        if not forwarder.is_alive():  # (a library that kept a copy of descriptor 2 keeps it alive, forwarding)
            os.close(saved)


def start():
    """Import TensorFlow and list its devices (where the CUDA probe runs); the start-up notices are
    dropped unless TF_CPP_MIN_LOG_LEVEL was set by the user. Sets TF_CPP_MIN_LOG_LEVEL=2 (TensorFlow's
    own INFO and WARNING lines off, its errors on) when unset. Returns the physical devices."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    driver = nvidia_driver_present()
    with filtered_stderr(lambda line: is_startup_notice(line, driver)) if quiet else contextlib.nullcontext():
        import tensorflow as tf

        return tf.config.list_physical_devices()


def describe_devices(devices):
    """'1 CPU' or '1 CPU, 2 GPU' from TensorFlow's physical devices."""
    counts = {}
    for device in devices:
        counts[device.device_type] = counts.get(device.device_type, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())
