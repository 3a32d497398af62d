"""Our A2A request handler (a2a-sdk's RequestHandler), backed by PostgreSQL through the
realms services: no in-memory task store or queue, whose loss on a restart would break H4.
The dispatcher below is a2a-sdk's JSON-RPC handling for the non-streaming methods, which
the SDK only ships inside its Starlette routes: the SDK parses and validates each request
into its protobuf type, and writes each result and error."""

from __future__ import annotations

import json
from typing import Any

from a2a.extensions.common import HTTP_EXTENSION_HEADER, get_requested_extensions
from a2a.server.context import ServerCallContext
from a2a.server.jsonrpc_models import JSONParseError
from a2a.server.jsonrpc_models import MethodNotFoundError as RpcMethodNotFound
from a2a.server.request_handlers import RequestHandler, build_error_response
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    SendMessageRequest,
    SendMessageResponse,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.proto_utils import validate_proto_required_fields
from asgiref.sync import sync_to_async
from google.protobuf.json_format import MessageToDict, ParseDict
from jsonrpc.jsonrpc2 import JSONRPC20Response

from common.refusals import Refused
from realms.models import Incoming, Peer
from realms.services import calls

METHODS: dict[str, Any] = {
    "SendMessage": SendMessageRequest,
    "GetTask": GetTaskRequest,
    "CancelTask": CancelTaskRequest,
    "CreateTaskPushNotificationConfig": TaskPushNotificationConfig,
}


def _task(value: dict[str, Any]) -> Task:
    return ParseDict(value, Task(), ignore_unknown_fields=True)


class RealmHandler(RequestHandler):
    """The methods a peer or a client peer may call; `context.state["peer"]` is who calls."""

    async def on_message_send(self, params, context):
        message = MessageToDict(params.message)
        push = MessageToDict(params.configuration.task_push_notification_config)
        answer = await sync_to_async(calls.call_received)(context.state["peer"], message, push)
        return _task(answer)

    async def on_get_task(self, params, context):
        answer = await sync_to_async(calls.task_get)(context.state["peer"], params.id)
        return _task(answer) if answer else None

    async def on_cancel_task(self, params, context):
        key = MessageToDict(params.metadata).get(calls.EXTENSION, {}).get("key", "")
        answer = await sync_to_async(calls.task_cancel)(context.state["peer"], params.id, key)
        return _task(answer) if answer else None

    async def on_create_task_push_notification_config(self, params, context):
        found = await sync_to_async(_push_config_set)(context.state["peer"], params)
        if not found:
            raise TaskNotFoundError
        return params

    # Not offered: streaming (answers come by push and GetTask), task lists, extended cards.
    async def on_message_send_stream(self, params, context):
        raise UnsupportedOperationError
        yield

    async def on_subscribe_to_task(self, params, context):
        raise UnsupportedOperationError
        yield

    async def on_list_tasks(self, params, context):
        raise UnsupportedOperationError

    async def on_get_task_push_notification_config(self, params, context):
        raise UnsupportedOperationError

    async def on_list_task_push_notification_configs(self, params, context):
        raise UnsupportedOperationError

    async def on_delete_task_push_notification_config(self, params, context):
        raise UnsupportedOperationError

    async def on_get_extended_agent_card(self, params, context):
        raise UnsupportedOperationError


def _push_config_set(peer: Peer, config: TaskPushNotificationConfig) -> bool:
    if not config.task_id.isdigit():
        return False
    return bool(
        Incoming.objects.filter(peer=peer, run_id=int(config.task_id)).update(
            push_url=config.url[:300], push_token=config.token[:200]
        )
    )


HANDLER = RealmHandler()


async def dispatch(data: dict[str, Any], headers: dict[str, str], peer: Peer) -> dict[str, Any]:
    """One JSON-RPC request, parsed (`data`), to its JSON-RPC response."""
    rid = data.get("id") if isinstance(data.get("id"), str | int) else None
    try:
        model = METHODS.get(data.get("method", ""))
        if model is None:
            return build_error_response(rid, RpcMethodNotFound())
        try:
            request = ParseDict(data.get("params", {}), model(), ignore_unknown_fields=True)
        except Exception as exc:  # protobuf's ParseError, a type mismatch: the caller's fault
            raise InvalidParamsError(data={"parseError": str(exc)}) from None
        validate_proto_required_fields(request)
        lowered = {k.lower(): v for k, v in headers.items()}
        context = ServerCallContext(
            state={"peer": peer, "method": data["method"], "request_id": rid},
            requested_extensions=get_requested_extensions(
                [lowered.get(HTTP_EXTENSION_HEADER.lower(), "")]
            ),
        )
        result = await _call(data["method"], request, context)
        return JSONRPC20Response(result=result, _id=rid).data
    except A2AError as exc:
        return build_error_response(rid, exc)
    except Refused as exc:  # the caller's fault, named (a message without a blueprint, say)
        return build_error_response(rid, InvalidParamsError(message=exc.detail))


async def _call(method: str, request: Any, context: ServerCallContext) -> Any:
    if method == "SendMessage":
        task = await HANDLER.on_message_send(request, context)
        return MessageToDict(SendMessageResponse(task=task))
    if method == "CreateTaskPushNotificationConfig":
        return MessageToDict(
            await HANDLER.on_create_task_push_notification_config(request, context)
        )
    getter = HANDLER.on_get_task if method == "GetTask" else HANDLER.on_cancel_task
    task = await getter(request, context)
    if task is None:
        raise TaskNotFoundError
    return MessageToDict(task)


def task_checked(value: dict[str, Any]) -> dict[str, Any]:
    """A pushed task as A2A's Task type reads it (a2a-sdk), or Refused naming the fault."""
    try:
        return MessageToDict(_task(value))
    except Exception as exc:  # protobuf's ParseError, a type mismatch: the sender's fault
        raise Refused(400, "invalid_request", f"not an A2A task: {exc}") from None


def parse_error(detail: str) -> dict[str, Any]:
    return build_error_response(None, JSONParseError(message=detail))


def invalid_request(rid: Any, detail: str) -> dict[str, Any]:
    return build_error_response(rid, InvalidRequestError(message=detail))


def internal_error(rid: Any) -> dict[str, Any]:
    return build_error_response(rid, InternalError(message="the realm failed to answer"))


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def body_of(raw: bytes) -> dict[str, Any] | None:
    """The request's JSON object, or None: strict JSON (no NaN or Infinity, which A2A's
    protobuf types cannot carry)."""
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
