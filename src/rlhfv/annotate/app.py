"""The web app: JSON API + the static browser UI shipped in this package.

Auth: ``POST /api/login`` returns a session token, also set as an HttpOnly,
SameSite=Strict cookie; API clients may send it as ``Authorization: Bearer``.
No credentials -> 401; a role or owner mismatch -> 403.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, Field

from rlhfv.annotate import service
from rlhfv.annotate.db import MAX_ID, ROLES, Database, text_problem
from rlhfv.annotate.edits import Edit, EditError
from rlhfv.annotate.export import corrections_for_export
from rlhfv.annotate.service import Conflict, CurrentUser, Forbidden, NotFound, Refused
from rlhfv.annotate.stats import annotation_stats
from rlhfv.annotate.store import MEDIA_TYPES, image_file
from rlhfv.data.io import correction_to_json
from rlhfv.data.schema import CHANGE_CATEGORIES

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "rlhfv_session"
MAX_BODY_BYTES = 256 * 1024
SECURITY_HEADERS = [
    # no inline script, nothing from other origins: even text that slipped into HTML could not run
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
        b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass(frozen=True)
class Settings:
    store: Path  # image store directory
    lock_seconds: float = service.DEFAULT_LOCK_SECONDS
    max_body_bytes: int = MAX_BODY_BYTES
    secure_cookie: bool = False  # set behind HTTPS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lock_seconds) and self.lock_seconds > 0):  # nan/inf: locked forever
            raise ValueError(f"lock_seconds must be a positive number, not {self.lock_seconds}")


class BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, declared or streamed.

    The body is read (up to the limit) before the app runs, then replayed to it: API
    bodies are small, and an oversized one never reaches a handler.
    """

    def __init__(self, app, limit: int) -> None:  # noqa: ANN001
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _send_413(send, self.limit)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return await _send_413(send, self.limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():  # noqa: ANN202
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


async def _send_413(send, limit: int) -> None:  # noqa: ANN001
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        async def with_headers(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


# ---------------------------------------------------------------- request bodies

LONE_SURROGATE = (
    "contains a lone UTF-16 surrogate (half of an emoji, e.g. a \\ud83d escape without its pair), "
    "which is not text: send whole characters"
)


def _storable(text: str) -> str:
    """A 422 naming the field for text no database column can hold (PostgreSQL would 500)."""
    problem = text_problem(text)
    if problem:
        raise ValueError(problem)
    return text


Text = Annotated[str, AfterValidator(_storable)]


class LoginBody(BaseModel):
    name: Text = Field(min_length=1, max_length=64)
    password: Text = Field(min_length=1, max_length=256)


class EditBody(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: Text = Field(max_length=5000)
    category: Literal[CHANGE_CATEGORIES]  # type: ignore[valid-type]


class SubmitBody(BaseModel):
    idempotency_key: str = Field(min_length=4, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    edits: list[EditBody] = Field(default_factory=list, max_length=200)
    correct: bool = False


class ReviewBody(BaseModel):
    accept: bool
    comment: Text = Field(default="", max_length=5000)


class NewUserBody(BaseModel):
    name: Text = Field(min_length=1, max_length=64)
    role: Literal[ROLES]  # type: ignore[valid-type]
    password: Text = Field(min_length=8, max_length=256)


# ---------------------------------------------------------------- who is asking


class _HTTP(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None) -> None:
        self.status, self.detail, self.headers = status, detail, headers
        super().__init__(detail)


def current_user(request: Request) -> CurrentUser:
    """The logged-in user (session cookie or bearer token), else 401."""
    token = request.cookies.get(COOKIE)
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    user = service.user_for_token(request.app.state.db, token) if token else None
    if user is None:
        raise _HTTP(401, "log in first", {"WWW-Authenticate": "Bearer"})
    return user


def _role(*allowed: str) -> Callable:
    def check(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
        if user.role not in allowed:
            raise _HTTP(403, f"needs role {' or '.join(allowed)}")
        return user

    return check


# an id in a URL beyond the columns' range names nothing: 422 (past 64 bits SQLite could not bind it: 500)
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]
User = Annotated[CurrentUser, Depends(current_user)]
Reviewer = Annotated[CurrentUser, Depends(_role("reviewer", "admin"))]
Admin = Annotated[CurrentUser, Depends(_role("admin"))]


# ---------------------------------------------------------------- the app


def create_app(db: Database, settings: Settings) -> Callable:
    """The ASGI app over ``db`` (tables must exist) and the image store in ``settings``."""
    app = FastAPI(title="rlhfv annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db, app.state.settings = db, settings

    # the service's refusals, their text meant for the user; any other exception is a bug
    for exc, status in (
        (Conflict, 409),
        (Forbidden, 403),
        (NotFound, 404),
        (EditError, 422),
        (Refused, 422),
    ):
        app.add_exception_handler(exc, _handler(status))
    app.add_exception_handler(Exception, _internal_error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 echoes each bad input: text with a lone surrogate cannot be
        # encoded (its 422 said "'utf-8' codec can't encode ..."), and a password would come
        # back. The field (loc) and the rule (type, msg, ctx) suffice.
        errors = [{k: v for k, v in e.items() if k != "input"} for e in err.errors()]
        for e in errors:
            if e["type"] == "string_unicode":  # pydantic's words for a str holding a lone surrogate
                e["msg"] = LONE_SURROGATE
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(_HTTP)
    async def _http(_request: Request, err: _HTTP) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.post("/api/login")
    def login(body: LoginBody, response: Response) -> dict:
        token = service.login(db, body.name, body.password)
        if token is None:
            raise _HTTP(401, "wrong name or password")
        response.set_cookie(
            COOKIE,
            token,
            max_age=service.SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie,
        )
        user = service.user_for_token(db, token)
        return {"token": token, "user": {"name": user.name, "role": user.role}}

    @app.post("/api/logout")
    def logout(request: Request, response: Response, user: User) -> dict:
        token = request.cookies.get(COOKIE) or request.headers.get("authorization", "")[7:].strip()
        service.logout(db, token)
        response.delete_cookie(COOKIE)
        return {"ok": True}

    @app.get("/api/me")
    def me(user: User) -> dict:
        return {
            "name": user.name,
            "role": user.role,
            "progress": service.progress(db, user),
            "categories": list(CHANGE_CATEGORIES),
            "lock_seconds": settings.lock_seconds,
        }

    @app.post("/api/next")
    def next_task(user: User) -> dict:
        aid = service.claim_next(db, user, settings.lock_seconds)
        return {"assignment": None if aid is None else service.assignment_view(db, user, aid)}

    @app.get("/api/assignments/{assignment_id}")
    def get_assignment(assignment_id: Id, user: User) -> dict:
        return service.assignment_view(db, user, assignment_id)

    @app.post("/api/assignments/{assignment_id}/submit")
    def submit(assignment_id: Id, body: SubmitBody, user: User, response: Response) -> dict:
        edits = [Edit(e.start, e.end, e.text, e.category) for e in body.edits]
        receipt, created = service.submit(db, user, assignment_id, body.idempotency_key, edits, body.correct)
        response.status_code = 201 if created else 200
        return {**receipt, "duplicate": not created}

    @app.post("/api/assignments/{assignment_id}/release")
    def release(assignment_id: Id, user: User) -> dict:
        service.release(db, user, assignment_id)
        return {"ok": True}

    @app.post("/api/assignments/{assignment_id}/extend")
    def extend(assignment_id: Id, user: User) -> dict:
        return {"expires_at": service.extend(db, user, assignment_id, settings.lock_seconds)}

    @app.get("/api/tasks/{task_id}/image")
    def task_image(task_id: Id, user: User) -> FileResponse:
        name = service.may_see_task(db, user, task_id)
        path = image_file(settings.store, name)
        if path is None:
            raise NotFound("image not in the store")
        return FileResponse(
            path, media_type=MEDIA_TYPES[path.suffix[1:]], headers={"cache-control": "private, max-age=3600"}
        )

    @app.get("/api/review/queue")
    def review_queue(user: Reviewer) -> dict:
        return {"items": service.review_queue(db, user)}

    @app.post("/api/review/{assignment_id}")
    def review(assignment_id: Id, body: ReviewBody, user: Reviewer) -> dict:
        return {"status": service.review(db, user, assignment_id, body.accept, body.comment)}

    @app.get("/api/admin/users")
    def users(user: Admin) -> dict:
        return {"users": service.list_users(db)}

    @app.post("/api/admin/users", status_code=201)
    def add_user(body: NewUserBody, user: Admin) -> dict:
        return {"id": service.add_user(db, body.name, body.role, body.password)}

    @app.get("/api/admin/export")
    def export(user: Admin, accepted_only: bool = False) -> Response:
        records, left_out = corrections_for_export(
            service.current_corrections(db, accepted_only), settings.store
        )
        body = "".join(json.dumps(correction_to_json(r), ensure_ascii=False) + "\n" for r in records)
        # how many the data layer would refuse (`rlhfv annotate export` names them)
        headers = {"x-rlhfv-left-out": str(len(left_out))}
        return Response(body, media_type="application/x-ndjson", headers=headers)

    @app.get("/api/admin/stats")
    def stats(user: Admin) -> dict:
        return annotation_stats(service.current_corrections(db), service.task_progress(db))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return SecurityHeaders(BodyLimit(app, settings.max_body_bytes))


def _handler(status: int):  # noqa: ANN202
    async def handle(_request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=status)

    return handle


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    """A bug (a ValueError from deep in a library included): a 500 that says nothing of its
    text, which may hold internals or the request's own data; the traceback goes to the log.
    Starlette re-raises it after this response, so the server logs it as well."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=err)
    return JSONResponse({"detail": "internal server error"}, status_code=500)
