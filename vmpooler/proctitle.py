"""Process titles: every process names itself in ``ps`` and ``top`` (as gunicorn does).

``vmpooler: supervisor``, ``vmpooler: api-1``, ``vmpooler: provider dummy``: an operator can tell which
pid to look at. The title is set with ``setproctitle`` (it rewrites the process's argument area, so
``ps``, ``top`` and ``/proc/<pid>/cmdline`` show it) and as the kernel's thread name of the main thread
(``/proc/<pid>/comm``, what ``top`` shows by default, 15 characters at most).
"""

from __future__ import annotations

import setproctitle

__all__ = ["set_title", "title_for"]


def title_for(child: str) -> str:
    """The title of a supervisor child called ``child`` (``api-1``, ``provider-dummy``)."""
    role = f"provider {child.removeprefix('provider-')}" if child.startswith("provider-") else child
    return f"vmpooler: {role}"


def set_title(title: str) -> None:
    """Name this process ``title`` in ``ps``/``top``."""
    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(title)
