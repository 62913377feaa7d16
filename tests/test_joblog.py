"""The worker's diary of a job (node/joblog.py): its lines, the compile time, warnings,
tracebacks and the bound on in-epoch progress; and how `jobs logs` words each record."""

from __future__ import annotations

import logging
import warnings

from central.cli.logs import describe
from events import JobFailed, JobLog, JobPhase, JobWaiting
from node.joblog import PROGRESS_INTERVAL_S, JobDiary, epoch_line
from node.trainer import EpochResult


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def diary() -> tuple[JobDiary, list[tuple], Clock]:
    sent: list[tuple] = []
    clock = Clock()
    return JobDiary(lambda *m: sent.append(m), clock), sent, clock


def test_compiling_then_training_logs_the_compile_time():
    d, sent, clock = diary()
    d.phase("loading")
    d.phase("compiling")
    clock.now += 1.5
    d.phase("training")
    d.phase("checkpointing")
    assert sent == [("phase", "loading"), ("phase", "compiling"), ("phase", "training"),
                    ("log", "info", "compiled in 1.50 s", ""), ("phase", "checkpointing")]


def test_progress_is_sent_at_most_four_times_a_second():
    d, sent, clock = diary()
    for step in range(1, 41):  # 40 chunks in one second
        d.progress(1, step, 40)
        clock.now += 0.025
    assert [m[2] for m in sent] == [1, 11, 21, 31]
    assert all(m[0] == "progress" and m[3] == 40 for m in sent)
    assert PROGRESS_INTERVAL_S == 0.25


def test_warnings_and_warning_records_become_lines_while_the_job_runs():
    d, sent, _ = diary()
    with d.warnings_as_lines():
        warnings.warn("the data has constant columns", UserWarning)
        logging.getLogger("jax._src.xla_bridge").warning("no GPU found, falling back to CPU")
        logging.getLogger("node.jobs").warning("ours, said elsewhere")
    logging.getLogger("jax").warning("after the job: not its line")
    assert sent == [("log", "warning", "UserWarning: the data has constant columns", ""),
                    ("log", "warning", "jax._src.xla_bridge: no GPU found, falling back to CPU", "")]


def test_an_error_goes_with_its_traceback():
    d, sent, _ = diary()
    try:
        {}["missing"]
    except KeyError as exc:
        d.crashed(exc, "KeyError: 'missing'")
    (kind, level, message, trace), = sent
    assert (kind, level, message) == ("log", "error", "KeyError: 'missing'")
    assert trace.startswith("Traceback (most recent call last):") and trace.rstrip().endswith("KeyError: 'missing'")


def test_an_epoch_line_has_its_figures():
    epoch = EpochResult(epoch=3, total_epochs=10, loss=0.21409, accuracy=0.93125, val_loss=None, val_accuracy=0.92,
                        seconds=1.2449, samples_per_s=1450.4, step=30)
    assert epoch_line(epoch) == "epoch 3/10: loss 0.2141, accuracy 0.9313, val_accuracy 0.9200 (1.24 s, 1,450 samples/s)"


def test_jobs_logs_words_each_record():
    assert describe(JobLog(job_id="j", message="compiled in 0.40 s")) == ("info", "compiled in 0.40 s")
    assert describe(JobPhase(job_id="j", phase="compiling")) == ("phase", "compiling")
    assert describe(JobPhase(job_id="j", phase="training", epoch=2, step=13, steps=52)) == (
        "progress", "epoch 2: 13/52 steps (25%)")
    assert describe(JobWaiting(job_id="j", reason="no node is online")) == ("job", "waiting: no node is online")
    assert describe(JobFailed(job_id="j", error="dataset_uri: gone", code=400)) == (
        "job", "failed (400, a retry will not help): dataset_uri: gone")
    assert describe(JobFailed(job_id="j", error="node lost", retryable=True)) == (
        "job", "failed (500, a retry elsewhere may help): node lost")
