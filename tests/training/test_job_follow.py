"""`make train` following a job on a stack whose Ray head goes away: one line naming
`make status` and RESUME=1, no traceback. The Jobs client is a stand-in (a real head's loss
is exercised on a stack): its log or status calls fail the way urllib's do when the head dies
(a reset connection, then refused ones)."""

from __future__ import annotations

import urllib.error

import pytest

from core.errors import UserError
from core.state import Endpoints
from training import jobs


class HeadLostJobs:
    """Stands in for training.rayjobs.JobsClient on a head that dies after the first log line."""

    def __init__(self, stream_breaks: bool) -> None:
        self.stream_breaks = stream_breaks
        self.calls = 0

    def get_job_status(self, job_id: str) -> str:
        self.calls += 1
        if self.calls > 1:
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        return "RUNNING"

    def tail_job_logs(self, job_id: str):
        yield "step 20/200\n"
        if self.stream_breaks:
            raise ConnectionResetError(104, "Connection reset by peer")


ENDPOINTS = Endpoints("http://127.0.0.1:1", "admin", "/dev/null", "http://127.0.0.1:2", "")


@pytest.mark.parametrize("stream_breaks", [True, False])
def test_head_lost_while_following_is_one_line(monkeypatch, capsys, stream_breaks):
    monkeypatch.setattr(jobs, "client", lambda endpoints: HeadLostJobs(stream_breaks))
    with pytest.raises(UserError) as lost:
        jobs.follow("train-classify-1", ENDPOINTS)
    message = str(lost.value)
    assert "\n" not in message
    assert message.startswith("lost the stack's Ray head at http://127.0.0.1:2 while following")
    assert "`make status`" in message and "RESUME=1" in message
    assert "step 20/200" in capsys.readouterr().out  # what came before is still shown
