"""The scoring server: the use-case's `champion` over REST, every answer naming its version.

MLflow's own scoring server loads one model when it starts and answers without saying which
version it is. This one resolves the alias on every request (one registry read), so the
request after a promotion or a rollback is answered by the new champion, and each answer
says which version made it. Versions are loaded once and kept (the last few).

    POST /invocations   MLflow's input formats: {"dataframe_split": {...}} or
                        {"dataframe_records": [...]}; answers
                        {"predictions": [...], "model": NAME, "version": "N"}
    GET  /version       the version that answers now
    GET  /health        200 once the registry can be read
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from driftline.config import Settings, UseCase

log = logging.getLogger(__name__)

ALIAS = "champion"
KEPT_VERSIONS = 4


class NoChampionError(LookupError):
    """The registered model has no `champion` yet."""


def create_app(usecase: UseCase, settings: Settings) -> FastAPI:
    from driftline.training import registry

    if usecase.training is None:
        raise ValueError(f"use-case {usecase.name!r} trains no model: nothing to serve")
    name = usecase.training.registered_model
    app = FastAPI(title=f"driftline scoring: {name}@{ALIAS}")

    @functools.lru_cache(maxsize=KEPT_VERSIONS)
    def model(version: str):  # noqa: ANN202 - an MLflow PyFuncModel
        log.info("loading %s version %s", name, version)
        return registry.load_version(settings, name, version)

    def champion() -> str:
        version = registry.alias_version(settings, name, ALIAS)
        if version is None:
            raise NoChampionError(f"{name} has no {ALIAS} yet: train and promote a version")
        return version

    @app.exception_handler(NoChampionError)
    def _no_champion(_request, exc: NoChampionError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, str]:
        registry.alias_version(settings, name, ALIAS)  # raises if the registry is unreachable
        return {"status": "ok"}

    @app.get("/version")
    def version() -> dict[str, str]:
        return {"model": name, "alias": ALIAS, "version": champion()}

    @app.post("/invocations")
    def invocations(body: dict[str, Any]) -> dict[str, Any]:
        from mlflow.pyfunc.scoring_server import infer_and_parse_data

        serving = champion()
        loaded = model(serving)
        try:  # MLflow's own parsing and schema enforcement: their messages name the column
            rows = infer_and_parse_data(body, loaded.metadata.get_input_schema())
            predictions = loaded.predict(rows)
        except Exception as exc:
            raise HTTPException(status_code=400, detail=_input_error(exc)) from exc
        return {
            "predictions": [float(p) for p in pd.Series(predictions)],
            "model": name,
            "version": serving,
        }

    return app


def _input_error(exc: Exception) -> str:
    """What the model refused, e.g. "Model is missing inputs ['carrier']": MLflow's schema
    error quotes the whole input and schema first ("Failed to enforce schema of data '...'
    with schema '...'. Error: ..."); the reason is after them (clipped, too)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if message.startswith("Failed to enforce schema") and ". Error: " in message:
        message = message.rsplit(". Error: ", 1)[1]
    return message if len(message) <= 1000 else f"{message[:997]}..."


def serve(usecase: UseCase, settings: Settings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(usecase, settings), host=host, port=port, log_level="info")
