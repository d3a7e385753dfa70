"""`/v1/images/generations` and `/v1/images/edits` through the official openai SDK (sync and
async) against a real gateway process."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import Gateway
from tests.openai.conftest import FLASH_25, FLASH_31, PRO_3, decode, png, sdk

EMULATE = "x-bananagate-emulate"


def test_generate_b64_json(client: OpenAI) -> None:
    answer = client.images.generate(model=FLASH_25, prompt="a red bicycle", size="1792x1024", quality="hd")
    assert len(answer.data) == 1
    image = decode(base64.b64decode(answer.data[0].b64_json))
    assert image.format == "PNG" and image.size == (1344, 768)
    assert answer.output_format == "png" and answer.size == "1344x768"
    usage = answer.usage
    assert usage.output_tokens_details.image_tokens == 1290
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens > 1290


def test_generate_url_is_fetchable_and_signed(client: OpenAI, gateway: Gateway) -> None:
    answer = client.images.generate(
        model=PRO_3, prompt="a blue door", size="1024x1536", response_format="url"
    )
    url = answer.data[0].url
    assert url.startswith(gateway.url + "/v1/files/images/") and "exp=" in url and "sig=" in url
    fetched = httpx.get(url)  # no API key: the signed link is the credential
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/jpeg"
    assert decode(fetched.content).size == (848, 1264)
    # Tampering with the link is refused in OpenAI's envelope.
    name, _, query = url.rpartition("/")[2].partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    base = f"{gateway.url}/v1/files/images/"
    later = int(params["exp"]) + 3600
    for bad in (
        f"{base}{name}?exp={later}&sig={params['sig']}",  # extended expiry
        f"{base}{name}?exp={params['exp']}&sig={params['sig'][:-2]}AA",  # forged signature
        f"{base}{'0' * 32}.jpg?exp={params['exp']}&sig={params['sig']}",  # another file
        f"{base}{name}",  # no signature
    ):
        refused = httpx.get(bad)
        assert refused.status_code == 403, (bad, refused.text)
        assert refused.json()["error"]["code"] == "invalid_image_link"
    for traversal in ("..%2Fdefault.key", "..%2F..%2Fetc%2Fpasswd", "default.key"):
        refused = httpx.get(f"{base}{traversal}?exp={params['exp']}&sig={params['sig']}")
        assert refused.status_code == 404, refused.text


def test_public_url_setting_is_the_link_base(open_gateway: Gateway) -> None:
    with sdk(open_gateway) as client:
        answer = client.images.generate(
            model=FLASH_31, prompt="a kite", size="512x512", response_format="url"
        )
    # BANANAGATE_PUBLIC_URL (set for this gateway) replaces the address the request came in on.
    assert answer.data[0].url.startswith("http://gateway.invalid:1234/v1/files/images/")
    path = answer.data[0].url.removeprefix("http://gateway.invalid:1234")
    assert httpx.get(open_gateway.url + path).status_code == 200


def test_images_dir_and_key_file(client: OpenAI, gateway: Gateway) -> None:
    client.images.generate(model=FLASH_31, prompt="a kite", size="512x512", response_format="url")
    key = gateway.data_dir / "image-links.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert any(p.suffix == ".jpg" for p in (gateway.data_dir / "images").iterdir())


async def test_async_generate_both_formats(aclient: AsyncOpenAI) -> None:
    b64 = await aclient.images.generate(model=FLASH_31, prompt="a fox", size="1024x1024")
    assert decode(base64.b64decode(b64.data[0].b64_json)).size == (1024, 1024)
    linked = await aclient.images.generate(
        model=FLASH_31, prompt="a fox", size="1024x1024", response_format="url"
    )
    async with httpx.AsyncClient() as http:
        fetched = await http.get(linked.data[0].url)
    assert decode(fetched.content).size == (1024, 1024)


def test_n_fans_out_in_parallel(client: OpenAI) -> None:
    raw = client.images.with_raw_response.generate(model=FLASH_25, prompt="three pears", n=3)
    answer = raw.parse()
    assert len(answer.data) == 3
    assert all(decode(base64.b64decode(d.b64_json)).size == (1024, 1024) for d in answer.data)
    assert answer.usage.output_tokens_details.image_tokens == 3 * 1290
    assert raw.headers["x-bananagate-attempts"] == "3"
    assert "x-bananagate-images-failed" not in raw.headers
    assert getattr(answer, "errors", None) is None


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        # A non-retryable upstream error on one call (a retryable 500 would be retried away by the router).
        ("status=400; times=1", 400, "invalid_argument"),
        # One of three images withheld by the safety filter: HTTP 200 upstream, but no image.
        ("finish=IMAGE_SAFETY; times=1", 400, "content_policy_violation"),
    ],
)
def test_partial_failure_is_reported(client: OpenAI, directive: str, status: int, code: str) -> None:
    # `times=1` counts identical requests: the first of the three fanned-out calls fails.
    prompt = f"partial failure {directive}"
    raw = client.images.with_raw_response.generate(
        model=FLASH_25, prompt=prompt, n=3, extra_headers={EMULATE: directive}
    )
    answer = raw.parse()
    assert raw.status_code == 200
    assert len(answer.data) == 2
    assert raw.headers["x-bananagate-images-failed"] == "1"
    (failure,) = answer.errors
    assert failure["status"] == status and failure["code"] == code
    assert failure["index"] in (0, 1, 2) and failure["message"]
    assert answer.usage.output_tokens_details.image_tokens == 2 * 1290  # only what was made


def test_all_failed_is_the_error(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model=FLASH_25, prompt="doomed", n=2, extra_headers={EMULATE: "status=500"})
    assert caught.value.status_code == 500
    assert caught.value.body["type"] == "server_error"


def test_edit_one_image(client: OpenAI) -> None:
    source = png((1600, 900))
    answer = client.images.edit(model=FLASH_25, image=("cat.png", source, "image/png"), prompt="add a hat")
    # No size: the edit follows its 16:9 input, as Gemini does.
    assert decode(base64.b64decode(answer.data[0].b64_json)).size == (1344, 768)
    assert answer.usage.input_tokens_details.image_tokens == 258


def test_edit_several_images_sync_and_raw_bytes(client: OpenAI) -> None:
    images = [png((64, 64)), png((80, 80), (0, 90, 200)), io.BytesIO(png((50, 50), (0, 0, 0)))]
    answer = client.images.edit(model=PRO_3, image=images, prompt="combine them", size="1536x1024")
    assert decode(base64.b64decode(answer.data[0].b64_json)).size == (1264, 848)
    assert answer.usage.input_tokens_details.image_tokens == 3 * 560


async def test_edit_several_images_async(aclient: AsyncOpenAI) -> None:
    images = [("a.png", png((64, 64)), "image/png"), ("b.png", png((64, 32)), "image/png")]
    answer = await aclient.images.edit(
        model=FLASH_31, image=images, prompt="merge", response_format="url", size="512x512"
    )
    async with httpx.AsyncClient() as http:
        fetched = await http.get(answer.data[0].url)
    assert decode(fetched.content).size == (512, 512)


def test_edit_refusals(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model=FLASH_25, image=png(), mask=png(), prompt="inpaint")
    assert caught.value.param == "mask" and "not supported" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model=FLASH_25, image=[png()] * 4, prompt="too many")
    assert caught.value.code == "too_many_images" and "at most 3" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(model=FLASH_25, image=("x.png", b"not an image", "image/png"), prompt="x")
    assert caught.value.code == "invalid_image_format"


def test_wrong_key_raises_authentication_error(gateway: Gateway) -> None:
    with sdk(gateway, key="sk-not-a-real-key") as bad, pytest.raises(openai.AuthenticationError) as caught:
        bad.images.generate(model=FLASH_25, prompt="x")
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key" and caught.value.type == "invalid_request_error"
    missing = httpx.post(f"{gateway.url}/v1/images/generations", json={"prompt": "x"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"


def test_bad_parameters_raise_bad_request(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=FLASH_25, prompt="x", size="999x999")
    assert caught.value.param == "size" and caught.value.code == "invalid_size"
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model=FLASH_25, prompt="x", n=11)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model=FLASH_25, prompt="x", response_format="png")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(model="dall-e-3", prompt="x")
    assert missing.value.code == "model_not_found"


def test_openai_envelope_on_every_error(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {gateway.key}"}
    for response in (
        httpx.post(f"{gateway.url}/v1/images/generations", headers=headers, content=b"{not json"),
        httpx.get(f"{gateway.url}/v1/images/generations", headers=headers),
        httpx.post(f"{gateway.url}/v1/images/edits", headers=headers, json={"prompt": "x"}),
    ):
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert response.status_code in (400, 405)


def test_emulate_header_passes_through(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(
            model=FLASH_25, prompt="busy", extra_headers={EMULATE: "status=429; retry-delay=0"}
        )
    assert caught.value.body["type"] == "rate_limit_error"
