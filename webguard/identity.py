"""Who launched a run, from the authenticating proxy rather than from a text field.

Behind oauth2-proxy (deploy/k8s/oauth2-proxy.yaml) every request that reaches the writable webserver carries the
signed-in user in a header the proxy sets and strips from clients (`X-Forwarded-Email`); the network policies let
nothing but the proxy reach that webserver. With `PLATFORM_UI_IDENTITY_HEADER` naming that header, a GraphQL
mutation must carry it, and every `requested_by` in a run config it sends (the rollback, manual promotion and
retirement jobs ask for one) becomes that user: an empty one is filled in, a different one is refused. Run config
must then travel in GraphQL variables, where it can be read, not inline in the document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml
from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    parse,
    value_from_ast_untyped,
)

REQUESTER_FIELD = "requested_by"
RUN_CONFIG_FIELD = "runConfigData"


class IdentityRefusal(Exception):
    """Why a mutation is refused: the HTTP status and the one-line reason sent back."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def stamp_requester(body: bytes, user: str | None, header: str) -> bytes:
    """The GraphQL POST body to forward, with every run config's `requested_by` set to `user`; raises IdentityRefusal.

    A body that holds no mutation is returned unchanged, with or without a user."""
    request = read_json(body, "GraphQL POST body")
    if not isinstance(request, dict) or not isinstance(request.get("query"), str):
        raise IdentityRefusal(400, "GraphQL POST body must be one JSON object with a 'query' string")
    try:
        document = parse(request["query"])
    except GraphQLError as error:
        raise IdentityRefusal(400, "GraphQL document cannot be parsed") from error
    if not has_mutation(document):
        return body
    if not user:
        raise IdentityRefusal(401, f"a mutation needs the signed-in user ({header}): use the UI through its sign-in")
    for argument in arguments(document):
        if not isinstance(argument.value, VariableNode) and holds_key(
            value_from_ast_untyped(argument.value), RUN_CONFIG_FIELD
        ):
            raise IdentityRefusal(400, f"send {argument.name.value} as a GraphQL variable, not inline")
    variables = request.get("variables") or {}
    if isinstance(variables, str):  # Dagster also reads variables sent as a JSON string
        variables = read_json(variables.encode(), "GraphQL 'variables' string")
    if not isinstance(variables, dict):
        raise IdentityRefusal(400, "GraphQL 'variables' must be a JSON object")
    request["variables"] = stamped(variables, user)
    return json.dumps(request).encode()


def read_json(text: bytes, what: str) -> Any:
    """The JSON value of `text`; IdentityRefusal (400) naming `what` when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError as error:
        raise IdentityRefusal(400, f"{what} is not JSON") from error


def has_mutation(document: DocumentNode) -> bool:
    """Whether any operation of the document is a mutation (whichever one the request names)."""
    return any(
        isinstance(definition, OperationDefinitionNode) and definition.operation == OperationType.MUTATION
        for definition in document.definitions
    )


def arguments(document: DocumentNode) -> list[ArgumentNode]:
    """Every field argument in the document, in operations and fragments alike."""
    found: list[ArgumentNode] = []

    def walk(selection_set: SelectionSetNode | None) -> None:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                found.extend(selection.arguments)
            walk(getattr(selection, "selection_set", None))

    for definition in document.definitions:
        walk(getattr(definition, "selection_set", None))
    return found


def stamped(value: Any, user: str) -> Any:
    """`value` with every run config inside it stamped with `user` (YAML run config is read into an object)."""
    if isinstance(value, Mapping):
        return {
            key: stamp_run_config(item, user) if key == RUN_CONFIG_FIELD else stamped(item, user)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [stamped(item, user) for item in value]
    return value


def stamp_run_config(run_config: Any, user: str) -> Any:
    """The run config with every `requested_by` set to `user`; a different non-empty one is refused (403)."""
    if isinstance(run_config, str):
        try:
            run_config = yaml.safe_load(run_config)
        except yaml.YAMLError as error:
            raise IdentityRefusal(400, f"{RUN_CONFIG_FIELD} is not valid YAML") from error
    if isinstance(run_config, Mapping):
        stamped_config: dict[Any, Any] = {}
        for key, item in run_config.items():
            if key == REQUESTER_FIELD and not isinstance(item, Mapping | list):
                given = "" if item is None else str(item).strip()
                if given and given != user:
                    raise IdentityRefusal(403, f"{REQUESTER_FIELD} {given!r} is not the signed-in user {user!r}")
                stamped_config[key] = user
            else:
                stamped_config[key] = stamp_run_config(item, user)
        return stamped_config
    if isinstance(run_config, list):
        return [stamp_run_config(item, user) for item in run_config]
    return run_config


def holds_key(value: Any, key: str) -> bool:
    """Whether `key` names an entry of any mapping inside `value`."""
    if isinstance(value, Mapping):
        return key in value or any(holds_key(item, key) for item in value.values())
    if isinstance(value, list):
        return any(holds_key(item, key) for item in value)
    return False
