"""The ``:tenants:`` section (ours): each tenant's fair-share weight and quota of running VMs.

A tenant is the token's user when ``:auth:`` is on, else the ``tenant`` a checkout names. Tenants not
listed have weight 1 and ``:config: default_tenant_max_running`` (unlimited when unset).
"""

from __future__ import annotations

import attrs

from vmpooler.config.reader import Context, SectionReader
from vmpooler.config.values import Kind

__all__ = ["TenantConfig"]


@attrs.frozen(kw_only=True)
class TenantConfig:
    """One ``:tenants: <name>:`` entry.

    Attributes:
        weight: the tenant's share of a scarce pool relative to others (2 = twice a weight-1 tenant's).
        max_running: the most VMs the tenant may hold running at once; None = the default quota.
    """

    weight: float = 1.0
    max_running: int | None = None

    @classmethod
    def _parse(cls, name: str, data: object, path: str, ctx: Context) -> TenantConfig | None:
        reader = SectionReader(data, path, ctx)
        weight = reader.get("weight", Kind.NUMBER, 1.0, minimum=0)
        if weight is not None and weight <= 0:
            ctx.problem(reader.at("weight"), f"must be a number > 0, got {weight}")
            return None
        max_running = reader.get("max_running", Kind.INT, None, minimum=0)
        reader.warn_unknown()
        return cls(weight=float(weight), max_running=max_running)
