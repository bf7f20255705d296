"""REPRODUCTION.md's sections beside the claims table: the test split as a second held-out set (one line per
claim, by the criterion of docs/ablation.md), what LRN's constant factor alone is worth (no_lrn - lrn_constant),
and the four-layer net of `python -m alexnet_tf fig1` (claims 1 and 2c). Tables and cells here; prose in
report_template.md."""

import math

from alexnet_tf.ablation.analysis import replication
from alexnet_tf.ablation.stats import compare


def _pp(test):
    return f"{100 * test.diff:+.2f} [{100 * test.low:+.2f}, {100 * test.high:+.2f}] pp"


def replication_table(analysis, verdict_text):
    """One row per claim: its validation verdict (`verdict_text` words it) and the same paired difference on the
    test split, judged by analysis.replication."""
    lines = ["| # | metric on the test split | difference on validation [95 %] | on the test split [95 %] | "
             "p (test split) | verdict (validation) | test split |", "|---|---|---|---|---|---|---|"]
    for key, a in analysis.items():
        found = replication(a)
        if found is None:
            why = ("the four-layer net's claim is on the test split itself" if a.claim.metric == "test_top1_error"
                   else "training error only: no test-split counterpart")
            lines.append(f"| {key} | - | - | - | - | {verdict_text(a)} | {why} |")
            continue
        test, word = found
        metric = "top-1 error" if a.claim.metric == "val_top1_error" else "test error - training-image error"
        lines.append(f"| {key} | {metric} | {_pp(a.test)} | {_pp(test)} | {test.p:.4f} | {verdict_text(a)} | "
                     f"**{word}** |")
    return "\n".join(lines)


def rescaling(results):
    """(Test of val top-1 error, no_lrn minus lrn_constant, paired over the seeds both have) or None: what LRN's
    constant factor k^-beta alone is worth against no LRN (beside claim 2b, outside Holm's family)."""
    if not all(name in results and results[name].runs for name in ("no_lrn", "lrn_constant")):
        return None
    a, b = results["lrn_constant"], results["no_lrn"]
    return compare(a.values("val_top1_error"), a.seeds, b.values("val_top1_error"), b.seeds)


def rescaling_line(results):
    test = rescaling(results)
    if test is None:
        return "-"
    return f"{_pp(test)}, {test.kind} t({test.df:.0f}) = {test.t:+.2f}, p = {test.p:.4f} ({test.n_a} paired seeds)"


def sweep_table(fig1):
    """The learning-rate sweep of fig1.py: per activation and rate, steps to 25 % per sweep seed, and stability."""
    rates = sorted({float(lr) for by_lr in fig1["sweep"].values() for lr in by_lr})
    lines = ["| activation | " + " | ".join(f"lr {r:g}" for r in rates) + " | chosen |",
             "|---|" + "---|" * (len(rates) + 1)]
    for act, by_lr in fig1["sweep"].items():
        cells = []
        for r in rates:
            runs = by_lr.get(f"{r:g}")
            if runs is None:
                cells.append("-")
                continue
            steps = ", ".join(str(s) if s is not None else "never" for s in runs["steps_to_25"])
            cells.append(steps + ("" if all(runs["stable"]) else " (unstable)"))
        lines.append(f"| {act} | " + " | ".join(cells) + f" | {fig1['chosen_lr'][act]:g} |")
    return "\n".join(lines)


def fig1_numbers(fig1):
    """{name: text} that the fig1 block of report_template.md reads."""
    s = fig1["steps_to_25"]
    r = s["ratio"]
    out = {"fig1_command": fig1["command"], "sweep_table": sweep_table(fig1),
           "relu_lr": f"{fig1['chosen_lr']['relu']:g}", "tanh_lr": f"{fig1['chosen_lr']['tanh']:g}",
           "fig1_seeds": str(len(s["seeds"])),
           "relu_steps": ", ".join(map(str, s["steps"]["relu"])), "tanh_steps": ", ".join(map(str, s["steps"]["tanh"])),
           "fig1_ratio": f"x{r['mean']:.2f} [x{r['low']:.2f}, x{r['high']:.2f}], paired t({r['df']:.0f}) = "
                         f"{r['t']:+.2f}, p = {r['p']:.2g}",
           "fig1_machines": "; ".join(fig1["machines"]),
           "fig1_time": f"{fig1['wall_seconds'] / 60:.0f} min wall, {fig1['cpu_seconds'] / 60:.0f} min CPU"}
    lrn = fig1.get("lrn")
    if lrn:
        d = lrn["difference"]
        (mw, sw), (mo, so) = lrn["mean_sd"]["with"], lrn["mean_sd"]["without"]
        out["fig1_lrn"] = (f"with LRN {100 * mw:.2f} ± {100 * sw:.2f} %, without {100 * mo:.2f} ± {100 * so:.2f} % "
                           f"({len(lrn['seeds'])} paired seeds, {lrn['steps']} steps each); without − with "
                           f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] pp, "
                           f"p = {d['p']:.2g}")
    else:
        out["fig1_lrn"] = "not run"
    out["never"] = str(sum(s["never_reached"].values())) if not math.isnan(r["mean"]) else "-"
    return out
