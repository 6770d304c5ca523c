"""Every flow's parameters, with their defaults, in one place.

Each flow takes one of these models as its parameter (Prefect validates it before the
run starts), the CLI builds its options from the same fields, and `prefect.yaml`
passes the same names. Change a default here and it changes everywhere.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from trackflow.naming import param


Optimizer = Literal["sgd", "adagrad", "adam", "adamw"]
Activation = Literal["relu", "tanh", "sigmoid"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


GENERATED_FIELDS = ("n_samples", "n_features", "n_informative")
"""Fields that shape the generated set; with `data` they do not apply."""

NOT_MODEL_FIELDS = ("data", "experiment", "model_name", "register_model", "skip_unchanged", "promote",
                    "promote_alias")
"""TrainConfig fields that say where the data is, where the run goes or whether to skip it, not
what is trained: left out of the training key (tasks/changes.py; the data's bytes are in it).
Every other field, including one added later, is part of the key."""


class TrainConfig(_Config):
    """Parameters of the training pipeline (`trackflow train`)."""

    data: str | None = Field(
        None, min_length=1, description="CSV, TSV or Parquet table to train on. Without it: the tutorial's generated set."
    )
    target: str | None = Field(None, min_length=1, description="Column of --data to predict (any number of classes).")
    features: list[str] | None = Field(
        None, min_length=1, description="Columns of --data to learn from (without it: all but --target and --drop)."
    )
    drop: list[str] = Field([], description="Columns of --data to leave out (ids, leaks).")
    sep: str | None = Field(None, min_length=1, max_length=1,
                            description="Column separator of a CSV --data (default: ',' for .csv, a tab for .tsv).")
    thousands: str | None = Field(None, min_length=1, max_length=1,
                                  description="Thousands separator in the numbers of --data (e.g. ',' for 1,065).")
    na_values: list[str] = Field([], description="Strings of --data that mean a missing value, besides empty cells "
                                                 "and pandas' own (NA, n/a, null, ...): e.g. '-'.")
    n_samples: int = Field(1000, ge=50, le=10_000_000, description="Rows of the generated set (without --data).")
    n_features: int = Field(10, ge=2, le=10_000, description="Feature columns of the generated set (without --data).")
    n_informative: int = Field(
        5, ge=1, description="Informative features among n_features of the generated set (make_classification)."
    )
    hidden_layers: list[int] = Field([64, 64], min_length=1, max_length=32,
                                     description="Widths of the network's hidden layers, comma-separated.")
    activation: Activation = Field("relu", description="Activation after each hidden layer.")
    epochs: int = Field(10, ge=1, le=100_000, description="Passes over the training split.")
    lr: float = Field(0.001, gt=0, le=10, description="Learning rate of the optimizer.")
    batch_size: int = Field(32, ge=1, le=1_000_000, description="Mini-batch size.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout probability after each hidden layer.")
    optimizer: Optimizer = Field("adam", description="Optimizer.")
    momentum: float = Field(
        0.9, ge=0, lt=1, description="Momentum of --optimizer sgd (other optimizers have none): 0.9, the usual "
        "choice, because plain SGD (0) barely moves at the default learning rate.",
    )
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (L2 for sgd, adagrad and adam; decoupled for "
                                                       "adamw).")
    l1: float = Field(0.0, ge=0, description="L1 penalty: this times the sum of |w| over the weight matrices (not "
                                             "the biases), added to the loss minimised; train_loss stays the "
                                             "cross-entropy alone.")
    test_size: float = Field(0.2, gt=0, lt=1, description="Fraction of the data held out for the test split.")
    val_size: float = Field(
        0.1, gt=0, lt=1, description="Fraction of the data held out for validation (per-epoch metrics)."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for data generation, splitting, init and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train; auto = CUDA when available.")
    experiment: str = Field("classifier", min_length=1, description="MLflow experiment to log the run in.")
    model_name: str = Field("classifier", min_length=1, description="Registered model name in the MLflow registry.")
    register_model: bool = Field(True, description="Register the trained model in the MLflow registry.")
    skip_unchanged: bool = Field(
        False, description="Train only if the data's bytes, the model's settings, the training code or the "
        "torch/scikit-learn/trackflow versions changed since the experiment's last finished run of the same key."
    )
    promote: bool = Field(
        True, description="Give the registered version the alias --promote-alias when no version holds it, or when "
        "it beats the holder on the same input columns, target and classes (validation metric at the last epoch, "
        "then val_loss). --no-promote registers only.",
    )
    promote_alias: str = Field("champion", min_length=1, max_length=255,
                               description="Registry alias of the best version of the model.")

    @field_validator("promote_alias")
    @classmethod
    def _check_alias(cls, alias: str) -> str:
        # MLflow's rules (mlflow.utils.validation, _validate_model_alias_name and _reserved), checked here
        # so that a bad alias is refused before the sweep rather than by the registry after it.
        if not re.fullmatch(r"[\w\-]+", alias):
            raise ValueError("an alias may only contain letters, digits, underscores (_) and dashes (-)")
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            raise ValueError("'latest' and v<N> (version numbers) are reserved by the MLflow registry; "
                             "pick another alias")
        return alias

    @model_validator(mode="after")
    def _check_consistency(self) -> "TrainConfig":
        if bad := [w for w in self.hidden_layers if not 1 <= w <= 65_536]:
            raise ValueError(f"hidden_layers widths must be in [1, 65536]; got {bad}")
        if self.test_size + self.val_size >= 0.9:
            raise ValueError(
                f"test_size + val_size ({self.test_size} + {self.val_size}) must be < 0.9 "
                "so that training keeps at least 10% of the data"
            )
        if self.data is None:
            if self.target or self.features or self.drop or self.sep or self.thousands or self.na_values:
                raise ValueError(f"target, features, drop, sep, thousands and na_values read columns of "
                                 f"{param('data')}; give {param('data')} too")
            if self.n_informative > self.n_features:
                raise ValueError(
                    f"n_informative ({self.n_informative}) must be <= n_features ({self.n_features}); "
                    f"lower {param('n_informative')} or raise {param('n_features')}"
                )
            n_small = round(self.n_samples * min(self.test_size, self.val_size))
            if n_small < 4:
                raise ValueError(
                    f"n_samples={self.n_samples} leaves only {n_small} samples in the smallest split; "
                    f"raise {param('n_samples')} or the split fractions so each split has at least 4"
                )
        elif not self.target:
            raise ValueError(f"data needs a target: name the column to predict with {param('target')}")
        elif self.thousands and self.thousands in (".", self.sep or ("\t" if ".tsv" in self.data.lower() else ",")):
            raise ValueError(f"thousands {self.thousands!r} cannot also be the column separator or the decimal "
                             f"point; pass {param('sep')} too (e.g. --sep ';' --thousands ',')")
        return self


DEFAULT_SEARCH_TRIALS = 20
"""Trainings a random or TPE search runs unless --trials says otherwise."""

SWEEP_METRICS = {"val_accuracy": "max", "val_loss": "min"}
"""Validation metrics a sweep can rank trials by, and which direction is better."""

RANKING_METRIC = "val_accuracy"
"""The validation metric a sweep ranks by unless told otherwise; a training run is promoted on it."""


SWEEP_AXES = {
    "hidden_layers_grid": "hidden_layers",
    "activations": "activation",
    "batch_sizes": "batch_size",
    "optimizers": "optimizer",
    "weight_decays": "weight_decay",
    "l1s": "l1",
    "dropouts": "dropout",
    "lrs": "lr",
}
"""Each SweepConfig option that varies a TrainConfig field, and the field, outermost first: the grid's nesting
order (the network's shape, then how it is trained, the learning rate innermost)."""

_SHORT = {
    "hidden_layers": lambda v: "h" + "x".join(map(str, v)),
    "activation": str,
    "batch_size": lambda v: f"bs{v}",
    "optimizer": str,
    "weight_decay": lambda v: f"wd{v:g}",
    "l1": lambda v: f"l1_{v:g}",
    "dropout": lambda v: f"do{v:g}",
    "lr": lambda v: f"lr{v:g}",
}


def trial_label(config: TrainConfig, fields: Collection[str]) -> str:
    """`config`'s values of `fields` (sweep axes' fields) in the grid's nesting order: e.g. 'h64x64-bs128-adam-lr0.01'."""
    return "-".join(_SHORT[f](getattr(config, f)) for f in SWEEP_AXES.values() if f in fields)


def _distinct(values: list) -> list:
    """`values` without repeats, in the order given (lists, a network's shape, compared as tuples)."""
    first: dict = {}
    for v in values:
        first.setdefault(tuple(v) if isinstance(v, list) else v, v)
    return list(first.values())


DASK_SCHEMES = ("tcp://", "tls://", "inproc://", "ws://", "wss://")


class ClusterConfig(_Config):
    """Where a job's work runs: the same three fields, checked alike, for sweeps, batch inference and scoring.

    `runner` names the kind, `workers` sizes what the job starts itself, `dask_address`
    names a running Dask cluster (which implies runner dask).
    """

    runner: Literal["auto", "sequential", "processes", "dask"] = Field(
        "auto", description="Where the work runs: auto; sequential (this process); processes; dask."
    )
    workers: int | None = Field(
        None, ge=1, le=256, description="Worker processes for the processes and dask runners; default: the cores."
    )
    dask_address: str | None = Field(
        None, description="Address of a running Dask scheduler (tcp://HOST:PORT) to run on."
    )

    @model_validator(mode="after")
    def _check_runner(self) -> "ClusterConfig":
        if self.dask_address and self.workers:
            raise ValueError(f"give either {param('dask_address')} (an existing cluster) or {param('workers')} (a local one), "
                             "not both")
        if self.dask_address and self.runner not in ("auto", "dask"):
            raise ValueError(f"{param('dask_address')} runs the work on Dask; it does not go with runner {self.runner!r}")
        if self.workers and self.runner == "sequential":
            raise ValueError(f"{param('workers')} sizes a pool of processes; it does not go with runner 'sequential'")
        if self.dask_address and not self.dask_address.startswith(DASK_SCHEMES):
            raise ValueError(f"{param('dask_address')} {self.dask_address!r} must look like tcp://HOST:PORT")
        return self

    @property
    def on_dask(self) -> bool:
        return bool(self.dask_address) or self.runner == "dask"


class BatchClusterConfig(ClusterConfig):
    """The runner of a batch job (inference, scoring): this process, or a Dask cluster, fed in shards."""

    runner: Literal["auto", "sequential", "dask"] = Field(
        "auto", description="Where the files are processed: auto = on Dask with --dask-address, otherwise in this "
        "process; sequential = in this process; dask = on Dask (--dask-address, or a local cluster of --workers "
        "single-threaded processes started for the job). A cluster's workers read the input folder and write "
        "the output folder themselves: on several machines both must be on a shared filesystem.",
    )
    workers: int | None = Field(
        None, ge=1, le=256,
        description="Worker processes of the local Dask cluster (--runner dask); default: the cores.",
    )
    dask_address: str | None = Field(
        None, description="Address of a running Dask scheduler (tcp://HOST:PORT) to process the files on."
    )
    shard_files: int = Field(
        64, ge=1, le=100_000, description="Files per Dask task (a shard): each worker reads, runs and returns a "
        "shard's records at once; the job appends them.",
    )

    @model_validator(mode="after")
    def _check_workers(self) -> "BatchClusterConfig":
        if self.workers and self.runner != "dask":
            raise ValueError(f"{param('workers')} sizes a local Dask cluster; pass {param('runner')} dask with it")
        return self


class SweepConfig(ClusterConfig):
    """Parameters of a sweep (`trackflow sweep`): a grid over a base TrainConfig.

    Each axis (SWEEP_AXES) given replaces the base's value of its field; one left out keeps it.
    """

    base: TrainConfig = Field(default_factory=TrainConfig, description="Training parameters shared by every trial.")
    lrs: list[float] = Field([0.001, 0.01, 0.1], min_length=1, description="Learning rates to try (comma-separated).")
    optimizers: list[Optimizer] = Field(["adam"], min_length=1, description="Optimizers to try: sgd, adagrad, adam, adamw.")
    dropouts: list[float] = Field([0.2], min_length=1, description="Dropout probabilities to try.")
    batch_sizes: list[int] | None = Field(
        None, min_length=1, description="Mini-batch sizes to try; without it: the base's --batch-size.")
    activations: list[Activation] | None = Field(
        None, min_length=1, description="Activations to try (relu, tanh, sigmoid); without it: the base's --activation.")
    hidden_layers_grid: list[list[int]] | None = Field(
        None, min_length=1, description="Network shapes to try, '/' between shapes and ',' within one "
        "(64,64/128/32,32,32); without it: the base's --hidden-layers.")
    l1s: list[float] | None = Field(None, min_length=1, description="L1 penalties to try; without it: the base's --l1.")
    weight_decays: list[float] | None = Field(
        None, min_length=1, description="Weight decays to try; without it: the base's --weight-decay.")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        RANKING_METRIC, description="Validation metric (last epoch) that ranks trials and decides promotion."
    )
    runner: Literal["auto", "sequential", "processes", "dask"] = Field(
        "auto",
        description="Where trials run: auto = one after another, or a pool of worker processes when the trials "
        "are long enough to pay for starting them; sequential; processes; dask (--dask-address, or a local "
        "cluster of --workers processes).",
    )
    search: Literal["grid", "random", "tpe"] = Field(
        "grid", description="How trials are chosen: grid = every combination of the lists, in order; random = "
        "Optuna's RandomSampler over the same lists; tpe = Optuna's TPESampler, which learns from finished trials.",
    )
    n_trials: int | None = Field(
        None, ge=1, le=10_000, description="Trainings for --search random|tpe (a point already tried is not "
        f"trained again and does not count); default: {DEFAULT_SEARCH_TRIALS}, or the grid's size if smaller.",
    )
    lr_range: list[float] | None = Field(
        None, min_length=2, max_length=2, description="LOW,HIGH: with --search random|tpe, draw the learning rate "
        "log-uniformly from this range instead of from --lrs.",
    )
    prune: Literal["none", "median", "asha"] = Field(
        "none", description="Stop hopeless trials early on their validation --metric, reported each epoch: "
        "median = Optuna's MedianPruner (below the median of earlier trials at the same epoch); asha = its "
        "SuccessiveHalvingPruner (asynchronous successive halving).",
    )

    @field_validator("batch_sizes", "activations", "hidden_layers_grid", "l1s", "weight_decays")
    @classmethod
    def _check_axis(cls, values: list | None, info: ValidationInfo) -> list | None:
        """Each value is one the base's field takes (TrainConfig's own rules, so they are written once)."""
        base = info.data.get("base")
        if values is None or base is None:
            return values
        field = SWEEP_AXES[info.field_name]
        for v in values:
            try:
                TrainConfig(**(base.model_dump() | {field: v}))
            except ValidationError as exc:
                why = exc.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"value {v!r}: {why}") from None
        return values

    @model_validator(mode="after")
    def _check_grid(self) -> "SweepConfig":
        bad = [lr for lr in self.lrs if not 0 < lr <= 10]
        if bad:
            raise ValueError(f"lrs must all be in (0, 10]; got {bad}")
        bad = [d for d in self.dropouts if not 0 <= d < 1]
        if bad:
            raise ValueError(f"dropouts must all be in [0, 1); got {bad}")
        sizes = {axis: len(values) for axis, values in zip(SWEEP_AXES, self.axes().values())}
        if (n := math.prod(sizes.values())) > 10_000:
            raise ValueError(f"the grid has {n:,} trials, more than 10,000; narrow "
                             + ", ".join(f"{param(axis)} ({k} values)" for axis, k in sizes.items() if k > 1))
        if self.search == "grid" and self.n_trials is not None:
            raise ValueError(f"{param('n_trials')} goes with {param('search')} random or tpe; the grid trains every "
                             "combination")
        if self.prune != "none" and self.base.epochs < 2:
            raise ValueError(f"{param('prune')} stops a trial between epochs; with {param('epochs')} "
                             f"{self.base.epochs} there is none: raise {param('epochs')} or leave {param('prune')} out")
        if self.lr_range is not None:
            low, high = self.lr_range
            if self.search == "grid":
                raise ValueError(f"{param('lr_range')} goes with {param('search')} random or tpe; a grid takes "
                                 f"{param('lrs')}")
            if "lrs" in self.model_fields_set:
                raise ValueError(f"give either {param('lrs')} or {param('lr_range')}, not both")
            if not 0 < low < high <= 10:
                raise ValueError(f"lr_range must be LOW,HIGH with 0 < LOW < HIGH <= 10; got {low:g},{high:g}")
        return self

    def axes(self) -> dict[str, list]:
        """Each swept TrainConfig field and its distinct values (the base's alone for an axis left out), outermost first."""
        return {field: _distinct(values) if (values := getattr(self, axis)) is not None else [getattr(self.base, field)]
                for axis, field in SWEEP_AXES.items()}

    def varied(self) -> list[str]:
        """The TrainConfig fields that differ between trials (axes with more than one value), outermost first."""
        return [field for field, values in self.axes().items() if len(values) > 1]

    def trials(self) -> list[TrainConfig]:
        """The grid: one TrainConfig per combination of the axes' values, in SWEEP_AXES' nesting order, without
        duplicates (with today's options: optimizer, then dropout, then lr)."""
        axes, base = self.axes(), self.base.model_dump()
        return [TrainConfig(**(base | dict(zip(axes, combo)))) for combo in itertools.product(*axes.values())]

    def planned_trials(self) -> int:
        """How many trainings the sweep plans: the grid's size, or --trials (default at most the grid's size)."""
        if self.search == "grid":
            return len(self.trials())
        if self.n_trials is not None:
            return self.n_trials
        return DEFAULT_SEARCH_TRIALS if self.lr_range else min(DEFAULT_SEARCH_TRIALS, len(self.trials()))


class InferConfig(BatchClusterConfig):
    """Parameters shared by the batch-inference flows (`trackflow infer text|audio`).

    Each kind adds its `model` and its `glob` (which files are inputs), with its own default.
    """

    in_dir: str = Field(..., min_length=1, description="Folder of input files (searched with --glob).")
    out_dir: str = Field(
        ..., min_length=1, description="Folder for results.jsonl and results.csv; reusing it resumes the job."
    )
    batch_size: int = Field(8, ge=1, le=1024, description="Inputs per forward pass.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run; auto = CUDA when available.")
    experiment: str = Field("batch-inference", min_length=1, description="MLflow experiment to log the job in.")
    log_every: float = Field(10.0, gt=0, le=3600, description="Seconds between progress lines in the Prefect log.")
    allow_empty: bool = Field(
        False, description="An input folder that is missing or has nothing to process ends the job quietly "
        "(scheduled inboxes).",
    )

    @model_validator(mode="after")
    def _check_glob(self) -> "InferConfig":
        if self.glob.startswith("/") or ".." in self.glob.split("/"):
            raise ValueError(f"glob {self.glob!r} must be relative to in_dir (no leading '/' or '..')")
        return self


class TextInferConfig(InferConfig):
    """Parameters of GPT-2 style text generation over a folder of prompts (`trackflow infer text`)."""

    model: str = Field(
        "gpt2", min_length=1, description="Hub id, local folder, or MLflow model URI (models:/..., runs:/...)."
    )
    glob: str = Field(
        "**/*.{txt,jsonl}",
        min_length=1,
        description='Which files under in_dir are prompts: .txt holds one prompt; .jsonl one {"prompt": ...} per line.',
    )
    max_new_tokens: int = Field(50, ge=1, le=4096, description="Tokens generated per prompt.")
    do_sample: bool = Field(False, description="Sample (--do-sample) instead of greedy decoding (--no-do-sample, the default).")
    temperature: float = Field(1.0, gt=0, le=100, description="Sampling temperature (with --do-sample).")
    top_k: int = Field(
        50, ge=0, le=100_000, description="Sample from the k most likely tokens; 0 = no limit (with --do-sample)."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (with --do-sample).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for sampling.")


class AudioInferConfig(InferConfig):
    """Parameters of Wav2Vec2 CTC transcription over a folder of recordings (`trackflow infer audio`)."""

    model: str = Field(
        "facebook/wav2vec2-base-960h", min_length=1, description="Hub id, local folder, or MLflow model URI."
    )
    glob: str = Field(
        "**/*.{wav,flac,ogg,mp3}",
        min_length=1,
        description="Which files under in_dir are recordings ({a,b} alternatives; case-insensitive).",
    )
    chunk_seconds: float = Field(
        30.0, ge=2, le=600, description="Recordings longer than this are transcribed in overlapping chunks and stitched."
    )
    max_seconds: float = Field(
        4 * 3600.0, gt=0, description="Recordings longer than this are refused (error record), to bound memory."
    )


class PruneConfig(_Config):
    """Parameters of retention (`trackflow runs prune`, the `prune-runs` flow)."""

    older_than: float = Field(90.0, ge=0, description="Delete runs started more than this many days ago.")
    experiment: str | None = Field(None, min_length=1, description="Only this experiment's runs (default: all).")


class ScoreConfig(BatchClusterConfig):
    """Parameters of scoring tables with a registered classifier (`trackflow score`)."""

    in_dir: str = Field(
        ..., min_length=1,
        description="Table to score: a CSV, TSV or Parquet file, or a folder of them (searched recursively).",
    )
    out_dir: str = Field(
        ..., min_length=1,
        description="Folder for one Parquet file per input, results.jsonl and results.csv; reusing it resumes the job.",
    )
    model: str = Field(
        "models:/classifier@champion", min_length=1,
        description="Registered model: models:/NAME@ALIAS (resolved to a version once, at the start) or "
        "models:/NAME/VERSION.",
    )
    batch_rows: int = Field(65_536, ge=1, le=10_000_000, description="Rows per model call (memory grows with it).")
    keep: list[str] | None = Field(
        None, min_length=1, description="Input columns copied into each output, comma-separated; default: all."
    )
    experiment: str = Field("batch-scoring", min_length=1, description="MLflow experiment to log the job in.")
    log_every: float = Field(10.0, gt=0, le=3600, description="Seconds between progress lines in the Prefect log.")
    allow_empty: bool = Field(
        False, description="An existing input folder with nothing to score ends the job quietly (scheduled inboxes)."
    )
