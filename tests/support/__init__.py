"""Helpers the test suite and the chaos run share: waiting, a fake clock, the service as a subprocess, and
the chaos run's load and invariant checks (``tests.support.chaos``)."""

__all__: list[str] = []
