"""REPRODUCTION.md: the claims table, per-arm numbers, threshold sensitivity, figures, time and command.

The prose is in report_template.md (blocks filled with string.Template); the tables and numbers
are computed here.
"""

import functools
import math
import os
import re
from string import Template

import numpy as np

from alexnet_tf.ablation.plots import make_figures
from alexnet_tf.ablation.stats import ALPHA, compare, holm, mean_std, seed_values, seeds_needed, verdict
from alexnet_tf.ablation.study import (BUDGETS, CLAIMS, CONVERGED, LIGHTING_ROW, RESOLVE, ROOT, SENSITIVITY, STAGE_TWO_MOST,
                                       THRESHOLD, seeds_text)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.md")
TABLE_HEADER = ("| # | claim | paper | ours: mean ± sd over seeds | difference [95 % interval] | "
                "test: t (df), p raw / Holm | verdict |")
DISCUSSION_BEGIN = "<!-- discussion: kept when the report is regenerated -->"
DISCUSSION_END = "<!-- end of discussion -->"

UNITS = {"val_top1_error": "%", "val_top5_error": "%", "test_top1_error": "%", "train_top1_error": "%", "gap": "pp",
         "steps_to_threshold": "steps", "steps_to_converged": "steps"}


@functools.cache
def _blocks():
    """{name: text} of report_template.md: each block runs from its marker line to the next one."""
    with open(TEMPLATE, encoding="utf-8") as f:
        parts = re.split(r"^<!-- template: (\w+) -->\n", f.read(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def _block(name, **values):
    return Template(_blocks()[name]).substitute(values)


def minutes(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min"


def _percent(fraction):
    return f"{fraction:.0%}"


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


def _ratio(slow, fast, slow_censored, fast_censored):
    """'x2.31', 'x>2.31' (the slow arm did not always reach the threshold), 'x<..' or 'n/a' (neither did)."""
    if slow_censored and fast_censored:
        return "n/a: not reached"
    bound = ">" if slow_censored else "<" if fast_censored else ""
    return f"x{bound}{np.mean(slow) / np.mean(fast):.2f}"


def _table(rows):
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in rows)


# === Tables ===

def paper_effect(claim):
    """The paper's difference in the units of the claim's test, or None: a fraction of top-1 error for
    errors ('+1.4' pp -> 0.014), log(steps ratio b / a) for steps ('x6' for tanh / ReLU -> log 6;
    'x2' for dropout / none, expected -1 -> log 1/2)."""
    if not claim.paper_value:
        return None
    if claim.metric.startswith("steps"):
        return claim.expected * math.log(float(claim.paper_value.removeprefix("x")))
    return float(claim.paper_value) / 100


def claim_values(claim, result):
    """(per-seed values the test compares, seeds): steps as log steps (their ratio is the paper's measure)."""
    values = seed_values(result, claim.metric)
    if claim.metric.startswith("steps"):
        values = [math.log(v) for v in values]
    return values, list(result["seeds"])


def _difference_cell(claim, test):
    if claim.metric.startswith("steps"):  # exp of the mean log difference: the ratio b / a (geometric means)
        cell = f"x{math.exp(test.diff):.2f}" + ("" if math.isnan(test.low) else
                                                f" [x{math.exp(test.low):.2f}, x{math.exp(test.high):.2f}]")
        if claim.paper_value:
            paper = math.exp(paper_effect(claim))
            cell += f" (paper x{paper:.2f})" if paper < 1 else f" (paper {claim.paper_value})"
        return f"{claim.b} / {claim.a}: {cell}"
    cell = f"{100 * test.diff:+.2f}" + ("" if math.isnan(test.low) else f" [{100 * test.low:+.2f}, {100 * test.high:+.2f}]")
    return cell + " pp" + (f" (paper {claim.paper_value} pp)" if claim.paper_value else "")


def _test_cell(test, holm_p):
    if math.isnan(test.p):
        return f"{test.kind}: no noise estimate"
    return f"{test.kind} t({test.df:.1f}) = {test.t:+.2f}, p = {test.p:.3f} / {holm_p:.3f}"


def _on_seeds(result, seeds):
    """`result` (runner.collect) with only its runs of `seeds`."""
    keep = [i for i, s in enumerate(result["seeds"]) if s in set(seeds)]
    return {**result, "runs": [result["runs"][i] for i in keep], "seeds": [result["seeds"][i] for i in keep]}


def analyse(results):
    """{claim key: {"claim", "row", "test", "holm", "verdict"}} for the claims whose arms are in `results`.

    Each claim's test (paired over the seeds both arms finished, else Welch), then Holm's correction over
    every claim that has a p-value, then the verdict rule (stats.verdict)."""
    tests = {}
    for claim in CLAIMS:
        if claim.a not in results or claim.b not in results:
            continue
        (va, sa), (vb, sb) = claim_values(claim, results[claim.a]), claim_values(claim, results[claim.b])
        tests[claim.key] = (claim, compare(va, sa, vb, sb) if va and vb else None)
    keys = [k for k, (_, t) in tests.items() if t is not None]
    adjusted = dict(zip(keys, holm([tests[k][1].p for k in keys])))
    out = {}
    for key, (claim, test) in tests.items():
        ra, rb = results[claim.a], results[claim.b]
        threshold = {"steps_to_threshold": THRESHOLD, "steps_to_converged": CONVERGED}.get(claim.metric)
        cens = lambda r: sum(run["censored"][threshold] for run in r["runs"]) if threshold else 0  # noqa: E731
        if test is not None and test.kind == "paired":  # the means of the seeds the test pairs (arms may have more)
            ra, rb = _on_seeds(ra, rb["seeds"]), _on_seeds(rb, ra["seeds"])
        cells = [f"{claim.a}: {_fmt(claim.metric, *mean_std(seed_values(ra, claim.metric)), cens(ra))}",
                 f"{claim.b}: {_fmt(claim.metric, *mean_std(seed_values(rb, claim.metric)), cens(rb))}"]
        head = [claim.key, f"{claim.text} ({claim.section})", claim.paper, "<br>".join(cells)]
        if test is None:
            out[key] = {"claim": claim, "row": head + ["n/a", "n/a", "missing runs"], "test": None, "holm": math.nan,
                        "verdict": "missing runs"}
            continue
        v = verdict(test, adjusted[key], claim.expected, paper_effect(claim))
        if cens(ra) or cens(rb):
            v += " (some runs never reached the threshold: their whole run counted)"
        out[key] = {"claim": claim, "row": head + [_difference_cell(claim, test), _test_cell(test, adjusted[key]), v],
                    "test": test, "holm": adjusted[key], "verdict": v}
    return out


def _claims_table(analysis):
    rows = [a["row"] for a in analysis.values()]
    lighting = [LIGHTING_ROW[0], f"{LIGHTING_ROW[2]} ({LIGHTING_ROW[1]})", LIGHTING_ROW[3], "-", "-", "-", LIGHTING_ROW[4]]
    return "\n".join([TABLE_HEADER, "|---|---|---|---|---|---|---|", _table(rows + [lighting])])


def _arms_table(results):
    """One row per arm (mean ± std over seeds), then a line per failed run."""
    lines = ["| arm | change | val top-1 error | val top-5 error | test top-1 error | training-image error | gap (pp) | "
             f"steps to {_percent(THRESHOLD)} | steps to {_percent(CONVERGED)} | wall per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        def cell(metric, r=r):
            m, s, n = mean_std([v for v in seed_values(r, metric) if v is not None])  # None: no test split
            threshold = {"steps_to_threshold": THRESHOLD, "steps_to_converged": CONVERGED}.get(metric)
            censored = threshold is not None and any(run["censored"][threshold] for run in r["runs"])
            return "-" if n == 0 else _number(metric, m, s, censored)
        change = r["arm"].what + "".join(f", `{o}`" for o in r["arm"].overrides)
        status = "" if not (r["failed"] or r["missing"]) else \
            f" ({len(r['failed'])} failed, {r['missing']} not run)"
        wall_runs = [run["wall_seconds"] for run in r["runs"]]
        lines.append(f"| {name}{status} | {change} | {cell('val_top1_error')} | {cell('val_top5_error')} | "
                     f"{cell('test_top1_error')} | {cell('train_top1_error')} | {cell('gap')} | {cell('steps_to_threshold')} | "
                     f"{cell('steps_to_converged')} | {minutes(np.mean(wall_runs)) if wall_runs else '-'} |")
    for name, r in results.items():
        for seed, why in r["failed"]:
            lines.append(f"\n{name} seed {seed} failed: {why}")
    return "\n".join(lines)


def seeds_needed_per_claim(analysis):
    """{claim key: (claim, test, sd of the per-seed differences, target half-width, seeds needed or None)} for
    the claims with a paired test.

    With a paper number P the target is |P|/2: an interval at the Bonferroni confidence 1 - ALPHA/m (m
    claims tested; Holm's first step, so at least as strict as Holm) of half-width h <= |P|/2 cannot hold
    both 0 and P: it either excludes 0 (Holm p < ALPHA: agrees / does not agree) or lies within |P| of 0
    (the 95 % interval, narrower, is then on the near side of P: smaller than the paper's effect). Without
    a number the target is study.RESOLVE, fixed in advance. The difference itself is never used, so more
    seeds chosen from this table depend on the noise only.
    """
    tested = [a for a in analysis.values() if a["test"] is not None and not math.isnan(a["test"].p)]
    confidence = 1 - ALPHA / max(1, len(tested))
    out = {}
    for a in tested:
        claim, test = a["claim"], a["test"]
        if test.kind != "paired":
            out[claim.key] = (claim, test, None, None, None)
            continue
        sd = test.se * math.sqrt(test.n_a)
        paper = paper_effect(claim)
        target = abs(paper) / 2 if paper is not None else RESOLVE
        out[claim.key] = (claim, test, sd, target, seeds_needed(sd, target, confidence))
    return out, confidence


def stage_two(analysis, most=STAGE_TWO_MOST):
    """{arm: seeds} for a second stage (`--more-seeds`): each arm of a claim that needs more seeds than it has
    gets the most any of its claims needs, at most `most` (the base, in every claim, takes the largest)."""
    needs, _ = seeds_needed_per_claim(analysis)
    out = {}
    for claim, test, _sd, _target, n in needs.values():
        if test.kind != "paired" or (n is not None and n <= test.n_a):
            continue
        want = most if n is None else min(n, most)
        for arm in (claim.a, claim.b):
            out[arm] = max(out.get(arm, 0), want)
    return out


def _seeds_table(analysis, more=None):
    """Per claim, the seeds a decisive verdict needs at the spread of its per-seed differences so far
    (seeds_needed_per_claim), then the second stage that rule asks for. `more` ({arm: n}, the study's
    --more-seeds): the second stage has run, and the study takes one (docs/ablation.md), so instead of
    asking for a third the table names the claims still short of the seeds the rule would now ask."""
    needs, confidence = seeds_needed_per_claim(analysis)
    lines = [f"| # | paired seeds so far | sd of the per-seed differences | target half-width | "
             f"seeds needed (interval at {100 * confidence:.2f} %) |", "|---|---|---|---|---|"]
    for claim, test, sd, target, n in needs.values():
        if test.kind != "paired":
            lines.append(f"| {claim.key} | {test.n_a} / {test.n_b} (unpaired) | - | - | - |")
            continue
        steps = claim.metric.startswith("steps")
        unit = (lambda v: f"{v:.3f} (log steps)") if steps else (lambda v: f"{100 * v:.2f} pp")  # noqa: E731
        why = "half the paper's effect" if claim.paper_value else "fixed in advance (no number in the paper)"
        lines.append(f"| {claim.key} | {test.n_a} | {unit(sd)} | {unit(target)}: {why} | "
                     f"{n if n is not None else 'more than 1000'} |")
    if more:
        flags = _more_seeds_flags(more)
        short = [f"{claim.key} ({test.n_a} paired seeds; {n if n is not None else 'more than 1000'} at its spread now)"
                 for claim, test, _sd, _target, n in needs.values()
                 if test.kind == "paired" and (n is None or n > test.n_a)]
        lines.append(f"\nThe second stage has run (`{flags}`); the study takes one, so these counts are final. "
                     + ("Still short of the seeds this rule asks for: " + ", ".join(short) + "." if short
                        else "Every claim now has the seeds this rule asks for."))
        return "\n".join(lines)
    want = stage_two(analysis)
    if want:
        flags = _more_seeds_flags(want)
        lines.append(f"\nA second stage by this rule (at most {STAGE_TWO_MOST} seeds per arm): `{flags}`.")
    else:
        lines.append("\nEvery claim has the seeds this rule asks for.")
    return "\n".join(lines)


def _more_seeds_flags(more):
    """{arm: n} -> '--more-seeds a,b=n ...', the arms grouped by their count in ascending order."""
    groups = {}
    for arm, n in more.items():
        groups.setdefault(n, []).append(arm)
    return " ".join(f"--more-seeds {','.join(arms)}={n}" for n, arms in sorted(groups.items()))


def _sensitivity_table(results):
    """Claims 1 and 5b: the ratio of mean steps at each of SENSITIVITY's thresholds."""
    lines = ["| threshold | " + " | ".join(_percent(t) for t in SENSITIVITY) + " |",
             "|---|" + "---|" * len(SENSITIVITY)]
    pairs = [("tanh / ReLU (claim 1)", "tanh", "base"), ("dropout / no dropout (claim 5b)", "base", "no_dropout")]
    for label, slow, fast in pairs:
        if slow not in results or fast not in results or not results[slow]["runs"] or not results[fast]["runs"]:
            continue
        arms = (results[slow], results[fast])
        if len(set(arms[0]["seeds"]) & set(arms[1]["seeds"])) >= 2:  # the seeds the claim's paired test uses
            arms = (_on_seeds(arms[0], arms[1]["seeds"]), _on_seeds(arms[1], arms[0]["seeds"]))
        cells = []
        for t in SENSITIVITY:
            steps = [[run["reached"][t] or run["total_steps"] for run in r["runs"]] for r in arms]
            censored = [any(run["reached"][t] is None for run in r["runs"]) for r in arms]
            cells.append(_ratio(*steps, *censored))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# === The report ===

def _val_images(results):
    counts = {run["val_images"] for r in results.values() for run in r["runs"]}
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
        for m in r["machines"]:
            counts[m] = counts.get(m, 0) + 1
    return "; ".join(f"{m}: {n} run{'s' if n != 1 else ''}" for m, n in counts.items()) or "-"


def write_report(results, planned, out, config_path, budget, seeds, command, more=None):
    """REPRODUCTION.md: the claims table, per-arm numbers, threshold sensitivity, figures, time and command.
    `more` ({arm: n}): the arms with more than `seeds` seeds (study.seeds_per_arm).

    Text between the DISCUSSION markers of an existing file is kept (written by hand after a run).
    """
    out_dir = os.path.dirname(os.path.abspath(out))
    keep = _kept_discussion(out)
    figures = make_figures(results, os.path.join(out_dir, "docs", "ablation"))
    runs = [run for r in results.values() for run in r["runs"]]
    overrides = BUDGETS[budget]
    parts = [_block("head", command=command, config=os.path.relpath(config_path, ROOT), budget=budget,
                    budget_overrides=f": `{' '.join('--set ' + o for o in overrides)}`" if overrides else "",
                    seeds=seeds_text(seeds, more),
                    seed_range=("0" if seeds == 1 else f"0..{seeds - 1}") if seeds_text(seeds, more) == seeds_text(seeds)
                    else "0..n-1 for an arm of n seeds",
                    finished=len(runs), planned=len(planned), wall=minutes(sum(run["wall_seconds"] for run in runs)),
                    cpu=minutes(sum(run["cpu_seconds"] for run in runs)), machines=_machines(results))]
    if not runs:
        parts.append(_block("not_run"))
    elif len(runs) < len(planned):
        least = min(len(r["runs"]) for r in results.values())
        parts.append(_block("in_progress", finished=len(runs), planned=len(planned), seeds=seeds_text(seeds, more),
                            least_seeds=f"{least} seed{'s' if least != 1 else ''}"))
    analysis = analyse(results)  # the claims' tests, read by the claims table and the seeds table
    parts.append(_block("claims", claims_table=_claims_table(analysis), val_images=_val_images(results),
                        arms_table=_arms_table(results), seeds_table=_seeds_table(analysis, more)))
    parts.append(_block("threshold", threshold=_percent(THRESHOLD), converged=_percent(CONVERGED),
                        sensitivity_table=_sensitivity_table(results)))
    base = results.get("base")
    if base and base["runs"] and base["runs"][0]["lrn"]:
        lrn = {k: np.mean([run["lrn"][k] for run in base["runs"]], axis=0) for k in base["runs"][0]["lrn"]}
        values = ", ".join(f"{k} {m:.2g} (99th percentile {p:.2g})" for k, (m, p) in lrn.items())
        parts.append(_block("lrn", lrn=values))
    parts.append(_block("figures"))
    parts += [_block("figure", caption=caption, path=os.path.relpath(path, out_dir)) for caption, path in figures]
    parts.append(_block("tail", discussion_begin=DISCUSSION_BEGIN, discussion_end=DISCUSSION_END,
                        discussion=keep or _block("no_discussion").rstrip("\n")))
    for name, r in results.items():
        files = ", ".join(f"`{os.path.relpath(path, out_dir)}`" for path in r["records"]) or "-"
        parts.append(f"- {name}: {files}\n")
    os.makedirs(out_dir, exist_ok=True)
    with open(out, "w") as f:
        f.write("".join(parts))
