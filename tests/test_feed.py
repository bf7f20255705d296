"""`benchmark --feed` on a tiny set: one JSON document with the four per-core rates and the two ratios, and
every pipeline counted as consuming exactly the images it was given (no speed is asserted: the machine is shared)."""

import json
import os
import tempfile

from alexnet_tf.__main__ import main
from alexnet_tf.perf import feed
from conftest import ROOT, run_main

IMAGES, BATCH = 6, 4
CONFIG = os.path.join(ROOT, "configs", "alexnet_imagenet.yaml")  # the paper's augmentation: mean image, flips, lighting


def test_the_feed_benchmark_counts_every_image_and_reports_in_json_and_text(tmp_path, capsys, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where mkdtemp makes the folder
    status, out, err = run_main(capsys, main, ["benchmark", "--config", CONFIG, "--feed", "--feed-images", IMAGES,
                                               "--set", f"data.batch_size={BATCH}", "--json"])
    assert status == 0, err[-3000:]
    result = json.loads(out)  # stdout is the one JSON document; the set-up's output went to stderr
    assert "mean JPEG size: " in err and "(c) prepared_device: " in err  # the progress lines
    assert result["cores"] == len(os.sched_getaffinity(0)) and result["cpu"]
    assert result["images"] == IMAGES and 50_000 < result["mean_jpeg_bytes"] < 200_000
    for phase in feed.PHASES:
        assert result[phase] > 0
        # a hand count: the epoch of IMAGES read PASSES times; the clock starts after the first batch of BATCH
        assert result["consumed"][phase] == feed.PASSES * IMAGES
        assert result["timed"][phase] == feed.PASSES * IMAGES - BATCH
    assert result["device_vs_bare"] == result["prepared_device"] / result["bare_decode"] > 0
    assert result["device_vs_full_size"] == result["prepared_device"] / result["full_size"] > 0
    assert not [name for name in os.listdir(temp) if name.startswith("alexnet_feed_")]  # images and shards removed

    text = feed.report(result).splitlines()
    assert [line.split()[0] for line in text[1:5]] == ["(a)", "(b)", "(c)", "(d)"]
    assert "(c)/(d) = " in text[5] and "goal >= 0.85" in text[5] and "(c)/(a) = " in text[6] and "goal >= 3" in text[6]
    assert text[7] == f"  CPU: {result['cpu']}"
