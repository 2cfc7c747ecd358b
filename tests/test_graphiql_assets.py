"""GraphiQL is served from the gateway's own pinned files: the page names only this origin, every
asset carries its SHA-384 and is the npm package's file, and the CSP allows nothing else."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from gateway.graphiql import ASSETS_DIR, ASSETS_PATH, PINNED, AssetMismatch, GraphiQLPage

from .gateway_client import gateway


def _sha384(data: bytes) -> str:
    return base64.b64encode(hashlib.sha384(data).digest()).decode()


def test_every_pinned_file_is_the_packages_file_named_in_assets_md() -> None:
    table = (ASSETS_DIR / "ASSETS.md").read_text()
    for name, pinned in PINNED.items():
        assert _sha384((ASSETS_DIR / name).read_bytes()) == pinned, name
        assert re.search(rf"^\| {re.escape(name)} \| \S+ \| \S+ \| {re.escape(pinned)} \|$", table, re.M), (
            name
        )


def test_a_changed_asset_stops_the_page(tmp_path: Path) -> None:
    for source in ASSETS_DIR.iterdir():
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "graphiql.min.js").write_bytes(b"alert('not graphiql')")
    with pytest.raises(AssetMismatch, match=r"graphiql\.min\.js"):
        GraphiQLPage(tmp_path)


async def test_the_page_and_its_assets_come_from_the_gateway_with_integrity() -> None:
    async with gateway() as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
        assert "http://" not in page.text and "https://" not in page.text  # nothing from another origin
        references = re.findall(r'(?:src|href)="([^"]+)" integrity="sha384-([^"]+)"', page.text)
        assert len(references) == 8
        for url, digest in references:
            assert url.startswith(ASSETS_PATH + "/")
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert _sha384(asset.content) == digest, url


async def test_no_graphiql_when_it_is_off() -> None:
    async with gateway(CG_GRAPHIQL="false") as client:
        asset = await client.get(ASSETS_PATH + "/graphiql.min.js")
    assert asset.status_code == 404
