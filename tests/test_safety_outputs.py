"""Every output is watermarked and signed: the CLI's generation modes and the service's worker."""
import io

import numpy as np
import pytest

from worldreel.cli import main
from worldreel.safety import provenance
from worldreel.safety.inspect import inspect_file
from worldreel.safety.output import job_payload

from test_cli_generate import _fast, model  # noqa: F401  (the tiny random model fixture)
from test_serve_api import KEY_A, KEY_B, Service, auth


def _mark_correlation(marked, raw):
    """How well the difference of two decoded videos matches the watermark embed() adds to ``raw``."""
    from worldreel.data.video_io import read_video
    from worldreel.safety import watermark

    payload = provenance.verify(marked).generation["watermark_payload"]
    raw_frames, marked_frames = read_video(raw)[0].astype(np.float32), read_video(marked)[0].astype(np.float32)
    expected = watermark.embed(raw_frames.astype(np.uint8), payload, key=watermark.load_key()) - raw_frames
    got = marked_frames - raw_frames
    return float(np.corrcoef(expected.ravel(), got.ravel())[0, 1])


def test_generate_output_is_marked_and_signed(tmp_path, model, capsys):  # noqa: F811
    # A random model's frames are noise (std ~43 levels), which hides a 2-level mark from the blind
    # detector; so the wiring is checked against the same video made with --no-watermark.
    out, raw = tmp_path / "a.mp4", tmp_path / "raw.mp4"
    assert main(["generate", "a red ball falls", "--seconds", "1", "--out", str(out), *_fast(model)]) == 0
    err = capsys.readouterr().err
    assert main(["generate", "a red ball falls", "--seconds", "1", "--out", str(raw), "--no-watermark",
                 *_fast(model)]) == 0
    assert _mark_correlation(out, raw) > 0.5
    v = provenance.verify(out)
    assert v.state == "trusted" and v.action == "c2pa.created"
    generation = v.generation
    assert f"watermark payload: {generation['watermark_payload']}" in err
    assert generation["seed"] == 3 and generation["mode"] == "generate"
    assert len(generation["prompt_sha256"]) == 64 and generation["weights_digest"]
    # an extension names its source as the parent
    ext = tmp_path / "b.mp4"
    assert main(["extend", str(out), "it bounces", "--seconds", "1", "--out", str(ext), *_fast(model)]) == 0
    assert provenance.verify(ext).action == "c2pa.edited"
    # a still carries exactly the watermark embed() makes (PNG is lossless), and no manifest
    png, raw_png = tmp_path / "a.png", tmp_path / "raw.png"
    assert main(["generate", "a red ball falls", "--out", str(png), *_fast(model)]) == 0
    assert main(["generate", "a red ball falls", "--out", str(raw_png), "--no-watermark", *_fast(model)]) == 0
    from worldreel.data.video_io import read_image
    from worldreel.safety import watermark

    payload = int(capsys.readouterr().err.split("watermark payload: ")[-1].split()[0])
    expected = watermark.embed(read_image(raw_png)[None], payload, key=watermark.load_key())[0]
    assert np.array_equal(read_image(png), expected) and not np.array_equal(read_image(png), read_image(raw_png))
    assert provenance.verify(png).state == "unsigned"


def test_research_switches_leave_the_marks_out_and_say_so(tmp_path, model, capsys):  # noqa: F811
    out = tmp_path / "raw.mp4"
    assert main(["generate", "a red ball falls", "--seconds", "1", "--out", str(out), "--no-watermark", "--no-sign",
                 *_fast(model)]) == 0
    err = capsys.readouterr().err
    assert "--no-watermark" in err and "--no-sign" in err
    assert provenance.verify(out).state == "unsigned"


def test_worker_output_is_marked_signed_and_found_by_detect(tmp_path):
    service = Service(tmp_path, keys=[KEY_A, KEY_B])
    video = service.create(key=KEY_A, seed="5", size="64x64").json()
    assert service.work() == 1
    content = service.client.get(f"/v1/videos/{video['id']}/content", headers=auth(KEY_A)).content
    path = tmp_path / "download.mp4"
    path.write_bytes(content)
    result = inspect_file(path)
    assert result["ours"] and result["payload"] == job_payload(video["id"])
    assert result["provenance"]["state"] == "trusted"
    assert result["provenance"]["generation"]["job_id"] == video["id"]

    def detect(key):
        return service.client.post("/v1/videos/detect", files={"video": ("x.mp4", io.BytesIO(content), "video/mp4")},
                                   headers=auth(key))

    found = detect(KEY_A)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["watermarked"] and body["video_id"] == video["id"] and body["provenance"]["state"] == "trusted"
    assert detect(KEY_B).json()["video_id"] is None  # another key's job is not revealed
    bad = service.client.post("/v1/videos/detect", files={"video": ("x.mp4", io.BytesIO(b"junk"), "video/mp4")},
                              headers=auth(KEY_A))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "video"
    # a remix is signed as an edit of its source
    remix = service.client.post(f"/v1/videos/{video['id']}/remix", json={"prompt": "a green ball falls"},
                                headers=auth(KEY_A)).json()
    assert service.work() == 1
    remixed = tmp_path / "remix.mp4"
    remixed.write_bytes(service.client.get(f"/v1/videos/{remix['id']}/content", headers=auth(KEY_A)).content)
    assert provenance.verify(remixed).action == "c2pa.edited"


def test_worker_research_mode(tmp_path):
    service = Service(tmp_path, watermark=False, sign=False)
    video = service.create(seed="5", size="64x64").json()
    assert service.work() == 1
    path = tmp_path / "v.mp4"
    path.write_bytes(service.client.get(f"/v1/videos/{video['id']}/content").content)
    result = inspect_file(path)
    assert not result["ours"] and result["provenance"]["state"] == "unsigned"
