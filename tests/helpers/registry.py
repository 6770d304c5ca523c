"""Registered versions with chosen metrics and schemas, and two promotions racing, for tests of tasks/registry.py."""

from __future__ import annotations

import threading
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tasks.registry import promote_if_better, schema_tags

SCHEMA = dict(inputs=["a", "b"], target="y", classes=[0, 1])


def candidate(client, name: str, val_accuracy, val_loss: float | None = 0.5, schema: dict | None = SCHEMA,
              params: dict | None = None) -> str:
    """A finished run with per-epoch metrics (a list: one value per epoch), registered as a new version of `name`."""
    exp = client.get_experiment_by_name("reg") or client.get_experiment(client.create_experiment("reg"))
    run_id = client.create_run(exp.experiment_id).info.run_id
    accs = val_accuracy if isinstance(val_accuracy, list) else [val_accuracy]
    metrics = [Metric("val_accuracy", v, 0, i + 1) for i, v in enumerate(accs)]
    metrics += [Metric("val_loss", val_loss, 0, len(accs))] if val_loss is not None else []
    client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in (params or {}).items()])
    client.set_terminated(run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    tags = schema_tags(**schema) if schema else {}
    return str(client.create_model_version(name, f"runs:/{run_id}/model", run_id, tags=tags).version)


def champion(client, name: str = "m") -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def slow_alias_reads(monkeypatch, delays: dict[str, float]) -> None:
    """Widen the read-compare-set window: a thread named in `delays` waits that long after reading the alias.

    Without a lock, the slower (worse) candidate reads the old champion, then sets the
    alias after the better one did: the champion would be the one that lost.
    """
    read = MlflowClient.get_model_version_by_alias

    def slow(self, *args, **kwargs):
        mv = read(self, *args, **kwargs)
        time.sleep(delays.get(threading.current_thread().name, 0))
        return mv

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", slow)


def race(client, name: str, better: str, worse: str) -> dict:
    """Promote `better` and `worse` of `name` at once, from threads named after them; their Promotions."""
    start, results = threading.Barrier(2), {}

    def promote(version):
        start.wait()
        results[threading.current_thread().name] = promote_if_better(name, version, "val_accuracy", "champion")

    threads = [threading.Thread(target=promote, args=(v,), name=n) for n, v in (("better", better), ("worse", worse))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results
