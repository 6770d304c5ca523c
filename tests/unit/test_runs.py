"""Runs left RUNNING by a dead process: the evidence, the reaper on a real store, the heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from trackflow import runs
from trackflow.runs import HEARTBEAT_TAG, OWNER_TAG, REAPED_TAG, Owner, why_dead
from tasks.tracking import ensure_experiment

HERE = Owner.this_process()


def tags(owner: Owner, beat: float | None = None) -> dict[str, str]:
    return {OWNER_TAG: owner.tag(), HEARTBEAT_TAG: str(int(beat if beat is not None else time.time()))}


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: nothing has this pid (reuse within the test is vanishingly unlikely)


def test_owner_tag_round_trips():
    assert Owner.parse(HERE.tag()) == Owner(HERE.host, HERE.pid, round(HERE.started, 3), round(HERE.boot), HERE.pidns)
    assert Owner.parse("") is None and Owner.parse("host=x pid=notanumber") is None


def test_a_live_process_on_this_machine_is_never_judged_dead():
    assert why_dead(tags(HERE, beat=0), HERE, time.time()) is None  # even with an ancient heartbeat


def test_a_gone_process_on_this_machine_is_dead_at_once():
    gone = Owner(HERE.host, dead_pid(), HERE.started, HERE.boot, HERE.pidns)
    reason = why_dead(tags(gone), HERE, time.time())
    assert reason and f"process {gone.pid}" in reason and "is gone" in reason


def test_a_reused_pid_does_not_pass_for_the_owner():
    impostor = Owner(HERE.host, os.getpid(), HERE.started - 3600, HERE.boot, HERE.pidns)  # same pid, other start
    assert "is gone" in why_dead(tags(impostor), HERE, time.time())


def test_another_machine_is_judged_by_its_heartbeat_only():
    other = Owner("elsewhere", os.getpid(), 1.0, 1.0, "1")
    now = time.time()
    assert why_dead(tags(other, beat=now - 60), HERE, now) is None
    stale = why_dead(tags(other, beat=now - 3600), HERE, now)
    assert stale and "no heartbeat from elsewhere" in stale and "60 min ago" in stale
    assert why_dead(tags(other, beat=now - 3600), HERE, now, stale_after=7200) is None


def test_a_rebooted_machine_ended_its_runs():
    before_boot = Owner(HERE.host, os.getpid(), HERE.boot - 100, HERE.boot - 1000, HERE.pidns)
    assert "rebooted" in why_dead(tags(before_boot), HERE, time.time())


def test_runs_without_an_owner_tag_are_not_ours():
    assert why_dead({"mlflow.user": "someone"}, HERE, time.time()) is None


def test_reaper_ends_only_dead_owners_runs_and_fails_their_pending_models(client):
    from mlflow.entities import LoggedModelStatus

    exp = ensure_experiment("reap")
    gone = Owner(HERE.host, dead_pid(), HERE.started, HERE.boot, HERE.pidns)
    far = Owner("elsewhere", 1, 1.0, 1.0, "1")
    made = {
        "dead": tags(gone),
        "alive": tags(HERE),
        "remote-fresh": tags(far),
        "remote-stale": tags(far, beat=time.time() - 3600),
        "foreign": {},
    }
    ids = {name: client.create_run(exp, run_name=name, tags=t).info.run_id for name, t in made.items()}
    model = client.create_logged_model(exp, name="model", source_run_id=ids["dead"])
    finished = client.create_run(exp, run_name="finished", tags=tags(gone)).info.run_id
    client.set_terminated(finished, "FINISHED")

    reaped = runs.reap_dead_runs(client)

    assert {r.run_name for r in reaped} == {"dead", "remote-stale"}
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"dead": "KILLED", "alive": "RUNNING", "remote-fresh": "RUNNING", "remote-stale": "KILLED",
                      "foreign": "RUNNING"}
    assert "is gone" in client.get_run(ids["dead"]).data.tags[REAPED_TAG]
    assert REAPED_TAG not in client.get_run(ids["alive"]).data.tags
    assert client.get_run(finished).info.status == "FINISHED"  # only RUNNING runs are looked at
    assert client.get_logged_model(model.model_id).status == LoggedModelStatus.FAILED
    assert runs.reap_dead_runs(client) == []  # idempotent


def test_only_a_dead_top_level_run_names_its_prefect_flow_run_for_crashing(client):
    """A sweep's trials carry their parent's flow run id; a trial's dead worker must not crash the live flow."""
    exp = ensure_experiment("reap-prefect")
    gone = Owner(HERE.host, dead_pid(), HERE.started, HERE.boot, HERE.pidns)
    flow = {"prefect.flow_run_id": "0b0e6f3e-0000-4000-8000-000000000001"}
    top = client.create_run(exp, run_name="top", tags=tags(gone) | flow).info.run_id
    client.create_run(exp, run_name="trial", tags=tags(gone) | flow | {"mlflow.parentRunId": top})
    client.create_run(exp, run_name="live", tags=tags(HERE) | {"prefect.flow_run_id": "live-one"})
    reaped = {r.run_name: r.flow_run_id for r in runs.reap_dead_runs(client)}
    assert reaped == {"top": flow["prefect.flow_run_id"], "trial": None}


def test_heartbeat_refreshes_open_runs_and_stops_when_told(client):
    exp = ensure_experiment("beat")
    run_id = client.create_run(exp, tags={HEARTBEAT_TAG: "0"}).info.run_id
    beat = runs.Heartbeat(every=0.2)
    beat.watch(client, run_id)
    deadline = time.time() + 10
    while client.get_run(run_id).data.tags[HEARTBEAT_TAG] == "0" and time.time() < deadline:
        time.sleep(0.1)
    assert abs(int(client.get_run(run_id).data.tags[HEARTBEAT_TAG]) - time.time()) < 5
    beat.unwatch(run_id)
    client.set_tag(run_id, HEARTBEAT_TAG, "1")
    time.sleep(0.6)
    assert client.get_run(run_id).data.tags[HEARTBEAT_TAG] == "1"


@pytest.mark.parametrize("exc, expected", [
    (KeyboardInterrupt(), True), (RuntimeError("x"), False), (SystemExit(1), False),
])
def test_is_interrupt(exc, expected):
    assert runs.is_interrupt(exc) is expected


def test_prefects_and_trackflows_termination_count_as_interrupts():
    import signal

    from prefect.exceptions import TerminationSignal

    from cli.signals import Terminated

    assert runs.is_interrupt(TerminationSignal(signal.SIGTERM)) and runs.is_interrupt(Terminated())


def _raised_while_handling(first: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise then
    except BaseException as exc:
        return exc


def test_an_error_raised_while_an_interrupt_unwinds_counts_as_that_interrupt():
    """Met in use: a SIGTERM while Prefect starts a task run surfaces as `ValueError: Task run is not set`."""
    import signal

    from prefect.exceptions import TerminationSignal

    crash = _raised_while_handling(TerminationSignal(signal.SIGTERM), ValueError("Task run is not set"))
    assert runs.is_interrupt(crash) and runs.interrupt_signal(crash) == signal.SIGTERM
    ctrl_c = _raised_while_handling(KeyboardInterrupt(), RuntimeError("x"))
    assert runs.is_interrupt(ctrl_c) and runs.interrupt_signal(ctrl_c) == signal.SIGINT
    plain = _raised_while_handling(OSError("disk"), RuntimeError("x"))
    assert not runs.is_interrupt(plain)


def test_signals_held_delivers_a_ctrl_c_after_the_block_and_puts_the_handlers_back():
    import os
    import signal

    # Python's own Ctrl-C handler, put back after the test (tests/conftest.py): a suite started in the background of a
    # non-interactive shell inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with runs.signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecode boundaries at which an unheld signal would have raised
                pass
            reached.append("end of block")
    assert reached == ["end of block"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_second_signal_while_held_is_delivered_at_once():
    import os
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with runs.signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            reached.append("end of block")
    assert reached == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_uninterrupted_returns_or_raises_what_the_call_does():
    assert runs.uninterrupted(int, "7") == 7
    with pytest.raises(ValueError, match="invalid literal"):
        runs.uninterrupted(int, "x")


@pytest.mark.parametrize("write, store_call", [("end_run", "set_terminated"), ("log_params", "log_batch")])
def test_a_signal_that_lands_during_a_store_write_stops_the_wait_not_the_write(client, monkeypatch, write,
                                                                               store_call):
    """Ctrl-C or SIGTERM raises in the main thread (Prefect's SIGTERM handler at every signal, a second one
    included); raised inside a SQLite write it left the database locked, so the run could not be ended KILLED.
    The caller stops waiting at once, and the write is made all the same."""
    import signal
    import threading

    from mlflow import MlflowClient

    from tasks import tracking

    run_id = client.create_run(ensure_experiment("uninterrupted")).info.run_id
    real = getattr(MlflowClient, store_call)

    def slow(self, *args, **kwargs):  # a store that takes a moment, for the signal to land inside the write
        time.sleep(0.5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, store_call, slow)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # put back after the test (tests/conftest.py)
    threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        getattr(tracking, write)(run_id, "KILLED" if write == "end_run" else {"lr": 0.1})
    assert time.monotonic() - start < 0.45  # raised while the write was still under way

    def made() -> bool:
        run = client.get_run(run_id)
        return run.info.status == "KILLED" if write == "end_run" else run.data.params == {"lr": "0.1"}

    deadline = time.monotonic() + 10
    while not made() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert made()
