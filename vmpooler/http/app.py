"""The Falcon application factory: ``create_app(config, store)``."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import falcon
import falcon.media

from vmpooler.http.auth import Authenticator, make_authenticator
from vmpooler.http.context import ApiContext
from vmpooler.http.errors import install_error_handlers
from vmpooler.http.jsonbody import pretty_json
from vmpooler.http.middleware import BodyLimit, GzipResponses, OptionsAnswers, RequestMetrics
from vmpooler.http.ratelimit import rate_limiting
from vmpooler.http.resources import dashboard, meta, ondemand, poolconfig, queue, status, token, vm
from vmpooler.http.waiting import Waiters
from vmpooler.store.queue import QueueSettings

if TYPE_CHECKING:
    from vmpooler.config import Config
    from vmpooler.store import Store

__all__ = ["API_VERSIONS", "create_app"]

API_VERSIONS = (1, 2, 3)


def _mount(app: falcon.App, ctx: ApiContext) -> None:
    """Route one API version under ``/api/v<version>``."""
    prefix = f"/api/v{ctx.version}"
    app.add_route(f"{prefix}/vm", vm.VMCollection(ctx))
    app.add_route(f"{prefix}/vm/{{name}}", vm.VMItem(ctx))
    app.add_route(f"{prefix}/vm/{{name}}/disk/{{size}}", vm.VMDisk(ctx))
    app.add_route(f"{prefix}/vm/{{name}}/snapshot", vm.VMSnapshot(ctx))
    app.add_route(f"{prefix}/vm/{{name}}/snapshot/{{snapshot}}", vm.VMSnapshotRevert(ctx))
    app.add_route(f"{prefix}/status", status.Status(ctx))
    app.add_route(f"{prefix}/poolstat", status.PoolStat(ctx))
    app.add_route(f"{prefix}/totalrunning", status.TotalRunning(ctx))
    summary = status.Summary(ctx)
    app.add_route(f"{prefix}/summary", summary)
    app.add_route(f"{prefix}/summary/{{route}}", summary, suffix="route")
    app.add_route(f"{prefix}/summary/{{route}}/{{key}}", summary, suffix="route")
    app.add_route(f"{prefix}/config", meta.Config(ctx))
    size = poolconfig.PoolSizeOverride(ctx)
    app.add_route(f"{prefix}/config/poolsize", size)
    app.add_route(f"{prefix}/config/poolsize/{{pool}}", size, suffix="pool")
    template = poolconfig.TemplateOverride(ctx)
    app.add_route(f"{prefix}/config/pooltemplate", template)
    app.add_route(f"{prefix}/config/pooltemplate/{{pool}}", template, suffix="pool")
    app.add_route(f"{prefix}/config/clonetarget", poolconfig.CloneTargetOverride(ctx))
    app.add_route(f"{prefix}/poolreset", poolconfig.PoolReset(ctx))
    app.add_route(f"{prefix}/token", token.TokenCollection(ctx))
    app.add_route(f"{prefix}/token/{{token}}", token.TokenItem(ctx))
    app.add_route(f"{prefix}/queue", queue.Queue(ctx))
    app.add_route(f"{prefix}/ondemandvm", ondemand.OnDemandCollection(ctx))
    app.add_route(f"{prefix}/ondemandvm/{{name}}", ondemand.OnDemandItem(ctx))


def create_app(
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    authenticator: Authenticator | None = None,
    waiters: Waiters | None = None,
) -> falcon.App:
    """Build the WSGI app serving ``/api/v1``, ``/api/v2`` and ``/api/v3``.

    Args:
        config: the validated configuration.
        store: the Redis store every resource reads and writes through.
        clock: the time source (tests pass a fixed one).
        rng: randomness for alias selection (tests pass a seeded one).
        authenticator: checks the Basic credentials of the token routes when ``:auth:`` is
            configured; default: the one ``:auth:`` names (tests pass one with a fake LDAP).
        waiters: this worker's waiting checkouts (``vmpooler.http.waiting``), which the caller stops
            before closing ``store``; default: new ones.

    Raises:
        ConfigError: ``:auth:`` names LDAP and ``ldap3`` is not installed.
    """
    # Response middleware runs last to first: GzipResponses first, so the metrics time compression too.
    middleware: list[Any] = [
        RequestMetrics(log_requests=config.globals.request_logger),
        *rate_limiting(config, store, clock=clock),  # nothing unless rate_limiting_enabled
        BodyLimit(config.globals.max_request_body),
        GzipResponses(),
        OptionsAnswers(),
    ]
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    pretty = falcon.media.JSONHandler(dumps=pretty_json, loads=json.loads)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = pretty
    install_error_handlers(app)
    if config.auth is None:
        authenticator = None
    elif authenticator is None:
        authenticator = make_authenticator(config.auth)
    base = ApiContext(
        config=config,
        store=store,
        clock=clock,
        rng=rng or random.Random(),
        authenticator=authenticator,
        queue_settings=QueueSettings.from_config(config),
        waiters=waiters if waiters is not None else Waiters(store, config.globals.queue_waiters),
    )
    for version in API_VERSIONS:
        _mount(app, base.with_version(version))
    app.add_route("/api/v3/openapi.json", meta.OpenAPI())
    app.add_route("/healthcheck", meta.Healthcheck())
    app.add_route("/dashboard", dashboard.Dashboard(base))  # "/dashboard/" too: trailing slashes are stripped
    app.add_route("/dashboard/stats/vmpooler/pool", dashboard.PoolStats(base))
    app.add_route("/dashboard/stats/vmpooler/running", dashboard.RunningStats(base))
    app.add_route(config.metrics.prometheus_endpoint, meta.Metrics(base))
    app.add_route("/", meta.Root())
    app.add_sink(meta.NotFound(), "/")
    return app
