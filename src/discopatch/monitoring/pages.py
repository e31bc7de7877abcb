"""The service's HTML pages: the offline API page at ``/docs`` (Swagger UI from fastapi-offline's files, or a
plain list of operations without it), the dashboard, and ``/`` redirecting to it."""

from __future__ import annotations

import importlib.util
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse

from .schemas import error_responses

#: Where /docs finds Swagger UI's script and style: the copy of Swagger UI 5 (which renders OpenAPI 3.1, the version
#: FastAPI writes) that the fastapi-offline package ships, served by this app; FastAPI's own /docs loads it from a CDN.
SWAGGER_ASSETS = "/docs-assets"


def swagger_ui_files() -> Path | None:
    """The folder of fastapi-offline's Swagger UI files (``swagger-ui-bundle.js``, ``swagger-ui.css``,
    ``favicon.png``), or None when the package is not installed (``/docs`` then falls back to :data:`API_PAGE`)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() and (folder / "swagger-ui.css").is_file() else None


def swagger_ui_page(openapi_url: str) -> HTMLResponse:
    """Swagger UI on the local files; the online validator badge is off, so the page fetches nothing elsewhere."""
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title="discopatch API",
        swagger_js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


#: /docs without fastapi-offline: a list of the operations read from /openapi.json, needing nothing else.
API_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>discopatch API</title>
<style>body{font:14px sans-serif;margin:2em;max-width:60em}code{background:#eee;padding:0 .3em}
li{margin:.4em 0}</style></head><body><h1>discopatch API</h1>
<p>The machine-readable description is <a href="/openapi.json">/openapi.json</a>.</p><ul id="ops"></ul>
<script>
fetch("/openapi.json").then(r => r.json()).then(spec => {
  const ul = document.getElementById("ops");
  for (const [path, ops] of Object.entries(spec.paths)) for (const [method, op] of Object.entries(ops)) {
    const li = document.createElement("li"), c = document.createElement("code");
    c.textContent = method.toUpperCase() + " " + path;
    li.append(c, " " + (op.summary || "") + (op.description ? " - " + op.description.split("\\n")[0] : ""));
    ul.append(li);
  }
});
</script></body></html>
"""


def pages_router(openapi_url: str, swagger_files: Path | None) -> APIRouter:
    """``/`` (redirect), ``/docs`` (:data:`API_PAGE`, or Swagger UI when ``swagger_files`` are served at
    :data:`SWAGGER_ASSETS`) and ``/dashboard``."""
    router = APIRouter()
    dashboard_html = files("discopatch.monitoring").joinpath("dashboard.html").read_text(encoding="utf-8")

    @router.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @router.get("/docs", include_in_schema=False)
    def api_page() -> HTMLResponse:
        return HTMLResponse(API_PAGE) if swagger_files is None else swagger_ui_page(openapi_url)

    @router.get(
        "/dashboard", response_class=HTMLResponse, tags=["dashboard"], responses=error_responses(401, text_route=True)
    )
    def dashboard() -> HTMLResponse:
        """A self-contained page: per stream the score timeline, alarm rate, alerts and flagged thumbnails."""
        return HTMLResponse(dashboard_html)

    return router
