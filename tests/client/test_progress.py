"""Progress as data: the estimate of the time left, and the command lines drawing it."""

from __future__ import annotations

from membraind_client.messages import JobInfo
from membraind_client.progress import EtaClock, Progress, estimate_eta, format_seconds


def test_the_time_left_is_estimated_from_the_start_of_the_clock_and_the_first_report():
    now = [100.0]
    seen = []
    clock = EtaClock(seen.append, clock=lambda: now[0])
    now[0] = 110.0
    clock(Progress(phase="training", fraction=0.5, message="resumed half way"))
    assert seen[-1].eta_seconds is None, "nothing moved yet: no estimate"
    now[0] = 120.0
    clock(Progress(phase="training", fraction=0.6))
    assert seen[-1].eta_seconds == 80.0 and seen[-1].eta == "1:20", "0.1 in 20 s (loading included): 0.4 in 80 s"
    assert estimate_eta(10.0, 1.0) == 0.0 and estimate_eta(0.0, 0.5) is None
    assert format_seconds(3725) == "1:02:05"


def test_the_membraind_bar_puts_steps_on_the_bar_and_milestones_above_it(capsys):
    from membraind.commands import progress_bar

    report, close = progress_bar()
    report(Progress(phase="predicting", fraction=0.25, current=1, total=4, unit="tile", message="tile 1/4 (z 0)",
                    eta_seconds=75))  # fmt: skip
    report(Progress(phase="segmenting", fraction=0.5, message="section 3: 120 segments", milestone=True))
    close()
    captured = capsys.readouterr()
    assert "section 3: 120 segments" in captured.out.splitlines(), "a milestone is a line of its own"
    lines = captured.err.replace("\r", "\n").splitlines()  # the bar
    assert any("<1:15, tile 1/4 (z 0)" in line and "25%" in line for line in lines), "the job's estimate, on the bar"


def test_the_client_progress_line_shows_the_daemon_estimate():
    from membraind_client.cli import _progress_text

    job = JobInfo(
        id="seg", kind="segment2d", spec={}, priority=0, source="zmq", client=None, state="running", progress=0.5,
        message="section 3: 120 segments", result=None, error=None, attempts=1, cancel_requested=False, created=0,
        started=0, finished=None, updated=0,
        progress_detail=Progress(phase="segmenting", fraction=0.5, current=4, total=8, unit="section", eta_seconds=30),
    )  # fmt: skip
    assert _progress_text(job).endswith("[##########----------]  50.0%  ETA 0:30  section 3: 120 segments")
    assert "ETA" not in _progress_text(job.model_copy(update={"progress_detail": None}))
