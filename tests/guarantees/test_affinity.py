"""Conversation affinity (acceptance 5): a turn carrying a thought signature or an image this
gateway produced goes to the channel that produced it; if that one is down, the request fails
over and says so."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson

from bananagate.protocol.wire import GenerateContentRequest
from bananagate.server.affinity import answer_digests, image_digest, request_digests, signature_digest
from bananagate.server.selection import plan_order
from tests.guarantees.conftest import GENERATE, Rig, signing
from tests.upstreams import google_error


def _first_turn(rig: Rig, secret: str, prompt: str) -> tuple[str, dict[str, Any]]:
    with rig.client(secret) as client:
        response = client.post(GENERATE, json={"contents": [{"role": "user", "parts": [{"text": prompt}]}]})
    assert response.status_code == 200
    assert "x-bananagate-affinity" not in response.headers  # nothing to be affine to yet
    return response.headers["x-bananagate-channel"], response.json()["candidates"][0]["content"]


def _second_turn(prompt: str, model_turn: dict[str, Any], **drop: bool) -> dict[str, Any]:
    parts = [p for p in model_turn["parts"] if not (drop.get("image") and "inlineData" in p)]
    parts = [p for p in parts if not (drop.get("signature") and "thoughtSignature" in p)]
    return {
        "contents": [
            {"role": "user", "parts": [{"text": prompt}]},
            {"role": "model", "parts": parts},
            {"role": "user", "parts": [{"text": "Now make it blue"}]},
        ]
    }


def test_a_signed_second_turn_goes_to_its_channel_20_times_out_of_20(fresh: Rig) -> None:
    _, secret = fresh.key()
    for upstream in fresh.upstreams:
        signing(upstream)
    # Equal priorities: each first turn picks a channel at random, so both show up (a fixed
    # count of turns would miss one now and then; 40 turns miss one once in 2**39 runs).
    firsts: list[tuple[str, dict[str, Any]]] = []
    while len(firsts) < 40 and len({channel for channel, _ in firsts}) < 2:
        firsts.append(_first_turn(fresh, secret, f"A red bicycle #{len(firsts)}"))
    assert {channel for channel, _ in firsts} == {"a", "b"}
    channel, model_turn = firsts[0]
    turn = _second_turn("A red bicycle #0", model_turn, image=True)  # the signature alone
    with fresh.client(secret) as client:
        answers = [client.post(GENERATE, json=turn) for _ in range(20)]
    assert [a.headers["x-bananagate-channel"] for a in answers] == [channel] * 20
    assert {a.headers["x-bananagate-affinity"] for a in answers} == {"kept"}


def test_an_image_the_gateway_produced_carries_affinity_too(fresh: Rig) -> None:
    _, secret = fresh.key()
    channel, model_turn = _first_turn(fresh, secret, "A lighthouse")  # no signatures here
    turn = _second_turn("A lighthouse", model_turn)
    # As the google-genai SDK sends it back: URL-safe Base64.
    for part in turn["contents"][1]["parts"]:
        if "inlineData" in part:
            raw = base64.b64decode(part["inlineData"]["data"])
            part["inlineData"]["data"] = base64.urlsafe_b64encode(raw).decode()
    with fresh.client(secret) as client:
        answers = [client.post(GENERATE, json=turn) for _ in range(8)]
    assert {a.headers["x-bananagate-channel"] for a in answers} == {channel}
    assert {a.headers["x-bananagate-affinity"] for a in answers} == {"kept"}


def test_when_the_channel_is_down_affinity_is_broken_and_said_so(fresh: Rig) -> None:
    _, secret = fresh.key()
    for upstream in fresh.upstreams:
        signing(upstream)
    channel, model_turn = _first_turn(fresh, secret, "A kite")
    down, other = (fresh.a, "b") if channel == "a" else (fresh.b, "a")
    down.set_default(google_error(503))
    with fresh.client(secret) as client:
        answer = client.post(GENERATE, json=_second_turn("A kite", model_turn))
    assert answer.status_code == 200
    assert answer.headers["x-bananagate-channel"] == other
    assert answer.headers["x-bananagate-affinity"] == "broken"


def test_digests_match_between_answers_and_requests_in_either_base64_alphabet() -> None:
    image = os.urandom(50_000)
    signature = os.urandom(200)
    answer = orjson.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": "x", "thoughtSignature": base64.b64encode(signature).decode()},
                            {
                                "inlineData": {
                                    "mimeType": "image/png",
                                    "data": base64.b64encode(image).decode(),
                                }
                            },
                        ]
                    }
                }
            ]
        }
    )
    request = GenerateContentRequest.model_validate(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "a"}]},
                {
                    "role": "model",
                    "parts": [
                        {"text": "x", "thought_signature": base64.urlsafe_b64encode(signature).decode()},
                        {"inline_data": {"data": base64.urlsafe_b64encode(image).decode().rstrip("=")}},
                    ],
                },
            ]
        }
    )
    assert answer_digests(answer) == [
        signature_digest(base64.b64encode(signature)),
        image_digest(base64.b64encode(image)),
    ]
    assert set(request_digests(request)) == set(answer_digests(answer))
    assert image_digest(base64.b64encode(os.urandom(50_000))) != answer_digests(answer)[1]


def test_the_preferred_channel_goes_first_whatever_its_priority() -> None:
    import random

    class C:
        def __init__(self, name: str, priority: int) -> None:
            self.name, self.priority, self.weight, self.key_ids = name, priority, 1, [name]

    channels = [C("high", 10), C("low", 0), C("mid", 5)]
    assert plan_order(channels, random.Random(0)) == [0, 2, 1]
    assert plan_order(channels, random.Random(0), prefer=1) == [1, 0, 2]
