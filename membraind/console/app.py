"""The console's web application (Starlette): routes, the access guard, templates.

Every request passes :class:`Guard` first: the Host header must name this console, the
access token (once, in the link) or its cookie must be presented, and a form post must
come from a console page (Origin or Referer) and carry the form token. Pages are
rendered on the server; a small script (static/console.js) follows the event stream.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from membraind.console import access, pages, pictures
from membraind.console.forms import FORM_KINDS, TRANSFER_MODES, field_errors, job_form, request_from_form, split_problems
from membraind.console.live import LiveEvents
from membraind.console.settings import WebSettings
from membraind.errors import InputError, MembraindError
from membraind.service.job import Job, JobRecord, job_from_request
from membraind.service.paths import check_paths

__all__ = ["Console", "build_app", "SOURCE"]

log = logging.getLogger(__name__)

SOURCE = "console"
HERE = Path(__file__).parent
COOKIE_DAYS = 30
MAX_FORM_BYTES = 256 * 1024


@dataclass
class Console:
    """What the console works with: the daemon's journal and settings (``sources``), its one
    submit and cancel functions, its live events, and the access token."""

    sources: pages.Sources
    submit: Callable[[Job], tuple[JobRecord, bool]]
    cancel: Callable[[str], JobRecord | None]
    live: LiveEvents
    web: WebSettings
    token: str
    settings: Any = None  # the whole configuration: how the sampler draws ground-truth patches

    @property
    def roots(self) -> list[Path]:
        """The folders requests may use (looked-at paths are checked against them too)."""
        return self.sources.service.allowed_roots()


class Guard:
    """ASGI middleware: Host check, token or cookie, same-origin form posts; adds Server-Timing."""

    def __init__(self, app, console: Console) -> None:
        self.app, self.console = app, console
        self.hosts = access.allowed_hosts(console.web)
        self.cookie = access.cookie_name(console.web)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        started = time.perf_counter()
        host = request.headers.get("host")
        if not access.host_allowed(host, self.hosts):
            return await _refusal(400, "Unknown host name", f"This console does not answer to the host name "
                                  f"{host!r}. Open it by its own address (`membraind console-url` prints it), or "
                                  "add the name to [service.web] allowed_hosts.")(scope, receive, send)  # fmt: skip
        given = request.query_params.get("token")
        if given is not None:
            if not access.tokens_equal(given, self.console.token):
                return await _refusal(401, "Wrong access link", _ASK_FOR_LINK)(scope, receive, send)
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
            response.set_cookie(self.cookie, self.console.token, max_age=COOKIE_DAYS * 86400, httponly=True,
                                samesite="strict", secure=self.console.web.scheme == "https")  # fmt: skip
            return await response(scope, receive, send)
        if not access.tokens_equal(request.cookies.get(self.cookie), self.console.token):
            return await _refusal(401, "This console needs its access link", _ASK_FOR_LINK)(scope, receive, send)
        if request.method not in ("GET", "HEAD") and not access.same_origin(
            request.headers.get("origin"), request.headers.get("referer"), host
        ):
            return await _refusal(403, "Refused: a form from another site", "This form was not sent from a page of "
                                  "this console, so it was refused (cross-site request).")(scope, receive, send)  # fmt: skip

        async def timed_send(message) -> None:
            if message["type"] == "http.response.start":
                dur = (time.perf_counter() - started) * 1000
                message.setdefault("headers", []).append((b"server-timing", f"app;dur={dur:.1f}".encode()))
            await send(message)

        await self.app(scope, receive, timed_send)


_ASK_FOR_LINK = ("Open the console with its full link, the one holding ?token=...: the daemon prints it in its log "
                 "and in `systemctl status membraind`, and `membraind console-url` prints it on the machine it runs on. "
                 "Ask whoever runs the daemon for it.")  # fmt: skip


def _refusal(status: int, title: str, text: str) -> Response:
    from html import escape

    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:40em;margin:3em auto'><h1>{escape(title)}</h1>"
            f"<p>{escape(text)}</p></body></html>")  # fmt: skip
    return HTMLResponse(body, status_code=status)


def build_app(console: Console) -> Starlette:
    """The console as an ASGI application."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(states=pages.STATES, kinds=list(FORM_KINDS), transfer_modes=TRANSFER_MODES,
                                 csrf=access.csrf_token(console.token), epoch=console.live.epoch,
                                 age=pages.describe_age, now=time.time)  # fmt: skip
    templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, {"page": name.split(".")[0], **context}, status_code=status)

    def not_found(request: Request, what: str) -> Response:
        return page(request, "missing.html", {"what": f"There is no {what}."}, 404)

    async def posted(request: Request) -> dict[str, str] | Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return _refusal(413, "Form too large", f"A form may hold at most {MAX_FORM_BYTES} bytes.")
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not access.tokens_equal(fields.pop("csrf", None), access.csrf_token(console.token)):
            return _refusal(403, "Refused: a form without its form token", "Reload the page and send the form again.")
        return fields

    def overview(request: Request) -> Response:
        return page(request, "overview.html", pages.overview(console.sources))

    def jobs(request: Request) -> Response:
        query = request.query_params
        return page(request, "jobs.html", pages.job_list(console.sources, query.get("state"), query.get("kind")))

    def job(request: Request) -> Response:
        try:
            data = pages.job_page(console.sources, request.path_params["job_id"])
        except InputError as exc:
            return page(request, "missing.html", {"what": str(exc)}, 404)
        return not_found(request, f"job {request.path_params['job_id']}") if data is None else page(request, "job.html", data)

    async def cancel(request: Request) -> Response:
        fields = await posted(request)
        if isinstance(fields, Response):
            return fields
        record = console.cancel(request.path_params["job_id"])
        if record is None:
            return not_found(request, f"job {request.path_params['job_id']}")
        return RedirectResponse(f"/jobs/{record.id}", status_code=303)

    async def rerun(request: Request) -> Response:
        fields = await posted(request)
        if isinstance(fields, Response):
            return fields
        record = console.sources.journal.get(request.path_params["job_id"])
        if record is None:
            return not_found(request, f"job {request.path_params['job_id']}")
        data = dict(record.spec)
        if data.get("model"):
            data.pop("out", None)  # a lab model's run again is its next version
        try:
            new, _ = console.submit(job_from_request(data, source=SOURCE))
        except MembraindError as exc:
            return page(request, "missing.html", {"what": f"It cannot run again: {exc}"}, 400)
        return RedirectResponse(f"/jobs/{new.id}", status_code=303)

    def new(request: Request) -> Response:
        return page(request, "new.html", {"forms": [job_form(kind) for kind in FORM_KINDS]})

    def new_kind(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in FORM_KINDS:
            return not_found(request, f"job kind {kind}")
        values = {k: (v.split("\n") if k in ("models", "bundles") else v) for k, v in request.query_params.items()}
        return page(request, "form.html", {"form": job_form(kind, values)})

    async def submit(request: Request) -> Response:
        kind = request.path_params["kind"]
        if kind not in FORM_KINDS:
            return not_found(request, f"job kind {kind}")
        fields = await posted(request)
        if isinstance(fields, Response):
            return fields
        data = request_from_form(kind, fields)
        errors, general = field_errors(data)
        form = job_form(kind, {k: v for k, v in data.items() if k != "kind"})
        names = [f.name for f in form.fields]
        if not errors and not general:
            try:  # the one way in: the same function as request files and the ZeroMQ API, the same checks
                record, _ = console.submit(job_from_request(data, source=SOURCE))
            except MembraindError as exc:
                errors, general = split_problems(str(exc).removeprefix("invalid request: "), names)
            else:
                return RedirectResponse(f"/jobs/{record.id}", status_code=303)
        for f in form.fields:
            f.error = errors.get(f.name, "")
        form.errors = general
        return page(request, "form.html", {"form": form}, 400)

    def models(request: Request) -> Response:
        return page(request, "models.html", pages.models_page(console.sources))

    def model(request: Request) -> Response:
        data = pages.model_page(console.sources, request.path_params["name"])
        return not_found(request, f"lab model {request.path_params['name']}") if data is None else page(request, "model.html", data)

    def _prediction(request: Request) -> tuple[JobRecord, list[Path], Path | None] | Response:
        record = console.sources.journal.get(request.path_params["job_id"])
        if record is None or record.kind != "predict" or record.state != "done" or record.result is None:
            return not_found(request, f"finished prediction {request.path_params['job_id']}")
        layers = [Path(p) for p in record.result.outputs]
        volume = record.spec.get("volume")
        em = Path(volume) if isinstance(volume, str) else None  # a VAST layer's EM is seen in VAST
        return record, layers, em

    def look(request: Request) -> Response:
        found = _prediction(request)
        if isinstance(found, Response):
            return found
        record, layers, em = found
        layer = min(max(_int(request, "layer", 0), 0), max(len(layers) - 1, 0))
        try:
            info = pictures.layer_info(layers[layer]) if layers else None
        except (MembraindError, OSError) as exc:
            return page(request, "missing.html", {"what": f"The output {layers[layer]} cannot be read ({exc})."}, 404)
        if info is None:
            return not_found(request, "outputs of this prediction")
        mip = _int(request, "mip", info["mips"][0])
        z = min(max(_int(request, "z", 0), 0), info["sections"] - 1)
        return page(request, "look.html", {"job": record, "layers": [str(p) for p in layers], "layer": layer, "z": z,
                                           "mip": mip, "info": info, "em": em})  # fmt: skip

    def look_png(request: Request) -> Response:
        found = _prediction(request)
        if isinstance(found, Response):
            return found
        record, layers, em = found
        z, mip = _int(request, "z", 0), _int(request, "mip", 0)
        what = request.path_params["what"]
        try:
            if what == "em":
                if em is None:
                    return not_found(request, "EM of this prediction")
                data = pictures.section_png(em, z, mip)
            else:
                index = int(what) if what.isdigit() else -1
                if not 0 <= index < len(layers):
                    return not_found(request, f"output {what}")
                data = pictures.overlay_png(layers[index], z, mip)
        except (MembraindError, OSError) as exc:
            return not_found(request, f"the picture ({exc})")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})

    def look_groundtruth(request: Request) -> Response:
        from membraind.console.groundtruth import GroundTruthLook, contact_sheet_png

        query = dict(request.query_params)
        if not query.get("em"):
            return page(request, "groundtruth.html", {"look": None, "error": ""})
        try:
            look = GroundTruthLook.model_validate(query)
            check_paths(look, console.roots)
        except (ValueError, MembraindError) as exc:
            return page(request, "groundtruth.html", {"look": None, "error": str(exc), "query": query}, 400)
        if request.url.path.endswith(".png"):
            try:
                data = contact_sheet_png(look, console.settings)
            except (MembraindError, OSError) as exc:
                return _refusal(400, "Cannot draw the patches", str(exc))
            return Response(data, media_type="image/png")
        return page(request, "groundtruth.html", {"look": look, "error": "", "query": query,
                                                  "png": f"/look/groundtruth.png?{urlencode(query)}"})  # fmt: skip

    async def events(request: Request) -> Response:
        if console.live.full():
            return Response("too many console pages are open", status_code=503)
        return StreamingResponse(console.live.stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    routes = [
        Route("/", overview), Route("/jobs", jobs), Route("/jobs/{job_id}", job),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]), Route("/jobs/{job_id}/rerun", rerun, methods=["POST"]),
        Route("/new", new), Route("/new/{kind}", new_kind), Route("/new/{kind}", submit, methods=["POST"]),
        Route("/models", models), Route("/models/{name}", model),
        Route("/look/groundtruth", look_groundtruth), Route("/look/groundtruth.png", look_groundtruth, name="gt-png"),
        Route("/look/{job_id}", look), Route("/look/{job_id}/{what}.png", look_png),
        Route("/events", events), Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]  # fmt: skip
    app = Starlette(routes=routes)
    app.add_middleware(Guard, console=console)
    return app


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default
