"""`python -m alexnet_tf`'s contract: the commands listed, each command's options and what a minimal
command line parses to, argparse's own errors, and that a command's --help and argument errors load only
its module, and no TensorFlow.

The tables below are the reference, written out by hand from the command line's --help texts.
"""

import re
import socket
import subprocess
import sys

import pytest

from alexnet_tf.__main__ import COMMANDS, build_parser, main
from conftest import ROOT

# The commands in the order the top-level --help lists them.
ORDER = ["train", "curves", "filters", "export", "predict", "features", "neighbours", "projector", "codes",
         "config-reference", "prepare", "stats", "data-service", "evaluate", "benchmark", "speed", "profile", "ablate", "fig1", "init-study",
         "import-caffe"]

# Each command's options in the order its --help lists them (after -h).
OPTIONS = {
    "curves": ["--out", "--curve", "--title"],
    "filters": ["--run-dir", "--checkpoint", "--out"],
    "export": ["--run-dir", "--checkpoint", "--version", "--overwrite", "--wait"],
    "predict": ["--run-dir", "--checkpoint", "--label", "--val", "--ten-crop", "--out", "--cols", "--seed"],
    "features": ["--run-dir", "--checkpoint", "--split", "--batch-size", "--max-images"],
    "neighbours": ["--run-dir", "--checkpoint", "--queries", "--k", "--encoder", "--out", "--seed", "--batch-size",
                   "--max-images"],
    "projector": ["--run-dir", "--checkpoint", "--split", "--count", "--log-dir", "--seed", "--batch-size",
                  "--max-images"],
    "codes": ["--run-dir", "--checkpoint", "--bits", "--k", "--epochs", "--queries", "--pixels", "--batch-size",
              "--max-images"],
    "config-reference": [],
    "prepare": ["--config", "--set", "--out", "--quality", "--subsampling", "--shard-images"],
    "stats": ["--config", "--set", "--recompute"],
    "data-service": ["--port", "--dispatcher", "--host", "--wait"],
    "evaluate": ["--run-dir", "--checkpoint", "--ten-crop", "--steps", "--split", "--set"],
    "benchmark": ["--config", "--set", "--steps", "--train-steps", "--fake-images", "--fake-side", "--pipeline-only", "--feed",
                  "--feed-images", "--json"],
    "speed": ["--models", "--precisions", "--batch", "--steps", "--repeats", "--torch", "--json", "--tiny"],
    "profile": ["--run-dir", "--top"],
    "ablate": ["--budget", "--seeds", "--arms", "--more-seeds", "--out", "--runs-dir", "--results", "--config", "--set",
               "--report-only", "--four-layer", "--constant-lr", "--jobs"],
    "fig1": ["--seeds", "--lrn-seeds", "--results", "--figure", "--data-path"],
    "init-study": ["--runs-dir", "--config", "--inits", "--ten-crop-batches", "--out", "--set"],
    "import-caffe": ["--caffemodel", "--prototxt", "--mean", "--synset-words", "--run-dir", "--set"],
}

# A minimal command line of each command and the arguments it parses to: every default.
PARSED = {
    "curves": (["r1", "--out", "o.png"], {"curve": None, "out": "o.png", "runs": ["r1"], "title": ""}),
    "filters": (["--run-dir", "R", "--out", "o.png"], {"checkpoint": None, "out": "o.png", "run_dir": "R"}),
    "export": (["--run-dir", "R"], {"checkpoint": None, "overwrite": False, "run_dir": "R", "version": None,
                "wait": 600.0}),
    "predict": (["--run-dir", "R"], {"checkpoint": None, "cols": 4, "images": [], "label": None, "out": None,
                                     "run_dir": "R", "seed": 0, "ten_crop": False, "val": 0}),
    "features": (["--run-dir", "R"], {"batch_size": 256, "checkpoint": None, "max_images": None, "run_dir": "R",
                                      "split": ["train", "val"]}),
    "neighbours": (["--run-dir", "R", "--out", "o.png"],
                   {"batch_size": 256, "checkpoint": None, "encoder": None, "images": [], "k": 6, "max_images": None,
                    "out": "o.png", "queries": 5, "run_dir": "R", "seed": 0}),
    "projector": (["--run-dir", "R"], {"batch_size": 256, "checkpoint": None, "count": 5000, "log_dir": None,
                                       "max_images": None, "run_dir": "R", "seed": 0, "split": "train"}),
    "codes": (["--run-dir", "R"], {"batch_size": 256, "bits": [16, 32, 64], "checkpoint": None, "epochs": 10,
                                   "k": [1, 10, 100], "max_images": None, "pixels": False, "queries": None,
                                   "run_dir": "R"}),
    "config-reference": ([], {}),
    "prepare": (["--config", "c.yaml", "--out", "D"], {"config": "c.yaml", "out": "D", "quality": 95, "set": [],
                                                       "shard_images": 1024, "subsampling": "444"}),
    "stats": (["--config", "c.yaml"], {"config": "c.yaml", "recompute": False, "set": []}),
    "data-service": (["dispatcher", "--port", "5050"], {"dispatcher": None, "host": socket.gethostname(),
                                                        "port": 5050, "role": "dispatcher", "wait": 60.0}),
    "evaluate": (["--run-dir", "R"], {"checkpoint": None, "run_dir": "R", "set": [], "split": "val", "steps": None,
                                      "ten_crop": False}),
    "benchmark": (["--config", "c.yaml"], {"config": "c.yaml", "fake_images": 0, "fake_side": 0, "feed": False,
                                           "feed_images": 4096, "json": False, "pipeline_only": False, "set": [],
                                           "steps": 20, "train_steps": 5}),
    "speed": ([], {"batch": 128, "json": False, "models": "paper,default", "precisions": "float32,mixed_bfloat16",
                   "repeats": 3, "steps": 10, "tiny": False, "torch": False}),
    "profile": (["--run-dir", "R"], {"run_dir": "R", "top": 15}),
    "ablate": ([], {"arms": None, "budget": "full", "config": None, "constant_lr": None, "four_layer": None, "jobs": 1, "more_seeds": [],
                    "out": "REPRODUCTION.md", "report_only": False, "results": None, "runs_dir": "runs/ablation",
                    "seeds": None, "set": []}),
    "fig1": ([], {"data_path": "", "figure": "docs/ablation/fig1_four_layer.png", "lrn_seeds": 5,
                  "results": "results/fig1", "seeds": 10}),
    "init-study": ([], {"config": None, "inits": None, "out": "docs/init_study.png", "runs_dir": "runs/init_study",
                        "set": [], "ten_crop_batches": 8}),
    "import-caffe": (["--caffemodel", "m", "--run-dir", "R"],
                     {"caffemodel": "m", "mean": None, "prototxt": None, "run_dir": "R", "set": [],
                      "synset_words": None}),
}


def _help(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per entry
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command_in_order_with_its_line(capsys, monkeypatch):
    out = _help(["--help"], capsys, monkeypatch)
    assert out.startswith("usage: python -m alexnet_tf [-h] {" + ",".join(ORDER) + "}")
    listed = re.findall(r"^    (\S+) +(.+)$", out, re.M)
    assert [name for name, _ in listed] == ORDER
    assert dict(listed) == {name: help for name, (_, help) in COMMANDS.items()}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_each_command_help_lists_its_options_in_order(command, capsys, monkeypatch):
    out = _help([command, "--help"], capsys, monkeypatch)
    assert out.startswith(f"usage: python -m alexnet_tf {command} [-h]")
    options = out.split("\noptions:\n")[1]
    assert options.startswith("  -h, --help ")
    assert re.findall(r"^  (--[a-z-]+)", options, re.M) == OPTIONS[command]


@pytest.mark.parametrize("command", sorted(PARSED))
def test_a_minimal_command_line_parses_to_the_defaults(command):
    argv, expected = PARSED[command]
    args = vars(build_parser(command).parse_args([command] + argv))
    assert args.pop("command") == command
    assert args == expected


def test_argparse_errors_read_as_usage_and_one_error_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main(["filters"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == ("usage: python -m alexnet_tf filters [-h] --run-dir RUN_DIR [--checkpoint CHECKPOINT] --out PNG\n"
                   "python -m alexnet_tf filters: error: the following arguments are required: --run-dir, --out\n")
    with pytest.raises(SystemExit) as exit_:
        main(["filter", "--run-dir", "R"])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == ("python -m alexnet_tf: error: argument command: invalid choice: 'filter' (choose from "
                    + ", ".join(f"'{c}'" for c in ORDER) + ")")


# Run in a fresh interpreter: `python -m alexnet_tf [COMMAND] --help`, then the same with an option no
# command has (an argparse error), each followed by its exit status and every module loaded so far.
LOADS = """
import sys
from alexnet_tf.__main__ import main
for extra in ("--help", "--no-such-option"):
    try:
        status = main(sys.argv[1:] + [extra])
    except SystemExit as e:
        status = e.code
    print("\\n@@", extra, status, " ".join(sorted(sys.modules)))
"""


def test_help_and_argument_errors_load_only_the_chosen_commands_module():
    """Neither a command's --help nor an argument error on its line starts TensorFlow or Keras, or imports
    another command's module: each command in a fresh interpreter of its own (a module one command loaded
    would hide what the next one loads), all of them at once."""
    handler_modules = {handler.partition(":")[0] for handler, _ in COMMANDS.values() if handler}
    chosen = {None: None, **{name: handler for name, (handler, _) in COMMANDS.items()}}
    runs = {command: subprocess.Popen([sys.executable, "-c", LOADS] + ([command] if command else []),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            for command in chosen}
    try:
        for command, run in runs.items():
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            reports = [line.split(" ", 3) for line in out.splitlines() if line.startswith("@@ ")]
            assert [(extra, status) for _, extra, status, _ in reports] == [("--help", "0"), ("--no-such-option", "2")]
            assert err.startswith("usage: ") and ": error: " in err.splitlines()[-1], err  # argparse's lines alone
            module = chosen[command].partition(":")[0] if chosen[command] else ""
            own = {module.rsplit(".", n)[0] for n in range(module.count(".") + 1)} & handler_modules  # and its packages
            for _, extra, _, modules in reports:
                loaded = set(modules.split())
                assert not {"tensorflow", "keras"} & {name.partition(".")[0] for name in loaded}, (command, extra)
                assert loaded & handler_modules == own, (command, extra)
    finally:
        for run in runs.values():
            run.kill()


def _subparser(command):
    import argparse
    parser = build_parser(command)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def test_every_argument_of_every_command_has_help():
    """Each option and positional argument of every command (train.py's too) says what it is in --help."""
    from alexnet_tf import train_command
    parsers = {name: _subparser(name) for name in COMMANDS if name != "train"}
    parsers["train"] = train_command._parser()
    missing = [(name, action.option_strings or action.dest) for name, parser in parsers.items()
               for action in parser._actions if not (action.help or "").strip()]
    assert missing == []


def test_the_readme_command_line_section_is_what_help_prints(monkeypatch):
    """README's "Command line" section: train.py's synopsis and one table row per command whose first cell
    is the command's usage line as `--help` prints it (without `-h`), every option named."""
    from alexnet_tf import train_command
    monkeypatch.setenv("COLUMNS", "1000")  # one usage line

    def usage(parser, prog):
        return " ".join(parser.format_usage().removeprefix(f"usage: {prog} ").replace("[-h]", "").split())

    with open(f"{ROOT}/README.md", encoding="utf-8") as f:
        section = f.read().split("\n## Command line\n")[1].split("\n## ")[0]
    rows = {cell.split()[0]: cell for cell in re.findall(r"^\| `([^`]+)` \|", section, re.M)}
    assert sorted(rows) == sorted(name for name in COMMANDS if name != "train")
    for name, cell in rows.items():
        assert cell == f"{name} {usage(_subparser(name), 'python -m alexnet_tf ' + name)}".strip(), name
    synopsis = re.search(r"^python train\.py .*$", section, re.M).group(0)
    assert synopsis == "python train.py " + usage(train_command._parser("python train.py"), "python train.py")


def test_train_help_names_the_program_as_it_was_started(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    for argv0, prog in (("/venv/bin/alexnet-tf", "alexnet-tf train"), ("/x/alexnet_tf/__main__.py", "python -m alexnet_tf train")):
        monkeypatch.setattr(sys, "argv", [argv0, "train", "--help"])
        assert _help(["train", "--help"], capsys, monkeypatch).startswith(f"usage: {prog} [-h] [--config CONFIG]")
    from alexnet_tf import train_command
    monkeypatch.setattr(sys, "argv", ["train.py", "--help"])
    with pytest.raises(SystemExit):
        train_command.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: train.py [-h] [--config CONFIG]")


def test_a_double_dash_before_the_command_is_the_end_of_options(capsys, monkeypatch):
    """`python -m alexnet_tf -- COMMAND ...` runs COMMAND (argparse's end of options; the top level has none)."""
    assert main(["--", "config-reference"]) == 0
    assert capsys.readouterr().out.startswith("| key | default | allowed | meaning |")
    monkeypatch.setattr(sys, "argv", ["/x/alexnet_tf/__main__.py", "--", "train", "--help"])
    assert _help(["--", "train", "--help"], capsys, monkeypatch).startswith("usage: python -m alexnet_tf train [-h]")
