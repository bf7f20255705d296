"""The paper's ablation claims re-measured: `python -m alexnet_tf ablate`.

One base config (configs/ablation_fashion_mnist.yaml) and arms that are `--set` overrides of it.
Every (arm, seed) is its own run directory RUNS/<arm>/seed<k>, trained by `train.py` in a
subprocess (one at a time, or --jobs N at once); a run with a record (records.py: RESULTS/<arm>/seed<k>.json, a few tens
of KB that can be committed) or a metrics.json is skipped, an interrupted one resumes from its last
checkpoint (train.py does that). Every finished run is measured once into its record (val
error from metrics.json; training error on the training images without augmentation or dropout;
training-error curve from TensorBoard) and REPRODUCTION.md is written: one row per claim, with
the paper's number, each arm's mean ± sd over seeds, the difference paired by seed with its 95 %
interval, t, df and p (raw and Holm-corrected across the claims) and a verdict (`stats.verdict`).

Modules: study (arms, budgets, thresholds, claims, the plan), stats (the t distribution, paired and
Welch tests, Holm, the verdict), measure (one finished run), results (ArmResult, ArmRuns: the numbers the
analysis reads), records (the record files and RUN/ablation.json), processes (train.py children, the
lock), runner (training and collecting), analysis (ClaimAnalysis: the claims' tests, seeds needed, second
stage), report (REPRODUCTION.md: every word and rounding, its prose in report_template.md), plots (the
figures); init_study (`python -m alexnet_tf init-study`: three initialisations at the paper's geometry,
docs/init_study.md).
"""

import json
import os

from alexnet_tf.ablation.runner import load_constant_lr, run_study, usable_cores
from alexnet_tf.ablation.study import BASE_CONFIG
from alexnet_tf.errors import ConfigError


def parse_more_seeds(values):
    """['base,no_lrn=20', 'pool_2x2=35'] -> {'base': 20, 'no_lrn': 20, 'pool_2x2': 35} (`--more-seeds`)."""
    more = {}
    for value in values or ():
        arms, sep, n = value.rpartition("=")
        names = [a.strip() for a in arms.split(",")]
        if not sep or not all(names) or not (n.strip().isascii() and n.strip().isdigit()):
            raise ConfigError(f"--more-seeds {value!r}; expected ARM[,ARM...]=N, e.g. base,no_lrn=20")
        for arm in names:
            if arm in more:
                raise ConfigError(f"--more-seeds names {arm} twice; expected each arm once")
            more[arm] = int(n)
    return more


def add_arguments(p):
    """The `ablate` command's arguments."""
    p.add_argument("--budget", default="full", choices=("full", "tiny"),
                   help="full: the config as written (~2 h on 2 cores); tiny: a few steps of a tiny model (~2 min)")
    p.add_argument("--seeds", type=int, help="seeds per arm, 0..N-1 (default: 3 full, 1 tiny)")
    p.add_argument("--arms", help="comma-separated subset of the arms (default: all): "
                   "base,tanh,no_lrn,lrn_constant,pool_2x2,one_tower,no_dropout,no_conv2,no_conv3")
    p.add_argument("--more-seeds", action="append", default=[], metavar="ARM[,ARM...]=N",
                   help="these arms get seeds 0..N-1 instead of --seeds (the second stage: more seeds for the claims "
                        "the first left undecided); repeatable")
    p.add_argument("--out", default="REPRODUCTION.md", help="the report; figures go to docs/ablation/ next to it")
    p.add_argument("--runs-dir", default=os.path.join("runs", "ablation"), help="one run directory per arm and seed")
    p.add_argument("--results", default=None,
                   help="one small JSON record per finished run, all the report reads; a run with a record is not trained "
                        "again (default: RUNS_DIR/results; keep it in git to carry a long study across machines)")
    p.add_argument("--config", default=None, help="base config (default: configs/ablation_fashion_mnist.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override applied to every arm; repeatable")
    p.add_argument("--report-only", action="store_true", help="train nothing: measure finished runs and write the report")
    p.add_argument("--four-layer", default=None, metavar="SUMMARY",
                   help="the four-layer net's results/fig1/summary.json (`fig1`): claims 1 and 2c join the report")
    p.add_argument("--constant-lr", default=None, metavar="RESULTS",
                   help="the --results directory of the base and tanh arms trained at a constant rate (docs/ablation.md): "
                        "claim 1b joins the report")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each on cores/JOBS intra-op threads (default 1; 2 finish a study ~1.4x "
                        "sooner on 2 cores, docs/ablation.md)")


def main(args):
    """`python -m alexnet_tf ablate` (arguments: add_arguments)."""
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
    # the command that trains the runs (--report-only only rewrites the report of the same runs)
    command = "python -m alexnet_tf ablate" + "".join(f" {a}" for a in args.argv if a != "--report-only")
    more = parse_more_seeds(args.more_seeds)
    cores = usable_cores()
    if not 1 <= args.jobs <= cores:
        raise ConfigError(f"--jobs {args.jobs}: expected 1 to {cores} (the cores this process may use): "
                          "each run needs a core of its own")
    fig1 = None
    if args.four_layer:
        try:
            with open(args.four_layer) as f:
                fig1 = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--four-layer {args.four_layer}: {e}; expected the summary.json that `python -m alexnet_tf fig1` "
                              "writes") from None
    constant = None
    if args.constant_lr:
        constant = load_constant_lr(args.constant_lr, args.config or BASE_CONFIG, args.budget, args.set)
    if not args.report_only:  # training measures the base arm's model first: TensorFlow's notices off the console
        from alexnet_tf import tf_startup
        tf_startup.start()
    run_study(args.config or BASE_CONFIG, args.budget, args.seeds, args.runs_dir, args.out, arms=arms, extra=args.set,
              train=not args.report_only, command=command, results_dir=args.results, jobs=args.jobs, more=more,
              fig1=fig1, constant=constant)
