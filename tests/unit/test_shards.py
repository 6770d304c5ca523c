"""Plain logic of batch jobs on Dask: the shared runner fields, the done map per shard, the per-process model
cache, a cluster's metrics, and the early check of a scheduler's address."""

from __future__ import annotations

import socket

import pytest

from tasks import shards
from tasks.cluster import ClusterError, check_reachable
from tasks.results import ResultsLog
from trackflow.config import ScoreConfig, SweepConfig, TextInferConfig


@pytest.mark.parametrize("kw, message", [
    ({"runner": "processes"}, "Input should be 'auto', 'sequential' or 'dask'"),
    ({"workers": 2}, "config.workers sizes a local Dask cluster; pass config.runner dask with it"),
    ({"dask_address": "localhost:8786"}, "must look like tcp://HOST:PORT"),
    ({"dask_address": "tcp://h:8786", "workers": 2}, "not both"),
    ({"dask_address": "tcp://h:8786", "runner": "sequential"}, "does not go with runner 'sequential'"),
    ({"shard_files": 0}, "greater than or equal to 1"),
])
@pytest.mark.parametrize("config", [TextInferConfig, ScoreConfig])
def test_batch_jobs_name_a_cluster_as_the_sweep_does(config, kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config(in_dir="in", out_dir="out", **kw)


def test_the_runner_checks_name_the_options_at_the_command_line():
    from trackflow.naming import names

    with names("cli"), pytest.raises(ValueError, match="--workers sizes a local Dask cluster; pass --runner dask"):
        ScoreConfig(in_dir="in", out_dir="out", workers=2)
    with names("cli"), pytest.raises(ValueError, match="give either --dask-address .* or --workers"):
        SweepConfig(dask_address="tcp://h:1", workers=2)
    with names("cli"), pytest.raises(ValueError, match="--dask-address 'h:1' must look like"):
        TextInferConfig(in_dir="in", out_dir="out", dask_address="h:1")


def test_the_runner_fields_and_their_checks_are_shared():
    assert TextInferConfig(in_dir="i", out_dir="o", dask_address="tcp://h:1").on_dask
    assert TextInferConfig(in_dir="i", out_dir="o", runner="dask", workers=3).on_dask
    assert not TextInferConfig(in_dir="i", out_dir="o").on_dask
    with pytest.raises(ValueError, match="does not go with runner 'processes'"):
        SweepConfig(dask_address="tcp://h:1", runner="processes")
    assert SweepConfig(runner="processes", workers=2).workers == 2  # the sweep keeps its process pool


def test_each_shard_gets_the_done_map_of_its_own_files(tmp_path):
    with ResultsLog(tmp_path, "fp") as log:
        log.append([{"input": "a.txt", "line": None, "status": "ok", "digest": "d1"},
                    {"input": "b.jsonl", "line": 1, "status": "ok", "digest": "d2"},
                    {"input": "b.jsonl", "line": 2, "status": "error", "digest": "d3"},
                    {"input": "x:1", "line": None, "status": "ok", "digest": "d4"},  # a file named like a line
                    {"input": "gone.txt", "line": None, "status": "ok", "digest": "d5"}])
        done = shards.done_by_file(log, ["a.txt", "b.jsonl", "x:1", "c.txt"])
    assert done == {"a.txt": {"a.txt": "d1"}, "b.jsonl": {"b.jsonl:1": "d2"}, "x:1": {"x:1": "d4"}}


def test_a_worker_loads_a_model_once_and_again_only_when_it_changes(tmp_path):
    loads = []

    def load(tag):
        return lambda: loads.append(tag) or tag

    shards._cache.clear()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"1")
    key = lambda: ("text", str(folder), "cpu", shards.folder_signature(str(folder)))  # noqa: E731
    assert [shards._cached(key(), load("a"))[1] for _ in range(3)] == [True, False, False]
    (folder / "w.bin").write_bytes(b"22")  # rewritten in place between two jobs
    assert shards._cached(key(), load("b")) == ("b", True)
    assert loads == ["a", "b"] and len(shards._cache) == 1  # one model kept
    shards._cache.clear()


def test_cluster_metrics_count_loads_shards_and_each_workers_throughput():
    cs = shards.ClusterStats(workers=2)
    for worker, loaded, n, tokens, secs in [("h:1", True, 4, 40, 2.0), ("h:2", True, 4, 20, 4.0),
                                            ("h:1", False, 2, 10, 1.0)]:
        cs.add(shards.ShardResult([], None, worker, loaded, secs), n, tokens)
    m = cs.metrics("new_tokens")
    assert (m["model_loads"], m["shards"], m["workers"], m["workers_used"]) == (2, 3, 2, 2)
    assert m["worker1_inputs_per_second"] == pytest.approx(2.0) and m["worker1_new_tokens_per_second"] == 50 / 3
    assert m["worker2_inputs_per_second"] == 1.0
    assert cs.names() == {"worker1": "h:1", "worker2": "h:2"}


def test_an_unreachable_scheduler_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=rf"the Dask scheduler at tcp://127.0.0.1:{port} cannot be reached "
                                           r"\(Connection refused\); start it"):
        check_reachable(f"tcp://127.0.0.1:{port}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"tcp://127.0.0.1:{s.getsockname()[1]}")


def test_a_shards_stats_add_into_the_jobs_for_both_kinds():
    from tasks.batch import JobStats
    from tasks.scoring import ScoreStats
    from tasks.shards import MAX_FAILURES_KEPT, merge_stats

    job = JobStats(n_processed=2, measure_total=1.5, present={"a"}, failures=[("a", "x")])
    merge_stats(job, JobStats(n_skipped=1, n_processed=3, measure_total=0.5, compute_seconds=2.0, present={"b"},
                              failures=[("b", "y")] * (MAX_FAILURES_KEPT + 5)))
    assert (job.n_skipped, job.n_processed, job.measure_total, job.compute_seconds) == (1, 5, 2.0, 2.0)
    assert job.present == {"a", "b"} and len(job.failures) == MAX_FAILURES_KEPT and job.failures[0] == ("a", "x")

    total = ScoreStats(files=10, ok=1, digests={"a": "1"})
    merge_stats(total, ScoreStats(files=3, ok=2, failed=1, rows=7, seconds=0.5, digests={"b": "2"}), skip=("files",))
    assert (total.files, total.ok, total.failed, total.rows, total.seconds) == (10, 3, 1, 7, 0.5)
    assert total.digests == {"a": "1", "b": "2"}
