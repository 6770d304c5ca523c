"""Registry step: point an alias (`@champion`) at a model version only when it beats the holder on the same data.

The rule, for `trackflow train` and `trackflow sweep` alike:
- only a compatible candidate is compared: its input columns, target and classes (tags
  of the registered version, `schema_tags`) must be those of the holder, since a request
  made for the holder must work on it. An incompatible one stays registered, not promoted;
- the better one has the better validation metric at its last epoch; a tie goes to the
  lower `val_loss`, and a tie on both keeps the holder (`rank_key`, also the sweep's ranking).

Read-compare-set runs under a lock (`promotion_lock`), so two commands finishing at once
never leave the alias on the one that lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from tasks.tracking import client
from trackflow import runs, store
from trackflow.config import SWEEP_METRICS
from trackflow.naming import param

# What a registered version must share with the holder to be compared with it (see schema_tags).
SCHEMA_PARTS = {"trackflow.inputs": "input columns", "trackflow.target": "target", "trackflow.classes": "classes"}
TIEBREAK = "val_loss"

LOCK_TIMEOUT = 120.0  # seconds to wait for another promotion of the same model
STALE_LOCK = 60.0  # a registry-side lock older than this was left by a dead process (a promotion takes < 1 s)


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: str
    value: float
    previous_version: str | None
    previous_value: float | None
    reason: str


def _short_digest(items: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(items), ensure_ascii=False).encode()).hexdigest()[:16]


def schema_tags(inputs: Sequence[str], target: str, classes: Sequence[object]) -> dict[str, str]:
    """Tags of a registered version saying what it takes and answers, compared without loading models.

    Input columns are compared as a set (requests name their columns); classes as their
    names. Long lists are kept as a count and a digest.
    """
    names = [str(c) for c in classes]
    shown = json.dumps(names, ensure_ascii=False)
    return {"trackflow.inputs": f"{len(inputs)} columns, sha256 {_short_digest(sorted(map(str, inputs)))}",
            "trackflow.target": str(target),
            "trackflow.classes": shown if len(shown) <= 500 else f"{len(names)} classes, sha256 {_short_digest(names)}"}


def _schema_of(mv, run) -> dict[str, str]:
    """A version's schema tags; for one registered before trackflow wrote them, what its run's params say."""
    if all(k in mv.tags for k in SCHEMA_PARTS):
        return {k: mv.tags[k] for k in SCHEMA_PARTS}
    params = run.data.params if run is not None else {}
    known = {"trackflow.target": params["target"]} if "target" in params else {}
    try:
        known["trackflow.inputs"] = schema_tags(json.loads(params["features"]), "", [])["trackflow.inputs"]
    except (KeyError, ValueError):  # not logged, or cut short for MLflow's length limit: not compared
        pass
    return known


def differences(candidate: Mapping[str, str], holder: Mapping[str, str]) -> list[str]:
    """What differs between two versions' schemas (parts either one does not record are not compared)."""
    return [what for key, what in SCHEMA_PARTS.items() if key in candidate and key in holder
            and candidate[key] != holder[key]]


def rank_key(metric: str, value: float, val_loss: float | None) -> tuple[float, float]:
    """Sorts best first: `metric` in its direction, then the lower `val_loss`. Equal keys keep their order."""
    sign = -1.0 if SWEEP_METRICS[metric] == "max" else 1.0
    return sign * value, math.inf if val_loss is None else val_loss


def _final_metrics(c, run_id: str | None):
    """A run and its metrics' last values (per-epoch history: the last epoch), or (None, {})."""
    if not run_id:
        return None, {}
    run = c.get_run(run_id)
    return run, run.data.metrics


def _compare(metric: str, cand: Mapping[str, float], held: Mapping[str, float], version: str) -> tuple[bool, str]:
    """(candidate wins, why) by rank_key; a holder without the metric loses."""
    value, prev = cand[metric], held.get(metric)
    if prev is None:
        return True, f"version {version} has no {metric} to compare"
    if value != prev:
        won = rank_key(metric, value, None) < rank_key(metric, prev, None)
        return won, f"{metric} {value:.4f} {'beats' if won else 'does not beat'} version {version}'s {prev:.4f}"
    loss, prev_loss = cand.get(TIEBREAK), held.get(TIEBREAK)
    won = rank_key(metric, value, loss) < rank_key(metric, prev, prev_loss)
    return won, (f"{metric} ties version {version}'s {prev:.4f} and {TIEBREAK} {_fmt(loss)} is "
                 f"{'lower than' if won else 'not lower than'} its {_fmt(prev_loss)}")


def _and(items: list[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def _fmt(v: float | None) -> str:
    return "unknown" if v is None else f"{v:.4f}"


@runs.uninterruptible  # lock, compare and set on one thread: a signal stops the wait, not the promotion
def promote_if_better(name: str, version: str, metric: str, alias: str) -> Promotion:
    """Point `alias` of registered model `name` at `version` if it is compatible with the holder and beats it.

    Both values are read from the versions' runs (their last epoch), so a candidate is
    judged by what the store holds. The alias is only ever set to a version that exists.
    """
    from mlflow.exceptions import MlflowException

    c, version = client(), str(version)
    mv = c.get_model_version(name, version)  # raises if the version does not exist
    run, cand = _final_metrics(c, mv.run_id)
    if metric not in cand:
        raise ValueError(f"run {mv.run_id} of models:/{name}/{version} logged no {metric}; it cannot be ranked")
    with promotion_lock(name, alias):
        try:
            holder = c.get_model_version_by_alias(name, alias)
        except MlflowException as exc:  # "alias not found"; any other failure must not pass for an empty alias
            if exc.error_code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                raise
            holder = None
        if holder is None:
            c.set_registered_model_alias(name, alias, version)
            return Promotion(True, version, cand[metric], None, None,
                             f"models:/{name}/{version} is now @{alias}: no version held the alias")
        if str(holder.version) == str(version):
            return Promotion(True, version, cand[metric], None, None, f"models:/{name}/{version} already is @{alias}")
        held_run, held = _final_metrics(c, holder.run_id)
        prev = held.get(metric)
        differ = differences(_schema_of(mv, run), _schema_of(holder, held_run))
        if differ:
            return Promotion(False, version, cand[metric], str(holder.version), prev,
                             f"@{alias} stays version {holder.version}: this model's {_and(differ)} "
                             f"{'differs' if differ == ['target'] else 'differ'} from it, so requests made for it would fail here; to keep both, pass another "
                             f"{param('model_name')}")
        won, why = _compare(metric, cand, held, str(holder.version))
        if won:
            c.set_registered_model_alias(name, alias, version)
            return Promotion(True, version, cand[metric], str(holder.version), prev,
                             f"models:/{name}/{version} is now @{alias}: {why}")
        return Promotion(False, version, cand[metric], str(holder.version), prev,
                         f"@{alias} stays version {holder.version}: {why}")


@contextlib.contextmanager
def promotion_lock(name: str, alias: str) -> Iterator[None]:
    """Serializes read-compare-set of `name@alias` across processes and machines.

    - SQLite registry: an fcntl lock on a file beside the database. The kernel releases it
      when its holder dies, so the guarantee is exact: each promotion compares against the
      alias as the previous one left it, and the alias never ends on a version that lost.
    - Any other registry (PostgreSQL, a tracking server): a registry-side marker, a
      registered model named `<name>.promotion-lock.<alias>`, created to take the lock and
      deleted to release it. Creation is atomic (a unique name in the registry's database),
      so the guarantee is the same while holders live. A marker older than STALE_LOCK
      seconds was left by a process that died holding it and is removed: a promotion holds
      it for a few registry calls, far less than that.
    """
    uri = store.registry_uri(store.configure())
    db = store.sqlite_path(uri)
    if db is not None:
        from filelock import FileLock

        with FileLock(str(db.with_name(db.name + ".promote.lock")), timeout=LOCK_TIMEOUT):
            yield
        return
    with _registry_marker(f"{name}.promotion-lock.{alias}"):
        yield


@contextlib.contextmanager
def _registry_marker(marker: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    c = client()
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            c.create_registered_model(marker, tags={"trackflow.lock_owner": owner,
                                                    "trackflow.lock_since": str(time.time())},
                                      description="trackflow: a promotion in progress (removed when it ends)")
            break
        except MlflowException as exc:
            # MLflow answers a clash by reading the model that holds the name; if its holder deleted it in between,
            # that read fails and the answer is RESOURCE_DOES_NOT_EXIST (SqlAlchemyStore.create_registered_model,
            # seen through a tracking server under load): the name is free again.
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            since = float(c.get_registered_model(marker).tags.get("trackflow.lock_since", "nan"))
            if time.time() - since > STALE_LOCK:
                c.delete_registered_model(marker)
                continue
        except MlflowException:  # released meanwhile
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"another promotion holds {marker!r} for over {LOCK_TIMEOUT:.0f} s")
        time.sleep(0.1)
    try:
        yield
    finally:
        c.delete_registered_model(marker)
