"""The Prefect tasks: each step of `tasks/` wrapped once, retried where it does I/O.

Flows call these; tests and benchmarks call the plain functions in `tasks/`. Tracking
calls and artifact uploads retry, since a store or a network can hiccup; compute never
does, since it would fail the same way again. A task's function lives in `tasks/`, so a
worker process (a process pool, Dask) unpickles it by reference, by importing that module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import batch, changes, data, evaluation, models, registry, scoring, shards, tracking, training

# Models, tables and arrays are passed between tasks: no input hashing, no caching.
_IO = dict(retries=2, retry_delay_seconds=[1, 4], cache_policy=NO_CACHE)
_COMPUTE = dict(cache_policy=NO_CACHE)

# data and training (a bad table is the user's to fix, not a hiccup: no retries)
load_data = task(data.load_data, **_COMPUTE)
split_table = task(data.split_table, **_COMPUTE)
encode_splits = task(data.encode_splits, **_COMPUTE)
train_and_score = task(training.train_and_score, **_COMPUTE)
train_on = task(training.train_on, name="train_trial", **_COMPUTE)
evaluate = task(evaluation.evaluate, **_COMPUTE)
training_key = task(changes.training_key, **_COMPUTE)



def retry_unless_bad_model(task, task_run, state) -> bool:
    """True (retry) for a transient failure to load a model; False for a bad --model, which fails alike again."""
    try:
        state.result()
    except models.ModelSourceError:
        return False
    except Exception:
        return True
    return False


# models: loaded once per flow run; a download or a cache read can hiccup
load_text_model = task(models.load_text_model, retries=2, retry_delay_seconds=[2, 8],
                       retry_condition_fn=retry_unless_bad_model, **_COMPUTE)
load_speech_model = task(models.load_speech_model, retries=2, retry_delay_seconds=[2, 8],
                         retry_condition_fn=retry_unless_bad_model, **_COMPUTE)

# a batch-inference job: one task over the folder (each batch's records are durable as it ends), here or on Dask
process_inputs = task(batch.run_job, name="process_inputs", **_COMPUTE)
process_inputs_on_cluster = task(shards.run_job_on_cluster, name="process_inputs_on_cluster", **_COMPUTE)

# scoring tables: the alias resolved once, that version loaded once, one task over the files
resolve_registered_model = task(scoring.resolve_model, retries=2, retry_delay_seconds=[1, 4],
                                retry_condition_fn=retry_unless_bad_model, **_COMPUTE)
load_scorer = task(scoring.load_scorer, retries=2, retry_delay_seconds=[2, 8],
                   retry_condition_fn=retry_unless_bad_model, **_COMPUTE)
download_model = task(scoring.download_model, retries=2, retry_delay_seconds=[2, 8],
                      retry_condition_fn=retry_unless_bad_model, **_COMPUTE)
score_files = task(scoring.score_files, name="score_files", **_COMPUTE)
score_files_on_cluster = task(shards.score_job_on_cluster, name="score_files_on_cluster", **_COMPUTE)
log_scoring_inputs = task(scoring.log_inputs, **_IO)

# tracking
ensure_experiment = task(tracking.ensure_experiment, **_IO)
start_run = task(tracking.start_run, **_IO)
end_run = task(tracking.end_run, **_IO)
log_params = task(tracking.log_params, **_IO)
log_metrics = task(tracking.log_metrics, **_IO)
set_tags = task(tracking.set_tags, **_IO)
log_dataset = task(tracking.log_dataset, **_IO)
log_json = task(tracking.log_json, **_IO)
log_figures = task(tracking.log_figures, **_IO)
log_artifact_files = task(tracking.log_artifact_files, **_IO)
log_classifier = task(tracking.log_classifier, **_IO)
register_model = task(tracking.register_model, **_IO)
find_keyed_runs = task(changes.find_keyed_runs, **_IO)
load_json = task(tracking.load_json, **_IO)
promote_if_better = task(registry.promote_if_better, **_IO)


def _publish_markdown(key: str, markdown: str, description: str) -> None:
    """Attach a markdown artifact to the current Prefect flow run."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=markdown, key=key, description=description)


def _publish_table(key: str, rows: Sequence[Mapping[str, object]], description: str) -> None:
    """Attach a table artifact (one row per mapping) to the current Prefect flow run."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(table=[dict(r) for r in rows], key=key, description=description)


publish_markdown = task(_publish_markdown, name="publish_markdown", **_IO)
publish_table = task(_publish_table, name="publish_table", **_IO)
