"""The FastAPI application of ``lift serve``: the OpenAI routes over a :class:`ChatEngine`.

Needs the ``server`` extra (FastAPI and uvicorn). Request bodies are read as plain JSON and checked by
:mod:`.protocol`, so that every refusal is a 400 with an OpenAI error body naming the field (not
FastAPI's 422 validation format, which OpenAI clients do not understand).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lift serve needs FastAPI and uvicorn: pip install 'lift-integrations[server]'"
    ) from error

from lift_integrations.server import protocol
from lift_integrations.server.protocol import APIError

if TYPE_CHECKING:
    from lift_integrations.server.engine import ChatEngine


def create_app(engine: ChatEngine) -> FastAPI:
    """The OpenAI-compatible routes: ``GET /v1/models``, ``GET /v1/models/{id}``,
    ``POST /v1/chat/completions``, and ``GET /health``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(
        title="lift-integrations", description="LIFT memories served as OpenAI models", lifespan=lifespan
    )
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(engine.models.ids())}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return protocol.model_list(engine.models.ids(), engine.models.created)

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in engine.models:
            raise protocol.model_not_found(model_id, engine.models.ids())
        return protocol.model_card(model_id, engine.models.created)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise protocol.bad_request(f"the request body is not valid JSON: {error}") from None
        chat = engine.parse(body)
        if chat.stream:
            events = await engine.stream(chat)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return JSONResponse(await engine.complete(chat))

    return app


def run(app: FastAPI, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level)
