"""What machine a run or a benchmark ran on: CPU model, vector ISA, cores, and whether oneDNN is on.

Every timing this project records is printed next to these (the same VM kind has come as an Intel
Xeon with AVX-512 and as an AMD EPYC with AVX2 only, and speeds differ by 2x between them).
"""

import functools
import os
import platform
import time

# Vector ISA levels as /proc/cpuinfo flags, widest last; `isa` reports every one present.
ISA_FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))


def _cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


def _field(key, cpuinfo):
    """The value of the first /proc/cpuinfo line named `key` (the text is read when `cpuinfo` is None)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return None


def cpu_model(cpuinfo=None):
    """'AMD EPYC', 'Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz', ... (platform.processor() off Linux)."""
    return _field("model name", cpuinfo) or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags(cpuinfo=None):
    return set((_field("flags", cpuinfo) or "").split())


def isa(cpuinfo=None):
    """The vector ISA extensions present, e.g. ['AVX2', 'AVX-512', 'AVX512-BF16'] (no AMX here)."""
    flags = cpu_flags(cpuinfo)
    return [name for flag, name in ISA_FLAGS if flag in flags]


def native_bfloat16(cpuinfo=None):
    """Whether the CPU computes bfloat16 dot products in hardware (AVX512-BF16 or AMX); without them
    PyTorch's bf16 autocast is emulated (measured ~1 img/s on the paper model) and not worth timing."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=None)
def bfloat16_matmul_speedup(n=1024, repeats=7):
    """Time of a float32 n^3 TensorFlow matmul / time of the same in bfloat16 (best of `repeats` each).

    > 1 where bfloat16 runs faster. CPUs that have AVX512-BF16 differ: an AMD EPYC with AVX-512
    measured 2.3 (its 4096^3 peaks 1.7x; the default model 1.3x faster in mixed_bfloat16), an Intel
    Xeon without AMX ~0.5 at 4096^3 (docs/speed.md): the flags alone cannot tell them apart.
    Measured once per process (~0.3 s).
    """
    import tensorflow as tf

    def best(dtype):
        a = tf.cast(tf.random.normal((n, n), seed=0), dtype)
        f = tf.function(lambda x: tf.matmul(x, x))
        f(a).numpy()  # trace and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f(a).numpy()
            times.append(time.perf_counter() - start)
        return min(times)

    return best(tf.float32) / best(tf.bfloat16)


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process (decided when TensorFlow started)."""
    from tensorflow.python.util import _pywrap_util_port  # TF has no public accessor for the runtime state

    return bool(_pywrap_util_port.IsMklEnabled())


def describe(info=None):
    """One line: 'AMD EPYC (AVX2, AVX-512, AVX512-BF16), 2 cores, oneDNN on', of this machine or of `info`
    (a summary() dict, e.g. as a run's metrics.json recorded it); ', 1 intra-op thread' when TensorFlow was
    told to use fewer threads than cores (TF_NUM_INTRAOP_THREADS, e.g. by `ablate --jobs 2`)."""
    info = summary() if info is None else info
    threads = info.get("intra_op_threads")  # a recorded summary may lack it: the line then names no thread count
    fewer = f", {threads} intra-op thread{'s' if threads != 1 else ''}" if threads and threads != info["cores"] else ""
    return (f"{info['cpu']} ({', '.join(info['isa']) or 'no AVX2'}), {info['cores']} cores{fewer}, "
            f"oneDNN {'on' if info['onednn'] else 'off'}")


def intra_op_threads(environ=None):
    """The intra-op threads TensorFlow runs an op on in this process (or in one started with `environ`):
    TF_NUM_INTRAOP_THREADS when set to a positive number (TensorFlow reads it at start-up), else one per core."""
    try:
        n = int((os.environ if environ is None else environ).get("TF_NUM_INTRAOP_THREADS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else os.cpu_count()


def summary():
    """The same as a dict, for metrics.json and benchmark JSON."""
    return {"cpu": cpu_model(), "isa": isa(), "cores": os.cpu_count(), "onednn": onednn_enabled(),
            "intra_op_threads": intra_op_threads()}
