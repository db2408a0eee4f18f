"""`make train` following a job on a stack whose Ray head goes away: one line naming
`make status` and RESUME=1, no traceback. The Jobs client is a stand-in (a real head's loss
is exercised on a stack): its log stream breaks the way aiohttp's does when the head dies,
and its status calls are refused the way requests' are."""

from __future__ import annotations

import aiohttp
import pytest
import requests

from core.errors import UserError
from core.state import Endpoints
from training import jobs


class Status:
    def __init__(self, value: str) -> None:
        self.value = value


class HeadLostJobs:
    """Stands in for JobSubmissionClient on a head that dies after the first log line."""

    def __init__(self, stream_breaks: bool) -> None:
        self.stream_breaks = stream_breaks
        self.calls = 0

    def get_job_status(self, job_id: str) -> Status:
        self.calls += 1
        if self.calls > 1:
            raise requests.exceptions.ConnectionError("Connection refused")
        return Status("RUNNING")

    async def tail_job_logs(self, job_id: str):
        yield "step 20/200\n"
        if self.stream_breaks:
            raise aiohttp.ClientConnectionError("Connection lost")


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
