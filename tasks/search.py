"""Random and TPE search and pruning over a sweep's lists: Optuna's samplers and pruners, through ask and tell.

Only this process talks to Optuna (an in-memory study); trainings run where the sweep's
runner says (here, worker processes, Dask), as calls of tasks.training.train_segment, so
workers import only torch and NumPy. With a pruner a trial trains in segments that end at
the epochs where the pruner can act (ASHA's rungs; the median pruner's checks after its
warm-up): each segment returns the training's state (weights, optimizer, generators,
history), this process reports every epoch's validation metric to the trial, asks the
pruner, and sends the state back for the next segment or stops the trial. Training in
segments gives the same weights and history, bit for bit, as in one go; without a pruner a
trial is one call. A worker gets the sweep's arrays once (kept under a token), not with each
segment.

A categorical space is finite and a sampler may propose a point already tried: it is not
trained again. The study is told that point's known result (its value, or pruned or failed
as it ended), so the sampler learns the same as from the first try; it does not count as
one of the --trials trainings, and the search stops once every point of the space has been
tried, or after ASK_LIMIT proposals per training asked for.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tasks.training import DataNotHere, TrainingState, TrialData, TrialOutcome, train_segment
from trackflow.config import SWEEP_METRICS, SweepConfig, TrainConfig

# Proposals asked for, per training of --trials, before a search whose sampler keeps proposing points
# already tried gives up on the rest.
ASK_LIMIT = 20

# Pruner settings, chosen with benchmarks/bench_search.py (the breast cancer set, 20 epochs, 48 points):
# ASHA's first rung at a quarter of the epochs, halving (reduction factor 2). Rungs at epochs 1 and 3 of
# 20 (factor 3) pruned the slow learners that end best and missed the grid's best by 1.2-1.5 pp.
ASHA = dict(reduction_factor=2, min_early_stopping_rate=0)
MEDIAN = dict(n_startup_trials=5)

if TYPE_CHECKING:  # optuna is imported where it is used: a grid sweep never loads it (~0.3 s)
    import optuna
    from optuna.trial import TrialState


@dataclass
class TrialResult:
    """How a trial ended: completed (with its training), pruned (at `epoch`) or failed (`error`, and `epoch`
    when known)."""

    outcome: str  # "completed", "pruned" or "failed"
    training: TrialOutcome | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None
    epoch: int | None = None

    @property
    def epochs(self) -> int:
        """Epochs this trial trained (a diverged epoch counts: it was trained)."""
        done = len(self.history.get("train_loss", []))
        return max(done, self.epoch or 0)


@dataclass(frozen=True)
class Pruning:
    pruner: optuna.pruners.BasePruner
    checks: tuple[int, ...]  # epochs (from 1) after which the pruner is asked
    description: str


def make_pruner(kind: str, epochs: int, **settings) -> Pruning | None:
    """Optuna's pruner for --prune, and the epochs where it can act; None for `none`.

    `settings` override ASHA / MEDIAN (the benchmark tunes them).
    """
    if kind == "none":
        return None
    import optuna

    if kind == "asha":
        s = {"min_resource": max(1, epochs // 4)} | ASHA | settings
        rungs, k = [], 0
        while (step := s["min_resource"] * s["reduction_factor"] ** (s["min_early_stopping_rate"] + k)) < epochs:
            rungs.append(step)
            k += 1
        return Pruning(optuna.pruners.SuccessiveHalvingPruner(**s), tuple(rungs),
                       "SuccessiveHalvingPruner(" + ", ".join(f"{k}={v}" for k, v in s.items()) + ")")
    s = MEDIAN | {"n_warmup_steps": max(1, epochs // 4), "interval_steps": max(1, epochs // 10)} | settings
    checks = tuple(range(max(1, s["n_warmup_steps"]), epochs, s["interval_steps"]))
    return Pruning(optuna.pruners.MedianPruner(**s), checks,
                   "MedianPruner(" + ", ".join(f"{k}={v}" for k, v in s.items()) + ")")


def make_sampler(kind: str, seed: int, workers: int, **settings) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for --search, seeded with the sweep's seed. A grid is enqueued in its order (the sampler
    is not asked then). With several trials in flight TPE assumes the worst for the running ones (constant_liar),
    so that it does not propose them again."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=workers > 1, **settings)
    return optuna.samplers.RandomSampler(seed=seed)


def describe_sampler(kind: str, seed: int, workers: int) -> str:
    """The sampler as the parent run records it."""
    if kind == "grid":
        return "grid (every point, in order)"
    if kind == "tpe":
        return f"TPESampler(seed={seed}, constant_liar={workers > 1})"
    return f"RandomSampler(seed={seed})"


def _plain(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


class Space:
    """The sweep's axes as Optuna distributions: one categorical per list (values that are not plain numbers or
    strings, such as layer shapes, as their JSON), and the learning rate log-uniform with --lr-range."""

    def __init__(self, axes: dict[str, list], lr_range: list[float] | None = None):
        self.axes = {name: list(dict.fromkeys(self._encode(v) for v in values)) for name, values in axes.items()}
        self.lr_range = lr_range
        if lr_range is not None:
            self.axes.pop("lr", None)

    @staticmethod
    def _encode(value):
        return value if _plain(value) else json.dumps(value)

    @staticmethod
    def _decode(value, like: list):
        return json.loads(value) if not all(_plain(v) for v in like) else value

    @property
    def size(self) -> float:
        """How many points the space has (inf with a learning-rate range)."""
        return math.inf if self.lr_range is not None else math.prod(len(v) for v in self.axes.values())

    def suggest(self, trial: optuna.Trial) -> dict:
        """TrainConfig fields for this trial, as the sampler proposes them."""
        params = {name: trial.suggest_categorical(name, choices) for name, choices in self.axes.items()}
        if self.lr_range is not None:
            params["lr"] = trial.suggest_float("lr", *self.lr_range, log=True)
        return params

    def fields(self, params: dict, raw: dict[str, list]) -> dict:
        return {k: self._decode(v, raw[k]) if k in raw else v for k, v in params.items()}

    def encoded(self, config: TrainConfig) -> dict:
        return {name: self._encode(getattr(config, name)) for name in self.axes}


@dataclass
class _Running:
    trial: optuna.Trial
    key: str
    config: TrainConfig
    handle: object
    knobs: dict
    state: TrainingState | None = None
    reported: int = 0
    followers: list[optuna.Trial] = field(default_factory=list)


@dataclass
class SearchSummary:
    trainings: int = 0
    proposals: int = 0
    repeats: int = 0  # proposals of a point already tried: told its known result, not trained
    segments: int = 0
    stop_reason: str = ""


def run_search(config: SweepConfig, data: TrialData, *, executor, workers: int, knobs: Callable[[TrainConfig], dict],
               start: Callable[[TrainConfig], object], finish: Callable[[object, TrialResult], None],
               pruning: Pruning | None = None, sampler: optuna.samplers.BaseSampler | None = None) -> SearchSummary:
    """Run the sweep's trials, up to `workers` at a time on `executor` (None: here, one at a time).

    start(config) is called as a trial starts and returns its handle (the caller's record of
    it); finish(handle, result) as it ends. The trials are the grid in order with --search
    grid, else --trials trainings proposed by `sampler` (default: make_sampler's).
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial otherwise; the sweep reports its own
    metric = config.metric
    epochs = config.base.epochs
    space = Space(config.axes(), config.lr_range)
    raw = config.axes()
    study = optuna.create_study(direction="maximize" if SWEEP_METRICS[metric] == "max" else "minimize",
                                sampler=sampler or make_sampler(config.search, config.base.seed, workers),
                                pruner=pruning.pruner if pruning else optuna.pruners.NopPruner())
    planned = config.planned_trials()
    if config.search == "grid":
        for c in config.trials():
            study.enqueue_trial(space.encoded(c))
    checks = pruning.checks if pruning else ()
    token = uuid.uuid4().hex
    summary = SearchSummary()
    running: dict[Future, _Running] = {}
    by_key: dict[str, _Running] = {}  # trials in flight
    known: dict[str, tuple[TrialState, float | None, dict[int, float]]] = {}  # points tried: how they ended

    def submit(run: _Running, with_data: bool = False) -> None:
        stop = next((e for e in checks if e > run.reported), epochs)
        summary.segments += 1
        if executor is None:
            future: Future = Future()
            try:
                future.set_result(train_segment(data, token, run.knobs, run.state, stop))
            except Exception as exc:
                future.set_exception(exc)
        else:
            future = executor.submit(train_segment, data if with_data else token, token, run.knobs, run.state, stop)
        running[future] = run

    def tell(trial: optuna.Trial, state: TrialState, value: float | None, steps: dict[int, float],
             replay: bool = True) -> None:
        """End `trial` in the study; `replay`: report `steps` first (a repeat of a point, told its known result)."""
        for step, v in steps.items() if replay else ():
            trial.report(v, step)
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)

    def end(run: _Running, result: TrialResult, state: TrialState) -> None:
        value = result.history[metric][-1] if state == TrialState.COMPLETE else None
        steps = {i + 1: v for i, v in enumerate(result.history.get(metric, []))}
        tell(run.trial, state, value, steps, replay=False)
        known[run.key] = (state, value, steps)
        del by_key[run.key]
        for follower in run.followers:
            tell(follower, state, value, steps)
        finish(run.handle, result)

    def fill() -> None:
        while len(running) < max(1, workers) and not summary.stop_reason:
            if summary.trainings >= planned:
                summary.stop_reason = f"{planned} trials trained" if config.search != "grid" else "the grid is done"
            elif len(known) + len(by_key) >= space.size:
                summary.stop_reason = f"every point of the space tried ({int(space.size)})"
            elif summary.proposals >= ASK_LIMIT * planned + 100:
                summary.stop_reason = f"the sampler proposed only points already tried ({summary.proposals} proposals)"
            if summary.stop_reason:
                return
            trial = study.ask()
            summary.proposals += 1
            params = space.fields(space.suggest(trial), raw)
            key = json.dumps(params, sort_keys=True)
            if key in known:
                summary.repeats += 1
                tell(trial, *known[key])
                continue
            if key in by_key:
                summary.repeats += 1
                by_key[key].followers.append(trial)
                continue
            cfg = TrainConfig(**(config.base.model_dump() | params))
            run = _Running(trial, key, cfg, start(cfg), knobs(cfg))
            by_key[key] = run
            summary.trainings += 1
            submit(run)

    try:
        fill()
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                run = running.pop(future)
                try:
                    value = future.result()
                except Exception as exc:
                    end(run, TrialResult("failed", history=run.state.history if run.state else {},
                                         error=f"{type(exc).__name__}: {exc}", epoch=getattr(exc, "epoch", None)),
                        TrialState.FAIL)
                    continue
                if isinstance(value, DataNotHere):  # this worker has not had the arrays yet
                    summary.segments -= 1
                    submit(run, with_data=True)
                    continue
                history = value.history
                for epoch in range(run.reported + 1, len(history[metric]) + 1):
                    run.trial.report(history[metric][epoch - 1], epoch)
                run.reported = len(history[metric])
                if isinstance(value, TrialOutcome):
                    end(run, TrialResult("completed", training=value, history=history), TrialState.COMPLETE)
                elif run.trial.should_prune():
                    end(run, TrialResult("pruned", history=history, epoch=run.reported), TrialState.PRUNED)
                else:
                    run.state = value
                    submit(run)
            fill()
    except BaseException:
        for future in running:
            future.cancel()
        raise
    return summary
