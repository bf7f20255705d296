"""The study's results as the analysis and the report read them: one ArmResult per finished (arm, seed),
gathered per arm in an ArmRuns. measure.py builds an ArmResult from a run directory, records.py from a
record; nothing downstream reads a record or a run directory."""

from dataclasses import dataclass, field, fields, replace

from alexnet_tf.ablation.study import STEP_METRICS, Arm


@dataclass(frozen=True)
class ArmResult:
    """One arm at one seed: what was measured of its finished run. The fields from val_top1_error on are a
    record's "measured" part, in its order (records.py); a Claim's `metric` names one of them."""
    seed: int
    machine: str                 # who trained it (machine.describe), "unknown" when its run did not say
    val_top1_error: float
    val_top5_error: float
    test_top1_error: float | None  # the test split, evaluated once after training: reported, never compared
    train_top1_error: float      # on its own training images, in inference mode (no dropout, no flips)
    gap: float                   # val_top1_error - train_top1_error
    lrn: dict                    # {"lrn1": [mean, p99], ...} of alpha * sum a² / k at each LRN layer's input
    steps_per_epoch: int
    total_steps: int
    val_images: int
    reached: dict                # {threshold: the first step whose trailing mean reached it, or None}
    steps_to_threshold: int      # reached[THRESHOLD], or total_steps when never reached (a lower bound)
    steps_to_converged: int      # the same for CONVERGED
    censored: dict               # {threshold: never reached}
    wall_seconds: float
    cpu_seconds: float
    curve: tuple                 # (steps, training error of each logged window): arrays
    epoch_curves: dict           # {"train" | "validation": (epoch indices from 0, top-1 error)}: arrays

    def value(self, metric):
        """The number a claim compares (`metric`: a Claim's metric, e.g. "val_top1_error"); a step count without a
        field of its own is read off `reached`, the whole run when never reached (a lower bound)."""
        if metric in STEP_METRICS and not hasattr(self, metric):
            return self.reached[STEP_METRICS[metric]] or self.total_steps
        return getattr(self, metric)


MEASURED = tuple(f.name for f in fields(ArmResult))[2:]  # a record's "measured" keys, in order


@dataclass
class ArmRuns:
    """One arm of a study: its finished runs and what became of the others, in plan (seed) order (runner.collect
    fills it)."""
    arm: Arm
    runs: list = field(default_factory=list)     # ArmResult per finished seed
    failed: list = field(default_factory=list)   # (seed, train.py's message) per diverged seed
    missing: int = 0                             # planned seeds with neither a run nor a record yet
    records: list = field(default_factory=list)  # the record path of every finished or failed seed

    @property
    def seeds(self):
        return [run.seed for run in self.runs]

    def values(self, metric):
        """The per-seed values of `metric`, in the order of `runs`."""
        return [run.value(metric) for run in self.runs]

    def on_seeds(self, seeds):
        """This arm with only its runs of `seeds`."""
        keep = set(seeds)
        return replace(self, runs=[run for run in self.runs if run.seed in keep])
