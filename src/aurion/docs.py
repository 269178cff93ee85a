"""The interactive docs (/docs, Swagger UI) and the reference (/redoc), served offline.

FastAPI's default pages load their JavaScript and CSS from a CDN, so they are blank on a
machine without internet access. The assets come from the ``fastapi-offline`` wheel (Swagger
UI 5 and ReDoc 2, MIT): a declared, version-bounded dependency keeps 2.8 MB of minified
JavaScript out of the repository, and upgrading them is a version bump. Only its files are
used; the pages are FastAPI's own HTML helpers pointed at ``/docs/assets``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, JSONResponse

OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs/assets"
ASSET_NAMES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
# The assets change only with the package version, so browsers may keep them for a day.
ASSET_CACHE_CONTROL = "public, max-age=86400"

# The operationIds are shown, since generated clients are named after them. The token is not
# persisted (persistAuthorization): a bearer token in localStorage outlives the tab.
SWAGGER_UI_PARAMETERS = {
    "displayOperationId": True,
    "displayRequestDuration": True,
    "defaultModelsExpandDepth": 0,
    "tryItOutEnabled": False,
}


def assets_dir() -> Path:
    """The folder holding Swagger UI and ReDoc's files (inside the installed wheel)."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Serve /openapi.json, /docs, /docs/oauth2-redirect, /redoc and the docs' assets."""
    openapi_url = OPENAPI_URL
    folder = assets_dir()

    @app.get(OPENAPI_URL, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    # A route, not a StaticFiles mount: a fixed list of files (nothing else on disk is
    # reachable) and a route template the access log and metrics can name.
    @app.get(f"{ASSETS_URL}/{{name}}", include_in_schema=False)
    async def docs_asset(name: str = PathParam(max_length=64)) -> FileResponse:
        if name not in ASSET_NAMES:
            raise HTTPException(404, "No such asset.")
        return FileResponse(folder / name, headers={"Cache-Control": ASSET_CACHE_CONTROL})

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} — interactive docs",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} — reference",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
