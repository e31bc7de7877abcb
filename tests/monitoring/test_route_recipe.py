"""The CONTRIBUTING.md recipe "Add an HTTP route": a route written the recipe's way (a response model, its error
statuses through ``error_responses``, its 404 through ``not_found``) is documented with the one error body,
answers in the service's error shape and is guarded by the bearer token like the routes that ship."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from discopatch.monitoring.routes import not_found
from discopatch.monitoring.schemas import error_responses
from discopatch.monitoring.service import create_app

AUTH = {"authorization": "Bearer t"}


class Echo(BaseModel):
    """The recipe's example response model (a real one goes into ``monitoring/schemas.py``)."""

    name: str = Field(description="the name asked for")
    length: int = Field(description="its length in characters")


def _echo_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/echo/{name}", tags=["service"], response_model=Echo, responses=error_responses(401, 404))
    def echo(name: str) -> dict[str, Any]:
        """Echo a name; ``missing`` is the one name that does not exist."""
        if name == "missing":
            raise not_found(f"no echo named {name!r}")
        return {"name": name, "length": len(name)}

    return router


def test_a_route_added_the_recipe_way_follows_the_services_conventions(model_dir, tmp_path) -> None:
    app = create_app(model_dir, f"sqlite:///{tmp_path / 'm.db'}", token="t", token_all=True)
    app.include_router(_echo_router())
    with TestClient(app) as client:
        spec = client.get("/openapi.json", headers=AUTH).json()
        responses = spec["paths"]["/v1/echo/{name}"]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Echo")
        for code in ("401", "404"):
            assert responses[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        assert client.get("/v1/echo/cam").status_code == 401
        assert client.get("/v1/echo/cam", headers=AUTH).json() == {"name": "cam", "length": 3}
        missing = client.get("/v1/echo/missing", headers=AUTH)
        assert missing.status_code == 404 and missing.json() == {"detail": "no echo named 'missing'"}
