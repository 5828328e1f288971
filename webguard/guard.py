"""An ASGI middleware that refuses what a web page in the user's browser could send the Dagster webserver.

Dagster's webserver executes GraphQL mutations sent with GET, reads a POST body's query from its URL when the
content type is not JSON, and checks neither `Origin` nor `Host`. So any page the user visits could wipe
materialisations, launch runs or toggle sensors with an `<img src>` or a no-cors `fetch`, and a DNS-rebinding page
could read the answers. This guard sits in the webserver's own process, in front of its stock app, and refuses:

1. a `Host` that is not one of the UI's configured names (DNS rebinding);
2. an `Origin`, when the browser sends one, that is not the UI's own (cross-site POSTs, WebSockets, CORS reads);
3. a state-changing method (anything but GET, HEAD, OPTIONS) without `Content-Type: application/json`, which no
   cross-site page can send without a CORS preflight the webserver never grants;
4. a GraphQL GET whose document holds a mutation or a subscription (GET must be safe; an `<img>` sends no Origin).

A refusal is a 4xx with a one-line reason; nothing reaches Dagster. Each (rule, source) is logged once.

With an identity header configured (behind the authenticating proxy), state-changing requests also need the signed-in
user, and the run configs a mutation sends are stamped with that user (webguard/identity.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

from webguard.identity import IdentityRefusal, stamp_requester

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Distinct (rule, source) pairs remembered for logging once; past this, further new sources are not logged.
MAX_LOGGED_SOURCES = 1024
# The largest GraphQL POST body read to stamp its run configs (a launchpad config is a few KiB).
MAX_GRAPHQL_BODY = 16 * 1024 * 1024

# Under the webserver's own logger, so refusals print in its format, beside its other lines.
logger = logging.getLogger("dagster-webserver.webguard")


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, the rule it broke and the one-line reason sent back."""

    status: int
    rule: str
    reason: str


@dataclass(frozen=True)
class GuardPolicy:
    """The names the UI is served under (`Host` values), the origins its own pages have, and the header naming the
    signed-in user (None: no authenticating proxy in front)."""

    hosts: frozenset[str]
    origins: frozenset[str]
    identity_header: str | None = None

    @classmethod
    def for_hosts(cls, hosts: Iterable[str], identity_header: str | None = None) -> GuardPolicy:
        """Allow these `Host` values (`name` or `name:port`) and their http/https origins."""
        names = frozenset(host.strip().lower() for host in hosts if host.strip())
        if not names:
            raise ValueError("the UI guard needs at least one allowed host name")
        origins = frozenset(f"{scheme}://{name}" for name in names for scheme in ("http", "https"))
        return cls(names, origins, (identity_header or "").strip().lower() or None)

    def judge(self, scope: Scope) -> Refusal | None:
        """The refusal for this HTTP or WebSocket request, or None when it may reach the webserver."""
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return Refusal(400, "host", f"Host {host or '(none)'!r} is not a name this UI is served under")
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.origins:
            return Refusal(403, "origin", f"cross-origin request from {origin!r} refused")
        if scope["type"] != "http":
            return None
        method = scope["method"].upper()
        if method not in SAFE_METHODS:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                return Refusal(
                    415,
                    "content-type",
                    f"{method} needs Content-Type: application/json, got {media_type or '(none)'!r}",
                )
        elif scope["path"].rstrip("/").endswith("/graphql"):
            kind = graphql_get_operation_kind(scope.get("query_string", b"").decode("latin-1"))
            if kind is not None:
                return Refusal(405, "get-mutation", f"GraphQL {kind} over GET refused: send it as a JSON POST")
        return None


def graphql_get_operation_kind(query_string: str) -> str | None:
    """'mutation' or 'subscription' if the GET's GraphQL document holds one; 'unparsable document' if it cannot be
    read (so nothing unjudged passes); None for a document of queries only, or no document."""
    documents = parse_qs(query_string).get("query", [])
    for document in documents:
        try:
            parsed = parse(document)
        except GraphQLError:
            return "unparsable document"
        for definition in parsed.definitions:
            if isinstance(definition, OperationDefinitionNode) and definition.operation != OperationType.QUERY:
                return definition.operation.value
    return None


class CrossSiteGuard:
    """ASGI middleware: requests `policy` refuses get a 4xx and a one-line reason; the rest reach `app` unchanged."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy
        self._logged: set[tuple[str, str]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        refusal = self.policy.judge(scope)
        if refusal is None and self.policy.identity_header and scope["type"] == "http":
            refusal, receive = await self.stamp_identity(scope, receive, self.policy.identity_header)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        self.log_once(scope, refusal)
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.reason})
            return
        body = f"{refusal.reason}\n".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        if refusal.status == 405:
            headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def stamp_identity(self, scope: Scope, receive: Receive, header: str) -> tuple[Refusal | None, Receive]:
        """A state-changing request needs the signed-in user; a GraphQL one is forwarded with its run configs'
        `requested_by` set to that user (webguard/identity.py). Returns the refusal, or the receive to forward."""
        if scope["method"].upper() in SAFE_METHODS:
            return None, receive
        user = next(
            (value.decode("latin-1").strip() for name, value in scope["headers"] if name.lower() == header.encode()), ""
        )
        if not scope["path"].rstrip("/").endswith("/graphql"):
            if user:
                return None, receive
            return Refusal(401, "identity", f"{scope['method']} needs the signed-in user ({header})"), receive
        try:
            body = await read_body(receive)
            outcome = stamp_requester(body, user or None, header)
        except IdentityRefusal as refusal:
            return Refusal(refusal.status, "identity", refusal.reason), receive
        if outcome != body:  # a mutation: an audit line naming who sent it
            logger.info(
                "%s %s: mutation by %s (run config requested_by set to them)", scope["method"], scope["path"], user
            )
        scope["headers"] = [
            *((name, value) for name, value in scope["headers"] if name.lower() != b"content-length"),
            (b"content-length", str(len(outcome)).encode()),
        ]
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": outcome, "more_body": False}

        return None, replay

    def log_once(self, scope: Scope, refusal: Refusal) -> None:
        """Log a refusal the first time its rule meets its source (origin, else host; and client address)."""
        headers = dict(scope["headers"])
        origin, host = headers.get(b"origin"), headers.get(b"host")
        named = f"origin {origin.decode('latin-1')}" if origin else f"host {(host or b'(none)').decode('latin-1')}"
        client = scope.get("client")
        source = f"{named}, client {client[0] if client else '?'}"
        if (refusal.rule, source) in self._logged or len(self._logged) >= MAX_LOGGED_SOURCES:
            return
        self._logged.add((refusal.rule, source))
        logger.warning(
            "refused %s %s (%s): %s; further refusals of this kind from this source are not logged",
            scope.get("method", "WEBSOCKET"),
            scope["path"],
            source,
            refusal.reason,
        )


async def read_body(receive: Receive) -> bytes:
    """The whole request body, at most MAX_GRAPHQL_BODY bytes; IdentityRefusal otherwise."""
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise IdentityRefusal(400, "client disconnected")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_GRAPHQL_BODY:
            raise IdentityRefusal(413, f"GraphQL body over {MAX_GRAPHQL_BODY} bytes")
    return body
