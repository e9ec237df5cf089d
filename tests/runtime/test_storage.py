"""Storage URIs cannot escape: pvc:// stays inside its claim, http(s):// follows no
redirect and reads at most MLPLANE_HTTP_MAX_BYTES."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplane_runtime.errors import UserError
from mlplane_runtime.storage import parse_uri, read_bytes


class Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        body = b"a,b\n1,2\n" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "uri", ["pvc://../etc/passwd", "pvc://data/../other/x.csv", "pvc://data/./x", "pvc://Data/x"]
)
def test_a_pvc_uri_cannot_leave_its_claim(uri: str) -> None:
    with pytest.raises(UserError, match="pvc://"):
        parse_uri(uri)


def test_a_redirect_is_refused_naming_where_it_pointed(site: str) -> None:
    with pytest.raises(UserError, match=r"redirects to 'http://169\.254\.169\.254/.*not followed"):
        read_bytes(f"{site}/redirect")


def test_an_object_above_the_size_limit_is_refused(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(read_bytes(f"{site}/data.csv")) == 800
    monkeypatch.setenv("MLPLANE_HTTP_MAX_BYTES", "100")
    with pytest.raises(UserError, match="larger than 100 bytes"):
        read_bytes(f"{site}/data.csv")
