"""Usage statistics (``:config: usage_stats``): who checks out and returns VMs of which pool, for which
Jenkins job.

The API counts each VM handed out (operation ``allocate``) and each VM returned by ``DELETE /vm``
(``destroy``); VMs that expire in the manager count nothing, as in the original. :func:`usage_counts`
is the pure part: the counts of one operation on one VM, each with the original's statsd name
(``user.<user>.<op>.<pool>``, …) and the labels of our Prometheus counter. :func:`record` adds them to
the counters of :mod:`vmpooler.metrics`, which also send them to a statsd or graphite sink when one is
configured.

The user is the VM's ``token:user`` (``unauthenticated`` without one), the pool its pool; dots in both
become ``_``. A ``jenkins_build_url`` tag adds a breakdown by Jenkins job: a URL containing ``litmus``
counts once under ``usage_litmus``; any other is read as the original read it, e.g.
``https://jenkins.example.com/job/platform_puppet-agent-extra_puppet-agent-integration-suite_pr/
RMM_COMPONENT_TO_TEST_NAME=puppet,SLAVE_LABEL=beaker/824/``: instance ``jenkins_example_com``; the job
segment split on ``_`` gives value stream ``platform`` (first), branch ``pr`` (last), project
``puppet-agent-extra`` (then the first of the rest) and job name ``puppet-agent-integration-suite``
(the rest, joined by ``_``), each with dots as ``_``; the component is ``RMM_COMPONENT_TO_TEST_NAME``
of the next segment's ``k=v,k=v`` list, else ``none``. A job segment of one or two parts leaves the
missing names empty, as the original did; a URL without a job segment counts only the user.

Differences from the original:

* A URL without a segment after the job counts component ``none`` (the original counted an empty
  name, ``usage_job_component.<job>..<op>.<pool>``).
* At checkout only the user counts: a VM gets its tags after checkout (``PUT /vm``), so the original's
  read of the tag at that moment found none in practice; we do not read it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import attrs

from vmpooler import metrics

__all__ = ["UsageCount", "record", "usage_counts"]

log = logging.getLogger(__name__)

_COMPONENT = "RMM_COMPONENT_TO_TEST_NAME"
_COUNTERS = {  # statsd family -> Prometheus counter
    "user": metrics.USAGE,
    "usage_litmus": metrics.USAGE_LITMUS,
    "usage_jenkins_instance": metrics.USAGE_JENKINS,
    "usage_branch_project": metrics.USAGE_BRANCH_PROJECT,
    "usage_job_component": metrics.USAGE_JOB_COMPONENT,
}


@attrs.frozen
class UsageCount:
    """One count of one operation on one VM.

    Attributes:
        family: the first segment of the original's statsd name (``user``, ``usage_litmus``,
            ``usage_jenkins_instance``, ``usage_branch_project``, ``usage_job_component``).
        labels: label → value of the Prometheus counter, in the order of the statsd name's segments.
    """

    family: str
    labels: Mapping[str, str] = attrs.field(hash=False)

    @property
    def statsd(self) -> str:
        """The original's dotted name, e.g. ``user.alice.allocate.debian-7-x86_64``."""
        return ".".join((self.family, *self.labels.values()))


def usage_counts(operation: str, vm: Mapping[str, str], pool: str | None = None) -> list[UsageCount]:
    """The counts of ``operation`` (``allocate`` or ``destroy``) on a VM.

    Args:
        operation: ``allocate`` or ``destroy``.
        vm: the VM's hash fields; ``token:user``, ``template`` (its pool) and ``tag:jenkins_build_url``
            are read.
        pool: the VM's pool when known (else ``vm["template"]``, then ``vm["pool"]``).

    Returns:
        The ``user`` count first, then the Jenkins ones; nothing when the VM has no pool.
    """
    pool = pool or vm.get("template") or vm.get("pool")
    if not pool:
        return []
    pool = pool.replace(".", "_")
    user = (vm.get("token:user") or "unauthenticated").replace(".", "_")
    counts = [UsageCount("user", {"user": user, "operation": operation, "pool": pool})]
    url = vm.get("tag:jenkins_build_url")
    if not url:
        return counts
    if "litmus" in url:  # the original's filter: litmus jobs are only counted
        return [*counts, UsageCount("usage_litmus", {"user": user, "operation": operation, "pool": pool})]
    job = _jenkins_job(url)
    if job is None:
        log.debug("usage: jenkins_build_url %r has no job segment: only the user counts", url)
        return counts
    instance, value_stream, branch, project, job_name, component = job
    tail = {"operation": operation, "pool": pool}
    return [
        *counts,
        UsageCount("usage_jenkins_instance", {"instance": instance, "value_stream": value_stream, **tail}),
        UsageCount("usage_branch_project", {"branch": branch, "project": project, **tail}),
        UsageCount("usage_job_component", {"job_name": job_name, "component": component, **tail}),
    ]


def record(operation: str, vm: Mapping[str, str], pool: str | None = None) -> None:
    """Add the counts of ``operation`` on a VM to the usage counters (and so to the sink, if any); never
    raises (a failure is logged at debug level, as the original swallowed it)."""
    try:
        for count in usage_counts(operation, vm, pool):
            _COUNTERS[count.family].labels(**count.labels).inc()
    except Exception:  # statistics never fail a checkout or a return
        log.debug("usage: counting %s failed", operation, exc_info=True)


def _jenkins_job(url: str) -> tuple[str, str, str, str, str, str] | None:
    """(instance, value stream, branch, project, job name, component) of a build URL; None when it has
    no job segment (the third after the scheme, as the original counted)."""
    parts = _ruby_split(url, "/")[2:]
    if len(parts) < 3:
        return None
    names = [name.replace(".", "_") for name in _ruby_split(parts[2], "_")]
    value_stream = names.pop(0) if names else ""
    branch = names.pop() if names else ""
    project = names.pop(0) if names else ""
    component = _component(parts[3]) if len(parts) > 3 else "none"
    return parts[0].replace(".", "_"), value_stream, branch, project, "_".join(names), component


def _component(labels: str) -> str:
    """The value of ``RMM_COMPONENT_TO_TEST_NAME`` in a ``k=v,k=v`` list, else ``none``."""
    for part in _ruby_split(labels, ","):
        pair = _ruby_split(part, "=")
        if len(pair) > 1 and pair[0] == _COMPONENT:
            return pair[1]
    return "none"


def _ruby_split(text: str, separator: str) -> list[str]:
    """``text.split(separator)`` as Ruby splits: trailing empty fields are dropped."""
    fields = text.split(separator)
    while fields and not fields[-1]:
        fields.pop()
    return fields
