"""REPRODUCTION.md: the claims table, per-arm numbers, threshold sensitivity, figures, time and command.

Every word and rounding of the study's results is here: the prose in report_template.md (blocks filled
with string.Template), the tables, cells and verdicts in this module, from the numbers of analysis.py
and the ArmRuns of results.py.
"""

import functools
import math
import os
import re
from string import Template

import numpy as np

from alexnet_tf.ablation.analysis import (analyse, censored, paper_effect, seeds_needed_per_claim, sensitivity,
                                          stage_two, tested)
from alexnet_tf.ablation.plots import make_figures
from alexnet_tf.ablation.report_sections import fig1_numbers, replication_table, rescaling_line
from alexnet_tf.ablation.stats import ALPHA, Verdict, mean_std
from alexnet_tf.ablation.study import (ARM_BY_NAME, ARMS, BUDGETS, CONVERGED, LIGHTING_ROW, ROOT, SENSITIVITY,
                                       STAGE_TWO_MOST, THRESHOLD)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.md")
TABLE_HEADER = ("| # | claim | paper | ours: mean ± sd over seeds | difference [95 % interval]; simultaneous interval | "
                "test: t (df), p raw / Holm | verdict |")
DISCUSSION_BEGIN = "<!-- discussion: kept when the report is regenerated -->"
DISCUSSION_END = "<!-- end of discussion -->"

UNITS = {"val_top1_error": "%", "val_top5_error": "%", "test_top1_error": "%", "train_top1_error": "%", "gap": "pp",
         "steps_to_threshold": "steps", "steps_to_converged": "steps", "steps_to_25": "steps"}
VERDICTS = {Verdict.AGREES: "agrees", Verdict.SAME_DIRECTION_SMALLER: "same direction, smaller",
            Verdict.SMALLER: "smaller than the paper's", Verdict.OPPOSITE: "opposite",
            Verdict.SAME_DIRECTION: "same direction", Verdict.INCONCLUSIVE: "inconclusive",
            Verdict.NO_NOISE_ESTIMATE: "inconclusive (no noise estimate)", Verdict.ONE_SEED: "inconclusive (1 seed)"}
RETIRED = "retired, not tested: "
MISSING_RUNS = "missing runs"
CENSORED_NOTE = " (some runs never reached the threshold: their whole run counted)"
FIG1_FIGURE = os.path.join(ROOT, "docs", "ablation", "fig1_four_layer.png")  # fig1.py's --figure default
FIG1_CAPTION = ("The paper's Fig. 1 as it ran it, on Fashion-MNIST: the four-layer net's training error, ReLU (solid) "
                "and tanh (dashed), each at its fastest stable constant rate")
CONSTANT_LR_TEXT = (" Claim 1b measures it on the study's base and tanh arms trained again with the learning rate never "
                    "changed (`--set train.lr_drop_epochs=[] --set train.lr_max_reductions=0`, both at the base's rate; "
                    "`--constant-lr`), at the paper's 25 % (the rule was fixed in docs/ablation.md before those runs were "
                    "read); its row in the table below is the same runs at every threshold.")
SENSITIVITY_LABELS = {("tanh", "base"): "tanh / ReLU (claim 1a, retired)",
                      ("tanh", "base", "constant_lr"): "tanh / ReLU at a constant rate (claim 1b)",
                      ("base", "no_dropout"): "dropout / no dropout (claim 5b)"}


@functools.cache
def _blocks():
    """{name: text} of report_template.md: each block runs from its marker line to the next one."""
    with open(TEMPLATE, encoding="utf-8") as f:
        parts = re.split(r"^<!-- template: (\w+) -->\n", f.read(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _block(name, **values):
    return Template(_blocks()[name]).substitute(values)


def minutes(seconds):
    """'12.5 min' or '2 h 05 min'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min"


def _percent(fraction):
    return f"{fraction:.0%}"


def seeds_text(seeds, more=None):
    """'10 seeds per arm' or '10 seeds per arm, 20 for base and no_lrn, 35 for pool_2x2'."""
    text = f"{seeds} seed{'s' if seeds != 1 else ''} per arm"
    groups = {}
    for name, n in sorted((more or {}).items(), key=lambda item: [a.name for a in ARMS].index(item[0])
                          if item[0] in ARM_BY_NAME else len(ARMS)):  # in the study's order
        if n != seeds:
            groups.setdefault(n, []).append(name)
    for n, names in sorted(groups.items()):
        text += f", {n} for {' and '.join(names) if len(names) < 3 else ', '.join(names[:-1]) + ' and ' + names[-1]}"
    return text


# === Cells ===

def _number(metric, mean, std, censored=False):
    """'10.21 ± 0.15' (errors in %, gaps in pp) or '>312 ± 20' (steps; '>' when some run never reached it)."""
    if metric.startswith("steps"):
        return f"{'>' if censored else ''}{mean:.0f}" + ("" if math.isnan(std) else f" ± {std:.0f}")
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def _fmt(metric, mean, std, n, censored=0):
    if n == 0:
        return "no finished run"
    text = f"{_number(metric, mean, std, censored > 0)} {UNITS[metric]}"
    extra = f", {censored} not reached" if 0 < censored < n else (", not reached" if censored else "")
    return f"{text} ({n} seed{'s' if n != 1 else ''}{extra})"


def _ratio(r):
    """A StepsRatio as 'x2.31', 'x>2.31' (the slow arm did not always reach the threshold), 'x<..' or 'n/a' (neither did)."""
    if r.slow_censored and r.fast_censored:
        return "n/a: not reached"
    bound = ">" if r.slow_censored else "<" if r.fast_censored else ""
    return f"x{bound}{r.ratio:.2f}"


def _table(rows):
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows)


def _difference_cell(claim, test, interval=(math.nan, math.nan)):
    """The difference, its 95 % interval and, for a tested claim, its simultaneous interval (analysis.analyse)."""
    if claim.metric.startswith("steps"):  # exp of the mean log difference: the ratio b / a (geometric means)
        cell = f"x{math.exp(test.diff):.2f}" + ("" if math.isnan(test.low) else
                                                f" [x{math.exp(test.low):.2f}, x{math.exp(test.high):.2f}]")
        if not math.isnan(interval[0]):
            cell += f"; [x{math.exp(interval[0]):.2f}, x{math.exp(interval[1]):.2f}]"
        if claim.paper_value:
            paper = math.exp(paper_effect(claim))
            cell += f" (paper x{paper:.2f})" if paper < 1 else f" (paper {claim.paper_value})"
        return f"{claim.b} / {claim.a}: {cell}"
    cell = f"{100 * test.diff:+.2f}" + ("" if math.isnan(test.low) else f" [{100 * test.low:+.2f}, {100 * test.high:+.2f}]")
    if not math.isnan(interval[0]):
        cell += f"; [{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]"
    return cell + " pp" + (f" (paper {claim.paper_value} pp)" if claim.paper_value else "")


def _test_cell(test, holm_p):
    if math.isnan(test.p):
        return f"{test.kind}: no noise estimate"
    return f"{test.kind} t({test.df:.1f}) = {test.t:+.2f}, p = {test.p:.4f} / {holm_p:.4f}"


def verdict_text(analysis):
    """A ClaimAnalysis's verdict in words, noting step counts that are bounds."""
    if analysis.claim.retired:
        return RETIRED + analysis.claim.retired
    if analysis.verdict is None:
        return MISSING_RUNS
    return VERDICTS[analysis.verdict] + (CENSORED_NOTE if analysis.censored else "")


def _arm_cells(analysis):
    claim, metric = analysis.claim, analysis.claim.metric
    if analysis.values is not None:  # the four-layer net: its per-seed values, nothing censored per arm
        return [f"{name}: {_fmt(metric, *mean_std(analysis.values[name]))}" for name in (claim.a, claim.b)]
    return [f"{arm.arm.name}: {_fmt(metric, *mean_std(arm.values(metric)), censored(arm, metric))}"
            for arm in (analysis.a, analysis.b)]


def claim_row(analysis):
    """The claims table's cells of one ClaimAnalysis."""
    claim = analysis.claim
    head = [claim.key, f"{claim.text} ({claim.section})", claim.paper, "<br>".join(_arm_cells(analysis))]
    if analysis.test is None:
        return head + ["n/a", "n/a", MISSING_RUNS]
    test_cell = _test_cell(analysis.test, analysis.holm_p)
    if claim.retired:
        test_cell = test_cell.rsplit(" / ", 1)[0] + " / -"
    return head + [_difference_cell(claim, analysis.test, analysis.interval), test_cell, verdict_text(analysis)]


# === Tables ===

def _claims_table(analysis):
    rows = [claim_row(a) for a in analysis.values()]
    lighting = [LIGHTING_ROW[0], f"{LIGHTING_ROW[2]} ({LIGHTING_ROW[1]})", LIGHTING_ROW[3], "-", "-", "-", LIGHTING_ROW[4]]
    return "\n".join([TABLE_HEADER, "|---|---|---|---|---|---|---|", _table(rows + [lighting])])


def _arm_cell(arm, metric):
    """One arm's mean ± sd of `metric` over its runs, '-' without a value (a run without a test split has None)."""
    m, s, n = mean_std([v for v in arm.values(metric) if v is not None])
    return "-" if n == 0 else _number(metric, m, s, censored(arm, metric) > 0)


def _arms_table(results):
    """One row per arm (mean ± std over seeds), then a line per failed run."""
    lines = ["| arm | change | val top-1 error | val top-5 error | test top-1 error | training-image error | gap (pp) | "
             f"steps to {_percent(THRESHOLD)} | steps to {_percent(CONVERGED)} | wall per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    metrics = ("val_top1_error", "val_top5_error", "test_top1_error", "train_top1_error", "gap", "steps_to_threshold",
               "steps_to_converged")
    for name, r in results.items():
        change = r.arm.what + "".join(f", `{o}`" for o in r.arm.overrides)
        status = "" if not (r.failed or r.missing) else f" ({len(r.failed)} failed, {r.missing} not run)"
        wall = minutes(np.mean(r.values("wall_seconds"))) if r.runs else "-"
        lines.append(f"| {name}{status} | {change} | " + " | ".join(_arm_cell(r, m) for m in metrics) + f" | {wall} |")
    for name, r in results.items():
        for seed, why in r.failed:
            lines.append(f"\n{name} seed {seed} failed: {why}")
    return "\n".join(lines)


def _more_seeds_flags(more):
    """{arm: n} -> '--more-seeds a,b=n ...', the arms grouped by their count in ascending order."""
    groups = {}
    for arm, n in more.items():
        groups.setdefault(n, []).append(arm)
    return " ".join(f"--more-seeds {','.join(arms)}={n}" for n, arms in sorted(groups.items()))


def _needed(n):
    return n if n is not None else "more than 1000"


def _seeds_row(need):
    claim, test = need.claim, need.test
    if test.kind != "paired":
        return f"| {claim.key} | {test.n_a} / {test.n_b} (unpaired) | - | - | - |"
    steps = claim.metric.startswith("steps")
    unit = (lambda v: f"{v:.3f} (log steps)") if steps else (lambda v: f"{100 * v:.2f} pp")  # noqa: E731
    why = "half the paper's effect" if claim.paper_value else "study.RESOLVE (no number in the paper)"
    return f"| {claim.key} | {test.n_a} | {unit(need.sd)} | {unit(need.target)}: {why} | {_needed(need.n)} |"


def _seeds_table(analysis, more=None):
    """Per claim, the seeds a decisive verdict needs at the spread of its per-seed differences so far
    (analysis.seeds_needed_per_claim), then the second stage that rule asks for. `more` ({arm: n}, the study's
    --more-seeds): the second stage has run, and the study takes one (docs/ablation.md), so instead of
    asking for a third the table names the claims still short of the seeds the rule would now ask."""
    needs, confidence = seeds_needed_per_claim(analysis)
    lines = [f"| # | paired seeds so far | sd of the per-seed differences | target half-width | "
             f"seeds needed (interval at {100 * confidence:.2f} %) |", "|---|---|---|---|---|"]
    lines += [_seeds_row(need) for need in needs.values()]
    if more:
        short = [f"{need.claim.key} ({need.test.n_a} paired seeds; {_needed(need.n)} at its spread now)"
                 for need in needs.values() if need.short]
        lines.append(f"\nThe second stage has run (`{_more_seeds_flags(more)}`); the study takes one, so these counts "
                     "are final. " + ("Still short of the seeds this rule asks for: " + ", ".join(short) + "." if short
                                      else "Every claim now has the seeds this rule asks for."))
        return "\n".join(lines)
    want = stage_two(analysis)
    if want:
        lines.append(f"\nA second stage by this rule (at most {STAGE_TWO_MOST} seeds per arm): `{_more_seeds_flags(want)}`.")
    else:
        lines.append("\nEvery claim has the seeds this rule asks for.")
    return "\n".join(lines)


def _sensitivity_table(results, constant=None):
    """Claims 1a, 1b and 5b: the ratio of mean steps at each of SENSITIVITY's thresholds."""
    lines = ["| threshold | " + " | ".join(_percent(t) for t in SENSITIVITY) + " |",
             "|---|" + "---|" * len(SENSITIVITY)]
    for pair, ratios in sensitivity(results, constant).items():
        lines.append(f"| {SENSITIVITY_LABELS[pair]} | " + " | ".join(_ratio(r) for r in ratios) + " |")
    return "\n".join(lines)


# === The report ===

def _val_images(results):
    counts = {run.val_images for r in results.values() for run in r.runs}
    return "/".join(f"{c:,}" for c in sorted(counts)) or "?"


def _kept_discussion(out):
    if not os.path.isfile(out):
        return ""
    with open(out) as f:
        text = f.read()
    if DISCUSSION_BEGIN in text and DISCUSSION_END in text:
        kept = text.split(DISCUSSION_BEGIN, 1)[1].split(DISCUSSION_END, 1)[0].strip()
        return "" if kept.startswith("(to be written") else kept
    return ""


def _machines(results):
    """'AMD EPYC (AVX2), 2 cores, oneDNN on: 12 runs; ...': who trained the finished runs (their records say)."""
    counts = {}
    for r in results.values():
        for run in r.runs:
            counts[run.machine] = counts.get(run.machine, 0) + 1
    return "; ".join(f"{m}: {n} run{'s' if n != 1 else ''}" for m, n in counts.items()) or "-"


def _head(results, planned, config_path, budget, seeds, command, more):
    """The head block, then the study's state when not every planned run has finished."""
    runs = [run for r in results.values() for run in r.runs]
    overrides = BUDGETS[budget]
    parts = [_block("head", command=command, config=os.path.relpath(config_path, ROOT), budget=budget,
                    budget_overrides=f": `{' '.join('--set ' + o for o in overrides)}`" if overrides else "",
                    seeds=seeds_text(seeds, more),
                    seed_range=("0" if seeds == 1 else f"0..{seeds - 1}") if seeds_text(seeds, more) == seeds_text(seeds)
                    else "0..n-1 for an arm of n seeds",
                    finished=len(runs), planned=len(planned), wall=minutes(sum(run.wall_seconds for run in runs)),
                    cpu=minutes(sum(run.cpu_seconds for run in runs)), machines=_machines(results))]
    if not runs:
        parts.append(_block("not_run"))
    elif len(runs) < len(planned):
        least = min(len(r.runs) for r in results.values())
        parts.append(_block("in_progress", finished=len(runs), planned=len(planned), seeds=seeds_text(seeds, more),
                            least_seeds=f"{least} seed{'s' if least != 1 else ''}"))
    return parts


def _lrn(results):
    """The lrn block (how much the base arm's LRN layers normalise), or none when the base has no LRN layer."""
    base = results.get("base")
    if not (base and base.runs and base.runs[0].lrn):
        return []
    lrn = {k: np.mean([run.lrn[k] for run in base.runs], axis=0) for k in base.runs[0].lrn}
    return [_block("lrn", lrn=", ".join(f"{k} {m:.2g} (99th percentile {p:.2g})" for k, (m, p) in lrn.items()))]


def write_report(results, planned, out, config_path, budget, seeds, command, more=None, fig1=None, constant=None):
    """REPRODUCTION.md from `results` ({arm name: ArmRuns}), `fig1` (the four-layer net's summary.json as a
    dict, or None) and `constant` (claim 1b's constant-rate runs, {arm name: ArmRuns}, or None): the claims
    table, the test split, per-arm numbers, threshold sensitivity, figures, time and command. `more` ({arm: n}):
    the arms with more than `seeds` seeds (study.seeds_per_arm).

    Text between the DISCUSSION markers of an existing file is kept (written by hand after a run).
    """
    out_dir = os.path.dirname(os.path.abspath(out))
    keep = _kept_discussion(out)
    figures = make_figures(results, os.path.join(out_dir, "docs", "ablation"), constant)
    parts = _head(results, planned, config_path, budget, seeds, command, more)
    analysis = analyse(results, fig1, constant)  # the claims' tests, read by the claims table and the seeds table
    parts.append(_block("claims", claims_table=_claims_table(analysis), val_images=_val_images(results),
                        family=len(tested(analysis)), confidence=f"{100 * (1 - ALPHA / max(1, len(tested(analysis)))):.2f}",
                        rescaling=rescaling_line(results), replication_table=replication_table(analysis, verdict_text),
                        arms_table=_arms_table(results), seeds_table=_seeds_table(analysis, more)))
    if fig1:
        parts.append(_block("fig1", **fig1_numbers(fig1)))
    constant_lr = CONSTANT_LR_TEXT if constant else ""
    parts.append(_block("threshold", threshold=_percent(THRESHOLD), converged=_percent(CONVERGED), constant_lr=constant_lr,
                        sensitivity_table=_sensitivity_table(results, constant)))
    parts += _lrn(results)
    parts.append(_block("figures"))
    if fig1:
        parts.append(_block("figure", caption=FIG1_CAPTION, path=os.path.relpath(FIG1_FIGURE, ROOT)))
    parts += [_block("figure", caption=caption, path=os.path.relpath(path, out_dir)) for caption, path in figures]
    parts.append(_block("tail", discussion_begin=DISCUSSION_BEGIN, discussion_end=DISCUSSION_END,
                        discussion=keep or _block("no_discussion").rstrip("\n")))
    listed = list(results.items()) + [(f"{n} at a constant rate (claim 1b)", r) for n, r in (constant or {}).items()]
    for name, r in listed:
        files = ", ".join(f"`{os.path.relpath(path, out_dir)}`" for path in r.records) or "-"
        parts.append(f"- {name}: {files}\n")
    os.makedirs(out_dir, exist_ok=True)
    with open(out, "w") as f:
        f.write("".join(parts))
