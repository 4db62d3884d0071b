"""The HTTP side of the server: what a request may be, checked before any of it reaches a model worker.

``Guard`` is the outermost ASGI layer: it refuses a body larger than the limit (413) from its Content-Length
before reading it, or as soon as a body without one passes the limit; a body that stops arriving gets 408; and it
counts every answer by endpoint and status code. ``read_request`` turns a request into a worker's payload: the
image from a multipart field ``image`` or the raw body, the query parameters the endpoint takes (any other: 422),
and the image checked to decode (400) so that no bad upload ever reaches a batch. ``/zero-shot`` also takes
its labels, templates and top_k from the query or the form, checked by ``vitkit.zeroshot``'s own rules (422).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..data.images import decode_image
from ..errors import ConfigError, VitkitError
from ..zeroshot import check_labels, resolve_templates
from .settings import ServeSettings

# the query parameters each endpoint takes, each with its parser
POOLS = ("default", "token", "avg", "map")
METHODS = ("rollout", "last")


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Body size and body time limits, and the request metrics, around the whole application. A limit passed
    while the application reads the body raises an ``HTTPException`` (413 or 408), which FastAPI answers."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app, self.max_body, self.body_timeout = app, max_body_bytes, body_timeout_s
        self.too_large = (f"The request body is larger than the server's limit of {max_body_bytes / 2**20:g} MB "
                          f"(--max-body-mb); send a smaller image.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from . import metrics

        start, status, started = time.monotonic(), [500], [False]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0], started[0] = message["status"], True
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                raise HTTPException(413, self.too_large)
            await self.app(scope, self._limited(receive, start), sending)
        except HTTPException as exc:  # raised outside FastAPI's own handling (e.g. the Content-Length check)
            if not started[0]:
                status[0] = exc.status_code
                await _send_json(send, exc.status_code, str(exc.detail))
        finally:
            metrics.record(scope["path"], status[0], time.monotonic() - start)

    def _limited(self, receive: Receive, start: float) -> Receive:
        seen = [0]

        async def limited() -> Message:
            left = self.body_timeout - (time.monotonic() - start)
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"The request body did not arrive within {self.body_timeout:g} s "
                                         f"(--timeout-s).") from None
            seen[0] += len(message.get("body", b""))
            if seen[0] > self.max_body:
                raise HTTPException(413, self.too_large)
            return message

        return limited


def _query(request: Request, allowed: dict[str, Any]) -> dict[str, Any]:
    """The query parameters, each parsed by its entry in ``allowed``; an unknown one is a 422 naming it."""
    out = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            expected = ", ".join(allowed) or "none"
            raise HTTPException(422, f"Unknown query parameter {key!r}: {request.url.path} takes {expected}.")
        out[key] = allowed[key](key, value)
    return out


def _top_k(key: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise HTTPException(422, f"{key}={value!r} is not allowed: expected a whole number from 1 to 1000.")
    return int(value)


def _choice(options: tuple[str, ...]) -> Any:
    def parse(key: str, value: str) -> str:
        if value not in options:
            raise HTTPException(422, f"{key}={value!r} is not allowed: expected one of {', '.join(options)}.")
        return value
    return parse


QUERY = {"predict": {"top_k": _top_k}, "features": {"pool": _choice(POOLS)},
         "attention": {"method": _choice(METHODS)}}
ZERO_SHOT_FIELDS = ("labels", "template", "top_k")  # in the query or the form; labels and template repeat
MAX_FORM_FIELDS = 256


async def _image_bytes(request: Request, fields: dict[str, list[str]] | None = None) -> tuple[bytes, str | None]:
    """The uploaded file: the multipart field ``image``, or the whole body as raw bytes. A form may also hold
    the text fields named in ``fields`` (their values are appended there); any other field is a 422."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        allowed = ("image", *(fields or {}))
        try:
            form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS if fields else 1)
        except StarletteHTTPException as exc:  # more parts than the one file, or a malformed form
            raise HTTPException(422, f"The form cannot be read ({exc.detail}): send one field 'image' holding "
                                     f"the image file.") from None
        unknown = [k for k in form if k not in allowed]
        if unknown:
            raise HTTPException(422, f"Unknown form field {unknown[0]!r}: send the image as the field 'image'"
                                     + (f" (other fields: {', '.join(allowed[1:])})." if fields else "."))
        for key, value in form.multi_items():
            if key != "image":
                if not isinstance(value, str):
                    raise HTTPException(422, f"The form field {key!r} must be text, not a file.")
                fields[key].append(value)  # type: ignore[index]
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "The form has no file field 'image': send the image as `-F image=@FILE`.")
        return await upload.read(), upload.filename
    if kind in ("application/json", "application/x-www-form-urlencoded") or kind.startswith("text/"):
        raise HTTPException(415, f"Content type {kind!r} is not an image: send the image's bytes as the body "
                                 f"(e.g. image/jpeg) or as the multipart field 'image'.")
    return await request.body(), None


def _refuse_task(task: str, image_text: bool) -> None:
    """/zero-shot needs an image-text model, /predict a classifier head: the other kind is told what to use."""
    if task == "zero-shot" and not image_text:
        raise HTTPException(404, "This server's model is an image classifier with no text tower: /zero-shot needs "
                                 "an image-text model (serve a SigLIP or CLIP folder); use /predict.")
    if task == "predict" and image_text:
        raise HTTPException(404, "This server's model is an image-text model with no classifier head: send the "
                                 "image with its labels to /zero-shot (e.g. ?labels=cat,dog).")


async def _zero_shot_params(request: Request, settings: ServeSettings) -> tuple[bytes, str | None, dict[str, Any]]:
    """The image, and the labels, templates and top_k from the query and the form (zeroshot's own checks: 422)."""
    fields: dict[str, list[str]] = {key: [] for key in ZERO_SHOT_FIELDS}
    for key, value in request.query_params.multi_items():
        if key not in fields:
            raise HTTPException(422, f"Unknown query parameter {key!r}: /zero-shot takes "
                                     f"{', '.join(ZERO_SHOT_FIELDS)}.")
        fields[key].append(value)
    data, name = await _image_bytes(request, fields)
    labels = [label for value in fields["labels"] for label in value.split(",")] if fields["labels"] else None
    try:
        labels = check_labels(labels)
        resolve_templates(fields["template"] or None)
    except ConfigError as exc:
        raise HTTPException(422, f"{exc} Over HTTP: ?labels=cat,dog (or the form field 'labels'), and "
                                 "optionally template= once per template.") from None
    if len(fields["top_k"]) > 1:
        raise HTTPException(422, "top_k is given more than once: give it once.")
    top_k = _top_k("top_k", fields["top_k"][0]) if fields["top_k"] else settings.top_k
    return data, name, {"labels": labels, "templates": fields["template"] or None, "top_k": top_k}


async def read_request(request: Request, task: str, settings: ServeSettings, *, image_text: bool = False,
                       ) -> dict[str, Any]:
    """The worker's payload for ``task``: the image bytes (checked to decode), its name and the parameters."""
    _refuse_task(task, image_text)
    if task == "zero-shot":
        data, name, params = await _zero_shot_params(request, settings)
    else:
        params = _query(request, QUERY[task])
        data, name = await _image_bytes(request)
    name = name or "<image 0>"
    try:  # decoding in a thread keeps the server answering other requests meanwhile
        await asyncio.to_thread(decode_image, data, name=name)
    except VitkitError as exc:
        raise HTTPException(400, str(exc)) from None
    payload = {"task": task, "data": data, "name": name, "top_k": settings.top_k, "pool": "default",
               "method": "rollout"}
    payload.update(params)
    return payload
