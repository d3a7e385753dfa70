"""What a forwarding gateway loads: libraries it only needs for some features (httpx for image URLs,
webhooks and `openai-images` channels; Jinja for console pages; Pillow for thumbnails, collages
and the emulator; a WebSocket library for nothing) stay out of its memory until then."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bananagate.cli.serve import _uvicorn_options
from bananagate.settings import Settings

# Run in a fresh interpreter: the test process itself has imported everything. The app is driven
# through ASGI by hand (Starlette's TestClient would import httpx itself).
PROBE = """
import asyncio, sys
from pathlib import Path
from bananagate.server.app import create_app
from bananagate.settings import Settings
from bananagate.store import Store

data = Path(sys.argv[1])
data.mkdir(parents=True)
(data / "bananagate.toml").write_text(
    '[[channels]]\\nname = "up"\\nkind = "gemini-compatible"\\nbase_url = "http://127.0.0.1:1"\\n'
    'keys = ["k"]\\nmodels = ["gemini-2.5-flash-image"]\\n'
)
settings = Settings(data_dir=data)
with Store.from_settings(settings) as store:
    _, secret = store.keys.create_key("probe")


async def main() -> None:
    app = create_app(settings)
    lifespan: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict) -> None:
        started.set()

    await lifespan.put({"type": "lifespan.startup"})
    running = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, lifespan.get, lifespan_send)
    )
    await started.wait()
    pending = [{"type": "http.request", "body": b'{"contents":[{"parts":[{"text":"a cat"}]}]}'}]
    sent: list = []

    async def receive() -> dict:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client stays connected

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1beta/models/gemini-2.5-flash-image:generateContent",
        "raw_path": b"", "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"authorization", secret.encode()), (b"content-type", b"application/json")],
        "state": {},
    }
    await app(scope, receive, send)
    await lifespan.put({"type": "lifespan.shutdown"})
    await running
    print(sent[0]["status"], *(name in sys.modules for name in ("httpx", "jinja2", "PIL")))


asyncio.run(main())
"""


def test_a_request_forwarded_to_a_gemini_channel_loads_no_httpx_jinja_or_pillow(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "data")], capture_output=True, text=True, timeout=120
    )
    # 503: nothing listens on the channel's port; the request went all the way to the upstream call.
    assert done.stdout.split() == ["503", "False", "False", "False"], done.stderr[-3000:]


def test_serve_loads_no_rich(tmp_path: Path) -> None:
    # The banner is click's: Rich (~2.5 MB) is for the commands that print tables and progress.
    probe = (
        "import sys; from click.testing import CliRunner; from bananagate.cli.serve import serve; "
        "import uvicorn; uvicorn.run = lambda *a, **k: None; "
        "result = CliRunner().invoke(serve, ['--data-dir', sys.argv[1]]); "
        "print(result.exit_code, 'rich' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["0", "False"], done.stderr[-3000:]


def test_serve_runs_uvicorn_without_websockets() -> None:
    # There is no WebSocket route; uvicorn's default ("auto") would import a WebSocket library.
    assert _uvicorn_options(Settings())["ws"] == "none"
