"""The boards the edge-bench --device tests run on: a real sshd on 127.0.0.1 (boards.py)."""

from __future__ import annotations

import pytest

from .boards import Boards, SshdMissing, running_boards


@pytest.fixture(scope="session")
def boards(tmp_path_factory) -> Boards:
    try:
        with running_boards(tmp_path_factory.mktemp("sshd")) as started:
            yield started
    except SshdMissing as e:
        pytest.skip(str(e))
