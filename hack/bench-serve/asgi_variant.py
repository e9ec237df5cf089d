"""The same RestApp and DataPlane as mlplane-serve, behind uvicorn (ASGI) instead of our
httptools transport: the benchmark's measurement of the HTTP stack, not product code.

    python hack/bench-serve/asgi_variant.py MODEL_DIR SHA256 PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

from mlplane_runtime.httpserver import Deferred, Offload, Request
from mlplane_runtime.server.dataplane import DataPlane
from mlplane_runtime.server.model import OnnxModel
from mlplane_runtime.server.rest import RestApp


class Asgi:
    def __init__(self, app: RestApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            message = await receive()  # lifespan: nothing to set up
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        response = self.app(
            Request(scope["method"], scope["path"], query, headers, b"".join(chunks))
        )
        if isinstance(response, Offload):  # a heavy request: off the loop, as mlplane-serve
            response = await asyncio.get_running_loop().run_in_executor(None, response.run)
        elif isinstance(response, Deferred):  # a shared batch (this variant has none)
            response = await response.result
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", response.content_type), *response.headers],
            }
        )
        await send({"type": "http.response.body", "body": response.body})


def main() -> None:
    model_dir, sha256, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = OnnxModel("iris", "", model_dir, sha256, 1)
    model.load()
    app = Asgi(RestApp(DataPlane(model)))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
