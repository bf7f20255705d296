"""Repeated timings reduced to one figure and its spread, and the utilisation check (no TensorFlow here).

On a shared or frequency-scaling machine one timing of a matmul peak or of a training step can be
off by 20-30 %: two `speed` runs a few minutes apart once put the same step at 76 % and at 101 % of
"the" peak. So `speed` times the peak several times, interleaved with the model timings, takes the
best of each (the figure the machine reaches when nothing disturbs it), reports how far the samples
spread, and treats a utilisation above 100 % as what it is: a peak that was under-measured.
"""

import statistics

# CPU flags that decide which matmul units a float32 or bfloat16 step can use, as /proc/cpuinfo names them
RELEVANT_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def spread(samples):
    """{'best', 'min', 'median', 'max', 'samples'} of rates (higher is better): the best is the max."""
    values = [float(v) for v in samples]
    if not values:
        raise ValueError("spread() needs at least one sample")
    return {"best": max(values), "min": min(values), "median": statistics.median(values), "max": max(values),
            "samples": values}


def relative_spread(s):
    """(max - min) / median of a spread() dict: 0.05 means the samples lie within 5 % of their median."""
    return (s["max"] - s["min"]) / s["median"] if s["median"] else float("inf")


# Samples spread wider than this around their median were taken on a machine that was not quiet
# (a quiet 2-core VM keeps them within 3-9 %; busy spells have given 20-48 %)
NOISY = 0.10


def noisy(named_spreads, limit=NOISY):
    """One line per (name, spread() dict) of two or more samples spread wider than `limit`: figures from
    a machine that was not quiet, to rerun before quoting."""
    return [f"noisy: {name} spread {100 * relative_spread(s):.0f} % (more than {100 * limit:.0f} %): the machine "
            "was not quiet while they were timed; rerun before quoting them"
            for name, s in named_spreads if len(s["samples"]) > 1 and relative_spread(s) > limit]


def utilisation(flops_per_s, peak_flops_per_s):
    """{'utilisation': achieved / peak, 'measurement_error': whether it exceeds 1}.

    A step cannot run its multiply-adds faster than the best dense matmul of its dtype, so above
    100 % the peak was measured too low (the machine was busy, or clocked down, while it ran): the
    figure is flagged, not reported as a result."""
    u = flops_per_s / peak_flops_per_s
    return {"utilisation": u, "measurement_error": above_peak(u)}


def above_peak(u):
    """Whether a utilisation (a fraction of the peak) is above 100 %: a measurement error."""
    return u > 1.0


def flags_present(flags):
    """{flag: bool} for each of RELEVANT_FLAGS, given the set of the CPU's flags."""
    return {f: f in flags for f in RELEVANT_FLAGS}


def describe_flags(present):
    """'avx512f yes, avx512_bf16 yes, amx_bf16 no, amx_tile no' for a flags_present() dict."""
    return ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in present.items())


def spread_text(s, scale=1.0, unit=""):
    """'best 512 (min 480, median 500, max 512 of 3) GFLOP/s' for a spread() dict, values divided by `scale`."""
    v = {k: s[k] / scale for k in ("best", "min", "median", "max")}
    return (f"best {v['best']:.1f}{unit} (min {v['min']:.1f}, median {v['median']:.1f}, max {v['max']:.1f}, "
            f"{len(s['samples'])} samples, spread {100 * relative_spread(s):.0f} %)")


def utilisation_text(u):
    """'73.0 % of matmul peak', or the measurement-error wording when above 100 %."""
    pct = 100 * u["utilisation"]
    if u["measurement_error"]:
        return f"{pct:.1f} % of matmul peak: MEASUREMENT ERROR (above 100 %: the peak was under-measured), not a result"
    return f"{pct:.1f} % of matmul peak"
