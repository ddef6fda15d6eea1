"""The VM state table: every move the manager makes is allowed, nothing goes backwards."""

from __future__ import annotations

import pytest

from vmpooler.errors import TransitionError
from vmpooler.model import VMState, check_transition

S = VMState


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (None, S.PENDING),
        (None, S.DISCOVERED),
        (S.PENDING, S.READY),
        (S.PENDING, S.COMPLETED),
        (S.READY, S.RUNNING),
        (S.READY, S.COMPLETED),
        (S.RUNNING, S.COMPLETED),
        (S.DISCOVERED, S.COMPLETED),
        (S.COMPLETED, None),
    ],
)
def test_lifecycle_moves_are_allowed(src, dst):
    check_transition(src, dst)


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (S.READY, S.PENDING),
        (S.RUNNING, S.READY),
        (S.COMPLETED, S.READY),
        (S.COMPLETED, S.RUNNING),
        (S.DISCOVERED, S.READY),
        (None, S.READY),
        (S.PENDING, S.RUNNING),  # nothing does this (on-demand requests will, with their issue)
    ],
)
def test_backward_and_unused_moves_are_refused(src, dst):
    with pytest.raises(TransitionError):
        check_transition(src, dst)
