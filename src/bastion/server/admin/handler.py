"""The admin listener's one handler: the gate (`gate.py`), then the page or API endpoint
of the path. Endpoints that wait (a request body, a thread reading the certificate store,
an ACME order) run as tasks of the worker's loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from bastion.http.router import Handler
from bastion.policies.base import read_body
from bastion.server.admin.api import STATS_OFF, Refused
from bastion.server.admin.gate import OPEN, REFUSED, Caller, Gate, client_key, header
from bastion.server.admin.live import LiveStream
from bastion.server.admin.pages import LOGIN_CSS, login_page
from bastion.server.admin.security import COOKIE, token_matches

if TYPE_CHECKING:
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.server.admin.api import AdminApi
    from bastion.server.admin.state import AdminState

log = logging.getLogger("bastion.admin")

JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
MAX_BODY = 16 * 1024
BODY_TIMEOUT = 10.0

Action = Callable[["Downstream", "Request", Caller], None]


class AdminHandler(Handler):
    def __init__(self, state: AdminState, data: AdminApi) -> None:
        self.state = state
        self.gate = Gate(state)
        self.data = data
        self.live: set[LiveStream] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.routes: dict[str, dict[str, Action]] = {
            "/": {"GET": self.index},
            "/logout": {"POST": self.logout},
            "/api/session": {"GET": self.session},
            "/api/overview": {"GET": self.later(data.overview)},
            "/api/stats": {"GET": self.stats},
            "/api/live": {"GET": self.live_stream},
            "/api/alerts": {"GET": self.json(data.alerts)},
            "/api/upstreams": {"GET": self.json(data.upstreams)},
            "/api/instances": {"GET": self.later(data.instances)},
            "/api/certificates": {"GET": self.later(data.certificates)},
            "/api/certificates/renew": {"POST": self.with_body(data.renew)},
            "/api/cache/purge": {"POST": self.with_body(data.purge)},
            "/api/config": {"GET": self.json(data.config)},
        }

    # ------------------------------------------------------------- dispatch
    def handle(self, client: Downstream, req: Request) -> None:
        if req.body_buffer is None:
            # the body is read by a task that runs later (login, actions): what arrives in
            # the meantime is kept, not dropped as a body the handler does not want
            req.body_buffer = []
        caller = self.gate.check(client, req)
        if caller is REFUSED:
            return
        path = req.raw_path
        method = "GET" if req.method == "HEAD" else req.method
        if caller is OPEN:  # the login page
            if path == "/login.css" and method == "GET":
                client.respond(req, 200, LOGIN_CSS, b"text/css; charset=utf-8")
            elif path == "/login" and method == "GET":
                client.respond(req, 200, login_page(), HTML)
            elif path == "/login" and method == "POST":
                self.spawn(self.login(client, req))
            else:
                allowed = b"GET, HEAD, POST" if path == "/login" else b"GET, HEAD"
                client.problem(req, 405, headers=b"Allow: " + allowed + b"\r\n")
            return
        if path.startswith("/static/"):
            methods: dict[str, Action] = {"GET": self.static}
        else:
            found = self.routes.get(path)
            if found is None:
                client.problem(req, 404, "No such admin page or endpoint.")
                return
            methods = found
        action = methods.get(method)
        if action is None:
            allow = ", ".join(sorted({*methods, *(["HEAD"] if "GET" in methods else [])}))
            client.problem(req, 405, headers=b"Allow: " + allow.encode() + b"\r\n")
            return
        action(client, req, caller)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.state.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ adapters
    @staticmethod
    def send_json(client: Downstream, req: Request, data: Any, status: int = 200) -> None:
        client.respond(req, status, json.dumps(data, separators=(",", ":")).encode(), JSON)

    def json(self, build: Callable[[], Any]) -> Action:
        def action(client: Downstream, req: Request, caller: Caller) -> None:
            self.send_json(client, req, build())

        return action

    def later(self, build: Callable[[], Coroutine[Any, Any, Any]]) -> Action:
        """An endpoint whose figures take a thread to read."""

        def action(client: Downstream, req: Request, caller: Caller) -> None:
            async def answer() -> None:
                try:
                    data = await build()
                except Exception:
                    log.exception("admin: %s failed", req.raw_path)
                    client.problem(req, 500)
                    return
                self.send_json(client, req, data)

            self.spawn(answer())

        return action

    def with_body(
        self, run: Callable[[dict[str, Any]], Coroutine[Any, Any, tuple[int, Any]]]
    ) -> Action:
        """An action: a JSON object in, (status, JSON) out; errors as problem answers."""

        def action(client: Downstream, req: Request, caller: Caller) -> None:
            kind = (header(req, b"content-type") or b"").split(b";")[0].strip().lower()
            if kind != JSON:
                client.problem(req, 415, "Send the parameters as application/json.")
                return

            async def answer() -> None:
                body = await self.body(client, req)
                if body is None:
                    return
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    client.problem(req, 400, "The body is not a JSON object.")
                    return
                try:
                    status, result = await run(data)
                except Refused as refused:
                    client.problem(req, refused.status, refused.detail)
                    return
                except Exception:
                    log.exception("admin: %s failed", req.raw_path)
                    client.problem(req, 500)
                    return
                self.send_json(client, req, result, status)

            self.spawn(answer())

        return action

    async def body(self, client: Downstream, req: Request) -> bytes | None:
        """The request body (None: answered already, or the client left)."""
        try:
            body = await asyncio.wait_for(read_body(client, req, MAX_BODY), BODY_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            client.problem(req, 408)
            return None
        if not isinstance(body, bytes):
            client.problem(req, 413, f"The body is larger than {MAX_BODY} bytes.")
            return None
        return body

    # --------------------------------------------------------------- pages
    def index(self, client: Downstream, req: Request, caller: Caller) -> None:
        found = self.state.static.read("index.html")
        if found is None:
            client.problem(req, 404, "The dashboard is not installed.")
            return
        client.respond(req, 200, found[1], found[0])

    def static(self, client: Downstream, req: Request, caller: Caller) -> None:
        found = self.state.static.read(req.raw_path[len("/static/") :])
        if found is None:
            client.problem(req, 404, "No such file.")
            return
        client.respond(req, 200, found[1], found[0])

    # ------------------------------------------------------------ sessions
    async def login(self, client: Downstream, req: Request) -> None:
        state = self.state
        ip = client_key(client)
        wait = state.throttle.wait(ip)
        if wait > 0:
            client.respond(
                req,
                429,
                login_page("Too many wrong tokens: wait a while before trying again."),
                HTML,
                b"Retry-After: %d\r\n" % max(1, round(wait + 0.5)),
            )
            return
        body = await self.body(client, req)
        if body is None:
            return
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not given or not token_matches(given, state.token):
            count = state.throttle.failed(ip)
            log.warning("admin: failed login from %s (%d failures in a row)", ip, count)
            client.respond(req, 401, login_page("That is not the admin token."), HTML)
            return
        state.throttle.succeeded(ip)
        value, _ = state.sessions.issue()
        secure = "; Secure" if client.secure else ""
        cookie = (
            f"Set-Cookie: {COOKIE}={value}; Path=/; Max-Age={int(state.sessions.lifetime)}; "
            f"HttpOnly; SameSite=Strict{secure}\r\n"
        )
        log.info("admin: login from %s", ip)
        client.respond(req, 303, b"", b"", b"Location: /\r\n" + cookie.encode())

    def logout(self, client: Downstream, req: Request, caller: Caller) -> None:
        secure = "; Secure" if client.secure else ""
        cookie = f"Set-Cookie: {COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}\r\n"
        client.respond(req, 303, b"", b"", b"Location: /login\r\n" + cookie.encode())

    def session(self, client: Downstream, req: Request, caller: Caller) -> None:
        session = caller.session
        self.send_json(
            client,
            req,
            {
                "authenticated": True,
                "via": caller.via,
                "csrf": session.csrf if session is not None else None,
                "expires": session.expires if session is not None else None,
            },
        )

    # --------------------------------------------------------------- stats
    def stats(self, client: Downstream, req: Request, caller: Caller) -> None:
        query = parse_qs(req.query)
        window = query.get("window", ["1h"])[0]
        scope = query.get("scope", ["instance"])[0]

        async def answer() -> None:
            if scope == "cluster":
                status, data = await self.data.cluster_stats(window)
            elif scope == "instance":
                status, data = await self.data.stats(window)
            else:
                status, data = 400, "scope must be instance or cluster"
            if status != 200:
                client.problem(req, status, data)
                return
            self.send_json(client, req, data)

        self.spawn(answer())

    def live_stream(self, client: Downstream, req: Request, caller: Caller) -> None:
        if self.state.stats is None:
            client.problem(req, 503, STATS_OFF)
            return
        if req.method == "HEAD":
            # the head of the stream only: a body after a HEAD answer would be read by the
            # client as the start of the next answer on the connection
            client.respond(req, 200, b"", b"text/event-stream")
            return
        stream = LiveStream(client, req, self.data.live_event, self.live.discard)
        self.live.add(stream)
        stream.start()

    def close(self) -> None:
        for stream in list(self.live):
            stream.end()
        for task in list(self.tasks):
            task.cancel()
