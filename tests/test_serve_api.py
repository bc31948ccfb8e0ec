"""The HTTP API with a fast fake generator: shapes, validation, limits, isolation, restarts."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from test_serve_queue import FakeGenerator, fast_cfg
from worldreel.errors import UserError
from worldreel.presets import get_preset
from worldreel.serve.app import create_app
from worldreel.serve.auth import KeyRing, check_bind
from worldreel.serve.models import ServedModel
from worldreel.serve.worker import Worker

KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
VIDEO_FIELDS = {"id", "object", "status", "progress", "created_at", "completed_at", "expires_at", "model", "prompt",
                "remixed_from_video_id", "seconds", "size", "error", "model_prompt", "seed"}


def served() -> dict[str, ServedModel]:
    return {"world-tiny": ServedModel("world-tiny", "world-tiny", get_preset("world-tiny").model)}


class Service:
    """An app on ``data`` plus an in-process worker with a fake generator."""

    def __init__(self, data, keys=(), **cfg):
        self.cfg = fast_cfg(**cfg)
        self.gen = FakeGenerator(steps=2)
        self.app = create_app(data, served(), keys=KeyRing(keys), cfg=self.cfg)
        self.client = TestClient(self.app)
        self.worker = Worker(data, models={"world-tiny": "world-tiny"}, factory=lambda s: self.gen, cfg=self.cfg)

    def create(self, key=None, files=None, **form):
        form.setdefault("prompt", "a red ball falls and bounces on the floor")
        form.setdefault("seconds", "1")
        form.setdefault("size", "32x32")
        return self.client.post("/v1/videos", data=form, files=files, headers=auth(key))

    def work(self, jobs=1):
        return self.worker.run(max_jobs=jobs, idle_exit=0.5)


def auth(key):
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture()
def service(tmp_path):
    return Service(tmp_path)


def assert_error(response, status, param, *words):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for word in words:
        assert word in error["message"], error["message"]
    return error


def png(width, height, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width, height) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (decoding it would need gigabytes)."""
    data = bytearray(png(1, 1))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_create_retrieve_and_download(service):
    created = service.create(seed="5")
    assert created.status_code == 200, created.text
    video = created.json()
    assert set(video) == VIDEO_FIELDS
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert (video["seconds"], video["size"], video["model"], video["seed"]) == ("1", "32x32", "world-tiny", 5)
    waiting = service.client.get(f"/v1/videos/{video['id']}")
    assert waiting.headers["openai-poll-after-ms"] == str(service.cfg.poll_after_ms)
    assert_error(service.client.get(f"/v1/videos/{video['id']}/content"), 409, "video_id", "queued")

    assert service.work() == 1
    done = service.client.get(f"/v1/videos/{video['id']}").json()
    assert done["status"] == "completed" and done["progress"] == 100 and done["completed_at"] >= done["created_at"]
    assert done["model_prompt"] == "rewritten: a red ball falls and bounces on the floor"
    mp4 = service.client.get(f"/v1/videos/{video['id']}/content")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4" and mp4.content[4:8] == b"ftyp"
    thumb = service.client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    sheet = service.client.get(f"/v1/videos/{video['id']}/content", params={"variant": "spritesheet"})
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 32)
    assert Image.open(io.BytesIO(sheet.content)).size == (4 * 32, 3 * 32)  # 9 frames in rows of 4
    assert_error(service.client.get(f"/v1/videos/{video['id']}/content", params={"variant": "gif"}), 400, "variant",
                 "video", "thumbnail", "spritesheet")


def test_validation_errors_name_the_parameter(service):
    assert_error(service.create(size="100x64"), 400, "size", "multiple of 16")
    assert_error(service.create(size="big"), 400, "size", "16")
    assert_error(service.create(seconds="-3"), 400, "seconds", "seconds")
    assert_error(service.create(seconds="forever"), 400, "seconds")
    assert_error(service.create(model="sora-2"), 400, "model", "world-tiny")
    assert_error(service.create(prompt="x" * 1001), 400, "prompt", "1000")
    assert_error(service.create(prompt="   "), 400, "prompt")
    assert_error(service.client.post("/v1/videos", data={"seconds": "4"}), 400, "prompt")
    assert_error(service.create(seed="-1"), 400, "seed")
    assert_error(service.client.get("/v1/videos", params={"limit": 0}), 400, "limit")
    assert_error(service.client.get("/v1/videos", params={"order": "sideways"}), 400, "order", "asc", "desc")
    assert_error(service.client.get("/v1/videos", params={"after": "video_nope"}), 400, "after")
    missing = service.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    for path, allowed in (("/v1/videos", "GET, POST"), ("/v1/videos/edits", "POST"), ("/v1/videos/x", "DELETE, GET")):
        wrong = service.client.put(path)
        assert wrong.status_code == 405 and wrong.headers["allow"] == allowed, (path, wrong.headers)
    assert service.client.get("/v1/videos").json()["data"] == []  # nothing was queued by any of these


def test_upload_limits_are_checked_before_decoding(tmp_path):
    service = Service(tmp_path, max_upload_bytes=200_000, max_image_side=1024, max_image_pixels=500_000)
    huge = service.create(files={"input_reference": ("big.png", b"\x89PNG" + bytes(600_000), "image/png")})
    assert_error(huge, 413, None, "larger than")
    claims = service.create(files={"input_reference": ("claims.png", png_claiming(5000, 5000), "image/png")})
    assert assert_error(claims, 400, "input_reference", "5000x5000")["code"] == "image_too_large"
    bomb = service.create(files={"input_reference": ("bomb.png", png_claiming(60_000, 60_000), "image/png")})
    assert assert_error(bomb, 400, "input_reference", "limit")["code"] == "image_too_large"
    wide = service.create(files={"input_reference": ("wide.png", png(2000, 2), "image/png")})
    assert_error(wide, 400, "input_reference", "2000x2")
    text = service.create(files={"input_reference": ("notes.png", b"hello, not a picture", "image/png")})
    assert_error(text, 400, "input_reference", "not a readable image")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    assert_error(service.create(files={"input_reference": ("a.gif", gif.getvalue(), "image/gif")}), 400,
                 "input_reference", "GIF")
    remote = service.create(**{"input_reference[image_url]": "http://example.com/cat.png"})
    assert_error(remote, 400, "input_reference[image_url]", "data:")
    assert service.client.get("/v1/videos").json()["data"] == []


def test_image_to_video_gives_the_fitted_image_as_frame_0(service):
    picture = np.zeros((40, 80, 3), np.uint8)
    picture[:, 20:60] = (40, 200, 70)  # the centre 40x40 is green; the sides (cropped away) black
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    created = service.create(files={"input_reference": ("start.png", buffer.getvalue(), "image/png")})
    assert created.status_code == 200, created.text
    service.work()
    (condition,) = service.gen.calls[-1]["conditions"]
    assert condition.at_index == 0 and condition.frames.shape == (1, 32, 32, 3)
    assert np.abs(condition.frames[0].astype(int) - (40, 200, 70)).max() <= 2  # centre-cropped, not squashed


def test_list_pages_and_delete(service):
    ids = [service.create(prompt=f"a blue box slides {i}").json()["id"] for i in range(5)]
    first = service.client.get("/v1/videos", params={"limit": 2, "order": "asc"}).json()
    assert first["object"] == "list" and [v["id"] for v in first["data"]] == ids[:2]
    assert first["has_more"] and first["last_id"] == ids[1] and first["first_id"] == ids[0]
    rest = service.client.get("/v1/videos", params={"limit": 10, "order": "asc", "after": first["last_id"]}).json()
    assert [v["id"] for v in rest["data"]] == ids[2:] and not rest["has_more"]
    newest = service.client.get("/v1/videos").json()
    assert [v["id"] for v in newest["data"]] == ids[::-1]
    gone = service.client.delete(f"/v1/videos/{ids[0]}")
    assert gone.json() == {"id": ids[0], "object": "video.deleted", "deleted": True}
    assert_error(service.client.get(f"/v1/videos/{ids[0]}"), 404, "video_id")
    assert_error(service.client.delete(f"/v1/videos/{ids[0]}"), 404, "video_id")
    service.work(jobs=4)
    done = service.client.get(f"/v1/videos/{ids[1]}").json()
    assert done["status"] == "completed"
    assert service.client.delete(f"/v1/videos/{ids[1]}").status_code == 200
    assert not (service.worker.data / "videos" / ids[1]).exists()  # its files went with it
    assert_error(service.client.get(f"/v1/videos/{ids[1]}/content"), 404, "video_id")
    assert len(service.gen.calls) == 4  # the cancelled job never ran


def test_keys_isolate_owners(tmp_path):
    service = Service(tmp_path, keys=[KEY_A, KEY_B])
    assert_error(service.create(), 401, None, "API key")
    assert_error(service.create(key="key-c-not-a-real-key-000"), 401, None, "Incorrect")
    mine = service.create(key=KEY_A).json()["id"]
    service.work()
    for method, path in (("GET", f"/v1/videos/{mine}"), ("GET", f"/v1/videos/{mine}/content"),
                         ("DELETE", f"/v1/videos/{mine}")):
        assert_error(service.client.request(method, path, headers=auth(KEY_B)), 404, "video_id")
    assert_error(service.client.post(f"/v1/videos/{mine}/remix", json={"prompt": "a green ball"},
                                     headers=auth(KEY_B)), 404, "video_id")
    assert_error(service.client.post("/v1/videos/extensions", data={"prompt": "more", "seconds": "1",
                                                                     "video[id]": mine}, headers=auth(KEY_B)),
                 404, "video_id")
    assert service.client.get("/v1/videos", headers=auth(KEY_B)).json()["data"] == []
    assert [v["id"] for v in service.client.get("/v1/videos", headers=auth(KEY_A)).json()["data"]] == [mine]
    assert service.client.get(f"/v1/videos/{mine}/content", headers=auth(KEY_A)).status_code == 200


def test_queue_bound_per_key_answers_429(tmp_path):
    service = Service(tmp_path, keys=[KEY_A, KEY_B], max_pending_per_key=2)
    assert service.create(key=KEY_A).status_code == 200 and service.create(key=KEY_A).status_code == 200
    full = service.create(key=KEY_A)
    assert full.status_code == 429 and full.json()["error"]["type"] == "rate_limit_error"
    assert service.create(key=KEY_B).status_code == 200  # B has its own bound
    service.work(jobs=3)
    assert service.create(key=KEY_A).status_code == 200  # finished jobs free the slots


def test_remix_extend_and_edit(service):
    source = service.create(seed="11").json()
    not_ready = service.client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a green ball"})
    assert_error(not_ready, 409, "video_id", "queued")
    service.work()
    remix = service.client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a green ball falls"}).json()
    assert remix["remixed_from_video_id"] == source["id"] and remix["seed"] == 11 and remix["seconds"] == "1"
    extend = service.client.post("/v1/videos/extensions", data={"prompt": "it keeps bouncing", "seconds": "2",
                                                                "video[id]": source["id"]})
    assert extend.status_code == 200, extend.text
    assert extend.json()["seconds"] == "3"  # the stitched total
    edit = service.client.post("/v1/videos/edits", data={"prompt": "make it blue", "video[id]": source["id"]})
    assert edit.status_code == 200 and edit.json()["seconds"] == "1"
    assert_error(service.client.post("/v1/videos/extensions", data={"prompt": "more", "seconds": "1"}), 400, "video")
    assert_error(service.client.post("/v1/videos/extensions", data={"prompt": "x", "seconds": "500",
                                                                    "video[id]": source["id"]}), 400, "seconds")
    service.client.delete(f"/v1/videos/{source['id']}")  # the queued jobs keep their own copy of the source
    service.work(jobs=3)
    remix_call, extend_call, edit_call = service.gen.calls[1:]
    assert remix_call["strength"] is not None and remix_call["conditions"][0].frames.shape == (9, 32, 32, 3)
    assert extend_call["seconds"] == 3.0 and extend_call["strength"] is None
    assert extend_call["conditions"][0].frames.shape == (9, 32, 32, 3)  # the whole source, then 2 s more
    assert edit_call["strength"] is not None
    for video in (remix, extend.json(), edit.json()):
        assert service.client.get(f"/v1/videos/{video['id']}").json()["status"] == "completed"


def test_restart_keeps_jobs_and_files(tmp_path):
    first = Service(tmp_path)
    done_id = first.create().json()["id"]
    first.work()
    queued_id = first.create(prompt="a yellow ball is thrown to the right").json()["id"]
    before = first.client.get(f"/v1/videos/{done_id}/content").content
    del first  # the server goes away; a new one opens the same data folder

    second = Service(tmp_path)
    listed = {v["id"]: v["status"] for v in second.client.get("/v1/videos").json()["data"]}
    assert listed == {done_id: "completed", queued_id: "queued"}
    assert second.client.get(f"/v1/videos/{done_id}/content").content == before
    second.work()
    assert second.client.get(f"/v1/videos/{queued_id}").json()["status"] == "completed"


def test_openapi_document_and_health(service):
    doc = service.client.get("/openapi.json").json()
    for path in ("/v1/videos", "/v1/videos/{video_id}", "/v1/videos/{video_id}/content", "/v1/videos/{video_id}/remix",
                 "/v1/videos/extensions", "/v1/videos/edits"):
        assert path in doc["paths"], path
    assert "bearer" in str(doc["components"]["securitySchemes"]).lower()
    assert service.client.get("/healthz").json()["auth"] == "open"
    page = service.client.get("/")
    assert page.status_code == 200 and "worldreel studio" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from outside (works offline)
    models = service.client.get("/v1/models").json()["data"]
    assert models[0]["id"] == "world-tiny" and "64x64" in models[0]["sizes"] and "4" in models[0]["seconds"]


def test_open_service_only_binds_loopback():
    check_bind("127.0.0.1", KeyRing())
    check_bind("::1", KeyRing())
    with pytest.raises(UserError, match="--keys"):
        check_bind("0.0.0.0", KeyRing())
    check_bind("0.0.0.0", KeyRing([KEY_A]))
    with pytest.raises(UserError, match="16 characters"):
        KeyRing.load(keys=["short"])


def test_serve_command_refuses_open_public_bind(tmp_path, capsys):
    from worldreel.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--data", str(tmp_path), "--workers", "0"]) == 2
    assert "API keys" in capsys.readouterr().err
