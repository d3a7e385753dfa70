"""The official google-genai SDK, pointed at a gateway whose channel is the fake Google."""

from __future__ import annotations

import orjson
from google import genai
from google.genai import types

from tests.channels.conftest import FLASH_25, GOOGLE_KEY, GatewayFactory, toml_channel
from tests.upstreams import FakeGoogle, google_error, png


def test_sdk_generate_and_stream_through_a_channel(gateway_with: GatewayFactory, google: FakeGoogle) -> None:
    gateway = gateway_with(
        "[routing]\nbackoff_base = 0.05\n" + toml_channel("google", "gemini", google.url, keys=[GOOGLE_KEY])
    )
    client = genai.Client(
        api_key=gateway.key, http_options={"base_url": gateway.url, "api_version": "v1beta"}
    )
    source = png((9, 9, 9), (12, 12))
    google.enqueue(google_error(503))  # retried by the gateway; the SDK never sees it
    response = client.models.generate_content(
        model=FLASH_25,
        contents=["Put a hat on it", types.Part.from_bytes(data=source, mime_type="image/png")],
        config=types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio="16:9"),
        ),
    )
    parts = response.candidates[0].content.parts
    assert parts[0].text == "served by google"
    assert parts[1].inline_data.data == google.image
    assert response.usage_metadata.candidates_token_count == 1290
    # What the SDK sent is what Google got: the gateway's key replaced by the channel's.
    seen = google.requests[-1]
    assert seen.header("x-goog-api-key") == GOOGLE_KEY
    assert orjson.loads(seen.body)["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}
    assert len(google.requests) == 2

    chunks = list(client.models.generate_content_stream(model=FLASH_25, contents="A banana"))
    assert chunks[0].text == "served by google"
    assert chunks[-1].candidates[0].content.parts[0].inline_data.data == google.image
    assert google.requests[-1].query == {"alt": "sse"}
