"""GET /ui: the results page, a static HTML + JS + CSS page that reads the REST API in the browser.

The page holds no data and needs no key to load: it asks the person for the API key, keeps it in the tab's
sessionStorage and sends it as `Authorization: Bearer` on its own fetches (never in a URL). Every URL it uses is
relative, so it works behind the reverse proxy, under any path prefix. No build step, nothing from the internet.
"""

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
# The page's files and their types: anything else under /ui/ is a 404, whatever lies in the folder.
UI_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# Only the page's own files may run or style; images come from blob: URLs the page made from authenticated
# fetches; fetches go to the same origin (the API); nothing may frame the page or be posted elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
UI_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidated on each load (ETag): a new version of the page is never hidden behind a cached one.
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)


@router.get("")
def read_ui_page() -> FileResponse:
    """The page; `#/` lists jobs, datasets and adapters, `#/jobs/<id>` is one job's report."""
    return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8", headers=UI_HEADERS)


@router.get("/")
def redirect_ui_page() -> RedirectResponse:
    # Relative, so a path prefix in front of the gateway survives; the page's own relative URLs need /ui.
    return RedirectResponse("../ui", status_code=status.HTTP_308_PERMANENT_REDIRECT)


@router.get("/{asset}")
def read_ui_asset(asset: str) -> FileResponse:
    if asset not in UI_ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no such file of the page; it has {sorted(UI_ASSETS)}")
    return FileResponse(UI_DIR / asset, media_type=UI_ASSETS[asset], headers=UI_HEADERS)
