"""GraphiQL, served by the gateway itself: the page and its pinned assets, no other origin.

The third-party files in ``gateway/static/graphiql/`` are the unmodified files of pinned npm packages
(``ASSETS.md`` there says which); each is checked against its pinned SHA-384 when the gateway starts
and named in the page with that ``integrity``, so a changed file is refused by the gateway and by the
browser. The page's own script and style are files too, so the ``Content-Security-Policy`` allows
scripts, styles and connections from this origin only: nothing is fetched from anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS_DIR = Path(__file__).parent / "static" / "graphiql"
ASSETS_PATH = "/graphiql-assets"

# file → sha384 (base64) of the npm package's file (ASSETS.md; strawberry-graphql pins the same)
PINNED: dict[str, str] = {
    "react.production.min.js": "tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8",
    "react-dom.production.min.js": "bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh",
    "graphiql.min.js": "HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
    "graphiql.min.css": "Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
    "plugin-explorer.umd.js": "2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9",
    "plugin-explorer.css": "5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi",
}
OWN = ("start.js", "page.css")

# GraphiQL and CodeMirror set inline styles and use data: fonts/images; everything else is this origin
# ('self' covers ws:/wss: to the same host for subscriptions).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class AssetMismatch(Exception):
    """A GraphiQL asset is not the pinned file."""


def sha384(path: Path) -> str:
    return base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


class GraphiQLPage:
    """The page (built once, integrity attributes filled in) and the static files under it."""

    def __init__(self, directory: Path = ASSETS_DIR) -> None:
        integrity: dict[str, str] = {}
        for name, pinned in PINNED.items():
            actual = sha384(directory / name)
            if actual != pinned:
                raise AssetMismatch(f"GraphiQL asset {name} does not match its pinned hash (see ASSETS.md)")
            integrity[name] = pinned
        for name in OWN:
            integrity[name] = sha384(directory / name)
        html = (directory / "index.html").read_text(encoding="utf-8").replace("{{base}}", ASSETS_PATH)
        for name, digest in integrity.items():
            html = html.replace("{{" + name + "}}", "sha384-" + digest)
        self.html = html
        self.files = StaticFiles(directory=directory)

    def response(self) -> Response:
        return HTMLResponse(
            self.html,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )
