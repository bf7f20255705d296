"""The speed benchmark's FLOP count and output, and the precision switch."""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import alexnet_tf
from alexnet_tf.optim import resolve_precision
from alexnet_tf.perf.speed import multiply_adds
from conftest import ROOT, tiny_overrides


def test_paper_multiply_adds_equal_the_hand_count():
    # out_h * out_w * k * k * inputs seen * kernels, for both towers together; fc: inputs * outputs
    hand = (55 * 55 * 11 * 11 * 3 * 96 + 27 * 27 * 5 * 5 * 48 * 256 + 13 * 13 * 3 * 3 * 256 * 384
            + 13 * 13 * 3 * 3 * 192 * 384 + 13 * 13 * 3 * 3 * 192 * 256 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert hand == 724_406_816
    assert multiply_adds(alexnet_tf.build_model(alexnet_tf.load_config(None))) == hand


@pytest.mark.slow
def test_tiny_benchmark_emits_valid_json():
    out = subprocess.run([sys.executable, "-m", "alexnet_tf", "speed", "--tiny", "--json",
                          "--precisions", "float32"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    (row,) = report["results"]
    assert row["framework"] == "keras" and row["model"] == "tiny" and row["batch"] == 8
    # tiny model (tests/conftest.py): 28x28x1, width 0.125 -> 6, 16, 24, 24, 16 kernels per tower, fc 32
    hand = (28 * 28 * 9 * 1 * 12 + 13 * 13 * 25 * 6 * 32 + 6 * 6 * 9 * 32 * 48 + 6 * 6 * 9 * 24 * 48
            + 6 * 6 * 9 * 24 * 32 + 2 * 2 * 32 * 32 + 32 * 32 + 32 * 10)
    assert row["forward_multiply_adds"] == hand
    for key in ("train_images_per_s", "inference_images_per_s", "train_flops_per_s", "train_utilisation"):
        assert row[key] > 0
    np.testing.assert_allclose(row["train_flops_per_s"], 6 * hand * row["train_images_per_s"], rtol=1e-9)
    # --tiny times the model twice, each after a peak sample, and samples the peak once more at the end
    assert report["repeats"] == 2
    for key in ("train_images_per_s", "inference_images_per_s"):
        s = row[f"{key}_spread"]
        assert len(s["samples"]) == 2 and row[key] == s["best"] == max(s["samples"])
        assert s["min"] <= s["median"] <= s["max"] == s["best"]
    peaks = report["matmul_peaks_by_library"]["float32"]
    assert len(peaks["tensorflow"]["samples"]) == len(peaks["numpy"]["samples"]) == 3
    per_sample = [max(t, n) for t, n in zip(peaks["tensorflow"]["samples"], peaks["numpy"]["samples"])]
    assert report["matmul_peak_spread"]["float32"]["samples"] == per_sample
    best = report["matmul_peak_flops_per_s"]["float32"]
    assert best == max(per_sample) == max(peaks["tensorflow"]["best"], peaks["numpy"]["best"])
    np.testing.assert_allclose(row["train_utilisation"], row["train_flops_per_s"] / best, rtol=1e-9)
    assert row["utilisation_measurement_error"] is (row["train_utilisation"] > 1)
    assert len(report["measurement_errors"]) == int(row["utilisation_measurement_error"])
    spreads = [report["matmul_peak_spread"]["float32"], row["train_images_per_s_spread"]]
    assert len(report["noisy"]) == sum((s["max"] - s["min"]) / s["median"] > 0.10 for s in spreads)
    assert report["machine"]["cpu"] == _first_model_name() and "onednn" in report["machine"]
    flags = _first_flags()
    assert report["cpu_flags"] == {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    assert report["goals"] == []  # the goals are stated for the paper and default models only


def test_spread_best_of_and_flag_on_hand_made_numbers():
    from alexnet_tf.perf import spread
    s = spread.spread([180e9, 242e9, 200e9, 150e9])
    assert s == {"best": 242e9, "min": 150e9, "median": 190e9, "max": 242e9, "samples": [180e9, 242e9, 200e9, 150e9]}
    assert abs(spread.relative_spread(s) - 92 / 190) < 1e-12
    assert spread.spread([3])["median"] == 3 and spread.relative_spread(spread.spread([3])) == 0
    with pytest.raises(ValueError):
        spread.spread([])
    # the run that read 101 %: its step measured against a peak under-measured in a busy spell
    assert spread.utilisation(244.4e9, 242e9) == {"utilisation": 244.4e9 / 242e9, "measurement_error": True}
    assert spread.utilisation(184e9, 242e9) == {"utilisation": 184e9 / 242e9, "measurement_error": False}
    assert spread.utilisation(242e9, 242e9)["measurement_error"] is False  # exactly the peak is possible
    text = spread.utilisation_text(spread.utilisation(244.4e9, 242e9))
    assert text.startswith("101.0 % of matmul peak: MEASUREMENT ERROR")
    assert spread.utilisation_text(spread.utilisation(184e9, 242e9)) == "76.0 % of matmul peak"
    assert spread.spread_text(s, 1e9, " GFLOP/s") == (
        "best 242.0 GFLOP/s (min 150.0, median 190.0, max 242.0, 4 samples, spread 48 %)")
    present = spread.flags_present({"avx2", "avx512f", "amx_tile", "amx_bf16"})
    assert present == {"avx512f": True, "avx512_bf16": False, "amx_bf16": True, "amx_tile": True}
    assert spread.describe_flags(present) == "avx512f yes, avx512_bf16 no, amx_bf16 yes, amx_tile yes"


def test_samples_spread_wider_than_ten_percent_are_called_noisy():
    from alexnet_tf.perf.speed import noisy
    # docs/speed.md's Intel Xeon run: peaks 179.9-292.9 GFLOP/s (median 238.4), default model 636-807 img/s
    peaks = {"float32": {"min": 179.9, "median": 238.4, "max": 292.9, "samples": [179.9, 238.4, 292.9]}}
    rows = [dict(model="default", precision="float32",
                 train_images_per_s_spread={"min": 636, "median": 699, "max": 807, "samples": [699, 636, 807]}),
            dict(model="paper", precision="float32",  # 47.0-48.4 around 48.0: 2.9 %, quiet
                 train_images_per_s_spread={"min": 47.0, "median": 48.0, "max": 48.4, "samples": [47.0, 48.0, 48.4]}),
            dict(model="paper", precision="float32")]  # PyTorch's row: timed once, no spread
    assert noisy(peaks, rows) == [
        "noisy: the float32 matmul peak samples spread 47 % (more than 10 %): the machine was not quiet while "
        "they were timed; rerun before quoting them",
        "noisy: default float32 training timings spread 24 % (more than 10 %): the machine was not quiet while "
        "they were timed; rerun before quoting them"]
    one = {"float32": {"min": 1.0, "median": 2.0, "max": 3.0, "samples": [2.0]}}  # a single sample has no spread
    assert noisy(one, []) == []


def test_peaks_best_of_both_libraries_and_interleaved_samples():
    from alexnet_tf.perf.speed import _Peaks
    peaks = _Peaks(4096)
    peaks.samples = {"float32": {"tensorflow": [190e9, 120e9, 205e9], "numpy": [195e9, 199e9, 180e9]},
                     "mixed_bfloat16": {"tensorflow": [480e9, 494e9], "numpy": []}}
    best, per_sample, by_library = peaks.report()
    assert best == {"float32": 205e9, "mixed_bfloat16": 494e9}
    assert per_sample["float32"]["samples"] == [195e9, 199e9, 205e9]  # the better library of each sample
    assert per_sample["float32"]["min"] == 195e9 and per_sample["float32"]["median"] == 199e9
    assert by_library["float32"]["numpy"]["best"] == 199e9 and by_library["mixed_bfloat16"]["numpy"] is None


def test_goals_name_a_figure_above_the_peak_a_measurement_error():
    from alexnet_tf.perf.speed import goals, measurement_errors
    rows = [dict(framework="keras", precision="float32", model="paper", train_images_per_s=40.0,
                 train_utilisation=1.01, utilisation_measurement_error=True)]
    assert goals(rows) == ["goal paper float32: 101 % of the matmul peak (goal >= 85 %): "
                           "measurement error (above 100 %), not a result"]
    (line,) = measurement_errors(rows)
    assert line.startswith("measurement error: keras paper float32 at 101 % of the best matmul peak")


def test_precision_auto_follows_the_hardware():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    assert resolve_precision("auto", cpu_flags="flags : fpu avx512f avx512_bf16 amx_bf16 amx_tile",
                             bf16_speedup=lambda: pytest.fail("probed a CPU with AMX")) == "mixed_bfloat16"
    assert resolve_precision("auto", cpu_flags=AMD_AVX2) == "float32"  # no native bfloat16: no probe
    # AVX512-BF16 without AMX: the matmul probe decides (some such CPUs run bfloat16 faster, some slower: docs/speed.md)
    never = lambda: pytest.fail("probed a CPU whose flags decide")  # noqa: E731
    assert resolve_precision("auto", cpu_flags=AMD_AVX2, bf16_speedup=never) == "float32"
    assert resolve_precision("auto", cpu_flags=XEON, bf16_speedup=lambda: 0.5) == "float32"
    assert resolve_precision("auto", cpu_flags=XEON, bf16_speedup=lambda: 1.7) == "mixed_bfloat16"


@pytest.mark.parametrize("float32_ms, bfloat16_ms", [(80, 20), (20, 80)])
def test_bfloat16_probe_is_the_float32_time_over_the_bfloat16_time(monkeypatch, float32_ms, bfloat16_ms):
    """The probe against matmuls of known duration: tf.matmul replaced by a sleep of a set time per
    dtype, so the ratio is known (4 or 1/4) and a constant or inverted probe fails one of the two."""
    from alexnet_tf import machine

    def sleeping_matmul(a, b):
        seconds = {tf.float32: float32_ms, tf.bfloat16: bfloat16_ms}[a.dtype] / 1e3
        return tf.py_function(lambda x: (time.sleep(seconds), x)[1], [a], a.dtype)

    monkeypatch.setattr(tf, "matmul", sleeping_matmul)
    machine.bfloat16_matmul_speedup.cache_clear()
    try:
        speedup = machine.bfloat16_matmul_speedup(n=8, repeats=3)
    finally:
        machine.bfloat16_matmul_speedup.cache_clear()  # later tests measure the real matmuls
    expected = float32_ms / bfloat16_ms
    assert expected / 2 < speedup < expected * 2


def test_bfloat16_probe_on_real_matmuls():
    from alexnet_tf import machine
    speedup = machine.bfloat16_matmul_speedup(n=256, repeats=3)
    assert 0.05 < speedup < 20
    if not machine.native_bfloat16():
        assert speedup < 1.2  # emulated bfloat16 is never faster than float32


def test_mixed_bfloat16_compute_dtypes_per_layer():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = alexnet_tf.build_model(alexnet_tf.load_config(None, tiny_overrides()))
    for name in ("conv1_0", "conv3_1", "fc6_0", "fc7_1"):
        layer = model.get_layer(name)
        assert layer.compute_dtype == "bfloat16" and layer.kernel.dtype == "float32", name
    # the logits stay float32 (fc8), and LRN normalises in float32 inside, returning bfloat16
    assert model.get_layer("fc8").compute_dtype == "float32"
    lrn = model.get_layer("lrn1_0")
    assert lrn.compute_dtype == "bfloat16"
    x = np.abs(np.random.default_rng(0).normal(0, 40, (1, 2, 2, 6))).astype("float32")
    from test_layers import lrn_numpy
    y = lrn(tf.constant(x))
    assert y.dtype == tf.bfloat16
    # bfloat16 rounding of the input and of the output: within 2^-7 relative of the formula
    np.testing.assert_allclose(tf.cast(y, tf.float32), lrn_numpy(x), rtol=2 ** -7)
    assert model(np.zeros((1, 28, 28, 1), "float32")).dtype == tf.float32


@pytest.mark.slow
def test_jit_compiled_step_matches_the_graph_step():
    """train.jit_compile: the XLA-compiled step applies the same update (float32, dropout off)."""
    from alexnet_tf import distribute
    from alexnet_tf.training import make_steps
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"model.dropout": 0.0}))
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (16, 28, 28, 1)).astype("float32")
    y = (np.arange(16) % 10).astype("int32")
    weights, stats = [], []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = alexnet_tf.compile_model(alexnet_tf.build_model(cfg), cfg)
        model.optimizer.build(model.trainable_variables)
        initial = [w.numpy() for w in model.trainable_variables]
        train_step, _ = make_steps(model, distribute.setup(cfg.distribute, cfg.model.towers), jit_compile=jit)
        it = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        for _ in range(3):
            sums = train_step(it)
        weights.append([w.numpy() for w in model.trainable_variables])
        stats.append(sums.numpy())
    np.testing.assert_allclose(stats[1], stats[0], rtol=1e-4)
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    assert not np.allclose(weights[0][0], initial[0])  # the steps did train (same init for both)


def test_layer_of_names_the_layer_and_direction():
    from alexnet_tf.perf.profile import layer_of
    assert layer_of("alexnet_1/conv1_0_1/convolution") == "conv1 forward"
    assert layer_of("gradient_tape/alexnet_1/conv2_1_1/convolution/Conv2DBackpropFilter") == "conv2 backward"
    assert layer_of("gradients/alexnet_1/fc6_0_1/MatMul_grad/MatMul") == "fc6 backward"
    assert layer_of("lrn1_0/backward/MatMul") == "lrn1 backward"
    assert layer_of("alexnet_1/lrn2_1_1/Rsqrt") == "lrn2 forward"
    assert layer_of("paper_sgd/Mul_3") == layer_of("paper_sgd_1/Mul_3") == "optimizer update"
    assert layer_of("SparseSoftmaxCrossEntropyWithLogits/SparseSoftmaxCrossEntropyWithLogits") == "loss, metrics, other"


@pytest.mark.slow
def test_profile_steps_trace_the_steps_and_the_profile_command_sums_them(tmp_path):
    """train.profile_steps=[2,3] traces exactly two training steps: each of them runs conv1's forward
    convolution once per tower (2 x 2 executions), and the LRN layers' hand-written gradients show up
    as backward time of their layers."""
    from alexnet_tf.perf import profile
    from alexnet_tf.training import train
    cfg = alexnet_tf.load_config(None, tiny_overrides(**{"train.profile_steps": "[2,3]"}))
    train(cfg, str(tmp_path), verbose=0)
    events = profile.op_events(profile.latest_trace(str(tmp_path)))
    conv1_forward = [t for n, t, _ in events if profile.layer_of(n) == "conv1 forward" and "Conv2D" in t]
    assert len(conv1_forward) == 2 * 2, conv1_forward
    groups = {profile.layer_of(n) for n, _, _ in events}
    assert {"conv1 backward", "lrn1 forward", "lrn1 backward", "lrn2 backward", "optimizer update"} <= groups, sorted(groups)
    out = subprocess.run([sys.executable, "-m", "alexnet_tf", "profile", "--run-dir", str(tmp_path), "--top", "100"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    shares = [float(line.rsplit("|", 2)[-2].strip().rstrip("%")) for line in out.stdout.splitlines()
              if line.startswith("| ") and line.rstrip().endswith("% |")]
    assert len(shares) > 20
    # two tables (op type, layer), each covering all of the op time
    assert abs(sum(shares) - 200) < 0.1 * len(shares), sum(shares)


# /proc/cpuinfo of the two kinds of machine this project runs on (abridged to the lines read)
AMD_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx fma avx2 bmi2\n"
XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
        "flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16\n")


def test_machine_reads_the_cpu_model_and_vector_isa():
    from alexnet_tf import machine
    assert machine.cpu_model(AMD_AVX2) == "AMD EPYC 7B13" and machine.isa(AMD_AVX2) == ["AVX2"]
    assert machine.isa(XEON) == ["AVX2", "AVX-512", "AVX512-BF16"]
    sapphire = XEON.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_tile")
    assert machine.isa(sapphire) == ["AVX2", "AVX-512", "AVX512-BF16", "AMX-BF16"]
    assert not machine.native_bfloat16(AMD_AVX2) and machine.native_bfloat16(XEON)
    assert machine.cpu_model() == _first_model_name()


def _first_flags():
    """The flags of the first processor in /proc/cpuinfo, read by grep (an independent reader)."""
    out = subprocess.run(["grep", "-m1", "^flags", "/proc/cpuinfo"], capture_output=True, text=True)
    assert out.returncode == 0, "this test needs a Linux /proc/cpuinfo with a 'flags' line"
    return set(out.stdout.split(":", 1)[1].split())


def _first_model_name():
    """What `grep -m1 "model name" /proc/cpuinfo` prints, after the colon (an independent reader: grep)."""
    out = subprocess.run(["grep", "-m1", "model name", "/proc/cpuinfo"], capture_output=True, text=True)
    assert out.returncode == 0, "this test needs a Linux /proc/cpuinfo with a 'model name' line"
    return out.stdout.split(":", 1)[1].strip()


@pytest.mark.slow
@pytest.mark.parametrize("env, expected", [(None, "True"), ("0", "False")])
def test_onednn_is_on_unless_the_user_turns_it_off(env, expected):
    """Importing alexnet_tf before TensorFlow turns oneDNN on; TF_ENABLE_ONEDNN_OPTS=0 from the user wins."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env is not None:
        environ["TF_ENABLE_ONEDNN_OPTS"] = env
    code = ("import os, alexnet_tf, tensorflow; from alexnet_tf import machine; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], machine.onednn_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=environ, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [env or "1", expected]


def test_pytorch_precisions_without_native_support_are_skipped_in_one_line():
    from alexnet_tf.perf import speed, speed_torch
    said = []
    rows = speed_torch.speeds("tiny", speed.MODELS["tiny"], "mixed_bfloat16", 8, 1, log=said.append, cpuinfo=AMD_AVX2)
    assert rows == [] and len(said) == 1
    assert "skipping bf16 autocast" in said[0] and "AMD EPYC 7B13" in said[0] and "emulation" in said[0]


def test_goals_compare_with_pytorch_and_the_peak():
    from alexnet_tf.perf.speed import goals
    row = dict(framework="keras", precision="float32")
    rows = [{**row, "model": "paper", "train_images_per_s": 30.0, "train_utilisation": 0.86},
            {**row, "model": "default", "train_images_per_s": 900.0, "train_utilisation": 0.69},
            {**row, "framework": "pytorch", "model": "paper", "train_images_per_s": 10.5, "train_utilisation": 0.3},
            {**row, "framework": "pytorch", "model": "paper", "train_images_per_s": 9.0, "train_utilisation": 0.25}]
    assert goals(rows) == [
        "goal paper float32: 86 % of the matmul peak (goal >= 85 %): met",
        "goal paper float32: 2.86x PyTorch's best float32 training (goal >= 3x): NOT met",  # 30 / 10.5, the best PyTorch figure
        "goal default float32: 69 % of the matmul peak (goal >= 70 %): NOT met",
    ]
    # the bfloat16 goals (75 % and 50 % of the bfloat16 peak) are the AMX CPUs': elsewhere their lines say so
    bf16 = [{**row, "precision": "mixed_bfloat16", "model": m, "train_images_per_s": 1.0, "train_utilisation": u}
            for m, u in (("paper", 0.76), ("default", 0.49))]
    assert goals(bf16) == ["goal paper mixed_bfloat16: 76 % of the matmul peak (goal >= 75 %): met",
                           "goal default mixed_bfloat16: 49 % of the matmul peak (goal >= 50 %): NOT met"]
    assert goals(bf16[:1], amx=False) == ["goal paper mixed_bfloat16: 76 % of the matmul peak (goal >= 75 %, a goal "
                                          "for CPUs with AMX; this one has none): met"]


@pytest.mark.slow
def test_benchmark_fake_images_fit_the_config_and_are_removed(tmp_path, capsys, monkeypatch):
    """`benchmark --fake-images 5` with a 12-class config writes 12 JPEGs, one per class (5 would make a
    folder of 5 classes, which the 12-output model refuses), and the temporary folder is gone at the
    end, also when a config error stops the command after the folder was made."""
    import tempfile

    from alexnet_tf.__main__ import main
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where mkdtemp makes the folder
    config = tmp_path / "twelve.yaml"
    config.write_text("model: {image_size: 28, geometry: small, channels: 3, num_classes: 12, width: 0.125, "
                      "fc_units: 32}\ndata: {resize: 32, batch_size: 4}\n")
    argv = ["benchmark", "--config", str(config), "--fake-images", "5", "--fake-side", "32", "--steps", "2",
            "--pipeline-only"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"writing 12 32x32 JPEGs in 12 classes to {temp}" in out and "model.num_classes = 12" in out
    assert "input pipeline alone: " in out
    assert not [name for name in os.listdir(temp) if name.startswith("alexnet_bench_")]
    assert main(argv + ["--set", "model.num_classes=1"]) == 2
    assert capsys.readouterr().err.startswith("config error: model.num_classes = 1 ")
    assert not [name for name in os.listdir(temp) if name.startswith("alexnet_bench_")]


@pytest.mark.parametrize("value", ["0", "-2", "three"])
def test_speed_repeats_below_one_is_a_usage_error(capsys, value):
    from alexnet_tf.__main__ import main
    with pytest.raises(SystemExit) as exit_:
        main(["speed", "--repeats", value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m alexnet_tf speed: error: argument --repeats: expected an integer >= 1, got '{value}'")
