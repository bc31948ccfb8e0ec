"""Prompt rewriting: rules (synonyms, fills from the seed, said out loud) and the optional chat endpoint."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from worldreel.data.captions import canonical_facts, parse_caption
from worldreel.errors import UserError
from worldreel.pipelines.prompts import ChatEndpoint, PromptRewriter, facts_from_prompt

RULES = PromptRewriter()


def _objects(facts):
    return [(o.color, o.shape, o.motion) for o in facts.objects]


def test_synonyms_are_normalised_and_said():
    out = RULES.rewrite("crimson sphere dropping", seed=0)
    assert _objects(out.facts) == [("red", "ball", "falls")]
    assert parse_caption(out.text) == out.facts  # the model gets a real caption
    assert "crimson" not in out.text.lower() and any("'crimson' as red" in n for n in out.notes)
    cam = RULES.rewrite("the camera slowly pans to the right as a teal cube tumbles", seed=0)
    assert cam.facts.camera == "pan_right" and _objects(cam.facts) == [("cyan", "box", "falls")]


def test_unstated_parts_are_filled_from_the_seed_and_noted():
    a, b = RULES.rewrite("a ball", seed=11), RULES.rewrite("a ball", seed=11)
    assert a.text == b.text and a.notes == b.notes  # deterministic per seed
    assert any("colour" in n and "seed 11" in n for n in a.notes) and any("motion" in n for n in a.notes)
    fills = {RULES.rewrite("a ball", seed=s).facts.objects[0] for s in range(12)}
    assert len({(o.color, o.motion) for o in fills}) > 3  # the seed really chooses
    for s in range(12):  # ... but never overrides what the prompt says
        facts = RULES.rewrite("a red ball rolls", seed=s).facts
        assert facts.objects[0].color == "red" and facts.objects[0].motion in ("rolls_left", "rolls_right")
        assert facts.camera == "static"  # unstated camera: the world's default, which captions leave out


def test_counts_hits_pillar_and_camera_are_read():
    facts, notes = facts_from_prompt("two boxes sliding to the left", seed=0)
    assert [(o.shape, o.motion) for o in facts.objects] == [("box", "rolls_left")] * 2
    assert facts.objects[0].color == facts.objects[1].color
    assert notes == ["read 'sliding' as rolls/slides", f"no colour stated for the box: chose {facts.objects[0].color} (seed 0)"]
    facts, _ = facts_from_prompt("a cyan ball rolls right behind a grey pillar and hits an orange box", seed=0)
    assert facts.pillar and facts.objects[0].behind_pillar and facts.objects[0].hits == 1
    assert facts.objects[1].motion == "rests"
    facts, notes = facts_from_prompt("a red ball hits a blue box", seed=3)
    assert facts.objects[0].motion != "rests"  # a hitter moves; the rules choose how, and say so
    assert any("hits" in n for n in notes)
    facts, _ = facts_from_prompt("a blue box rests. a red ball rolls left and then the ball hits the blue box", seed=0)
    assert len(facts.objects) == 2  # "the ball", "the blue box" are the ones already named
    ball = next(o for o in facts.objects if o.shape == "ball")
    assert ball.motion == "rolls_left" and facts.objects[ball.hits].color == "blue"
    facts, _ = facts_from_prompt("static camera, a white block sits still", seed=0)
    assert facts.camera == "static" and _objects(facts) == [("white", "box", "rests")]


def test_captions_pass_unchanged_and_every_rewrite_parses_back():
    for caption in ("a red ball falls and bounces on the floor", "two green boxes slide to the right",
                    "A yellow ball is thrown to the left; the camera pans right"):
        out = RULES.rewrite(caption, seed=5)
        assert out.text == caption and out.source == "unchanged" and not out.notes
    for loose in ("red sphere dropping", "blocks", "something purple falls", "a ball is tossed",
                  "an orange cube glides right while the camera pans left", "gold marble lying still"):
        for seed in range(3):
            out = RULES.rewrite(loose, seed=seed)
            assert parse_caption(out.text) == canonical_facts(out.facts), (loose, out.text)


@pytest.mark.parametrize("prompt", ["", "   ", "a cat plays the piano", "three balls and two boxes"])
def test_prompts_the_world_cannot_show_are_errors(prompt):
    with pytest.raises(UserError) as err:
        RULES.rewrite(prompt, seed=0)
    assert err.value.param == "prompt"


class _FakeChat(BaseHTTPRequestHandler):
    reply = "a green ball rolls left"
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": type(self).reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def fake_endpoint():
    server = HTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeChat.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_chat_endpoint_is_used_when_configured(fake_endpoint):
    _FakeChat.reply = '"a green ball rolls left"'
    rewriter = PromptRewriter(ChatEndpoint(url=fake_endpoint, model="tiny-chat", api_key="k123"))
    out = rewriter.rewrite("green marble going left", seed=4)
    assert out.source == "endpoint" and out.text == "a green ball rolls left"
    assert _objects(out.facts) == [("green", "ball", "rolls_left")]
    path, headers, body = _FakeChat.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer k123"
    assert body["model"] == "tiny-chat" and body["messages"][-1]["content"] == "green marble going left"
    assert body["seed"] == 4 and body["messages"][0]["role"] == "system"


def test_a_reply_that_is_not_a_caption_falls_back_to_the_rules(fake_endpoint):
    _FakeChat.reply = "Sure! Here is a lovely video of a dragon."
    out = PromptRewriter(ChatEndpoint(url=fake_endpoint, model="m")).rewrite("crimson sphere dropping", seed=0)
    assert out.source == "rules" and _objects(out.facts) == [("red", "ball", "falls")]
    assert "not a caption" in out.notes[0]


def test_an_unreachable_endpoint_falls_back_to_the_rules():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = PromptRewriter(ChatEndpoint(url=f"http://127.0.0.1:{port}/v1", model="m", timeout=2)).rewrite("a red ball", seed=0)
    assert out.source == "rules" and "used the rules" in out.notes[0]
