"""Scoring tables with a registered classifier: every table under a folder, one Parquet file each.

The model alias is resolved to one version before anything is scored, and only that version
is loaded: a promotion while the job runs never mixes two models. The files are streamed
through it by `tasks.scoring` into a results log that a rerun resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger

from flows import steps
from flows.common import batch_cluster, flow_run_url, prefect_tags, runner_metrics, runner_params, tracked
from tasks.reporting import metrics_markdown
from tasks.results import RESULTS_CSV, ResultsLog, fingerprint
from tasks.scoring import CSV_COLUMNS, job_metrics, list_tables
from tasks.shards import STAGED_MODELS, ScoreSpec
from trackflow import store
from trackflow.config import ScoreConfig
from trackflow.progress import Progress


@dataclass
class ScoreResult:
    out_dir: str
    run_id: str | None = None  # None: nothing to score, and no run was made
    model_uri: str = ""  # the resolved version, models:/NAME/VERSION
    metrics: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error), the first few
    run_url: str = ""


@flow(name="score-table", log_prints=True)
def score_pipeline(config: ScoreConfig) -> ScoreResult:
    """Score every table under `in_dir` (or the table `in_dir`) with a registered model; Parquet files in `out_dir`."""
    root, files = list_tables(config.in_dir, config.out_dir, config.allow_empty)
    if not files:
        get_run_logger().info("nothing to do: no tables in %s", config.in_dir)
        return ScoreResult(str(Path(config.out_dir).resolve()))
    model = steps.resolve_registered_model(config.model)
    get_run_logger().info("scoring with %s (%s)", model.uri, model.requested)
    settings = {"model": model.uri, "keep": config.keep}  # what decides an output: a rerun redoes files on a change
    # The log first: a folder that is busy or cannot be written is refused before the cluster starts.
    with (ResultsLog(config.out_dir, fingerprint(settings), CSV_COLUMNS) as log,
          batch_cluster(config, log.dir) as client):
        scorer = steps.load_scorer(model) if client is None else None  # on Dask, each worker loads it once
        spec = None if client is None else ScoreSpec(
            model, steps.download_model(model, log.dir.resolve() / STAGED_MODELS / "model"),
            str(Path(root).resolve()), str(log.dir.resolve()), config.batch_rows, tuple(config.keep or ()) or None)
        experiment_id = steps.ensure_experiment(config.experiment)
        run_id = steps.start_run(experiment_id, run_name=f"score-{model.name}-v{model.version}",
                                 tags=prefect_tags() | {"trackflow.job": "score"})
        run_url = store.run_url(store.tracking_uri(), experiment_id, run_id)
        with tracked(run_id):
            steps.log_params(run_id, config.model_dump() | runner_params(client) | {
                "model_name": model.name, "model_version": model.version, "model_uri": model.uri,
                "n_files": len(files)})
            started = time.perf_counter()
            progress = Progress(len(files), "score", "file", get_run_logger(), config.log_every)
            if client is None:
                stats, cluster = steps.score_files(root, files, log.dir, scorer, log, config.batch_rows, config.keep,
                                                   progress), None
            else:
                stats, cluster = steps.score_files_on_cluster(client, spec, files, log, config.shard_files, progress)
            runner = runner_metrics(run_id, cluster, "rows")
            progress.close()
            log.finalize(set(files))  # records of tables no longer there are marked gone
            metrics = job_metrics(stats, time.perf_counter() - started) | runner
            steps.log_metrics(run_id, metrics)
            steps.log_scoring_inputs(run_id, root, stats.digests)
            steps.log_artifact_files(run_id, [str(log.path), str(log.dir / RESULTS_CSV)], "results")
            links = {"MLflow run": run_url, "results": str(log.path)} | (
                {"Prefect flow run": u} if (u := flow_run_url()) else {})
            steps.publish_markdown("score-summary", metrics_markdown(f"Scoring with {model.uri}", metrics, links),
                                   "Counts and throughput of score-table")
    if stats.failed:
        get_run_logger().warning("%d of %d files failed; see %s", stats.failed, stats.files, log.path)
    return ScoreResult(str(log.dir.resolve()), run_id, model.uri, metrics, stats.failures, run_url)
