"""The official ``openai`` client, unchanged, against a real server on 127.0.0.1.

End to end: uvicorn in a thread, a worker thread running a tiny randomly initialised
worldreel model (``save_random_model``), and ``openai.OpenAI(base_url=.../v1)`` driving
create_and_poll, download, list (auto-pagination), remix, extend, edit, delete, and the
error mapping (400 -> BadRequestError naming the parameter, 404 -> NotFoundError).
"""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

openai = pytest.importorskip("openai")

from test_serve_queue import fast_cfg  # noqa: E402
from worldreel.serve.app import create_app  # noqa: E402
from worldreel.serve.auth import KeyRing  # noqa: E402
from worldreel.serve.models import resolve_models  # noqa: E402
from worldreel.serve.runner import BackgroundServer  # noqa: E402
from worldreel.serve.worker import Worker  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # "Sora API ... shut down"
KEY, OTHER_KEY = "test-key-aaaaaaaaaaaaaaaa", "test-key-bbbbbbbbbbbbbbbb"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from worldreel.pipelines.generate import Generator, SamplingConfig
    from worldreel.model_folder import save_random_model

    root = tmp_path_factory.mktemp("openai")
    folder = save_random_model(root / "world-tiny", "world-micro")
    served = resolve_models([str(folder)])
    cfg = fast_cfg(poll_after_ms=100)
    app = create_app(root / "data", served, keys=KeyRing([KEY, OTHER_KEY]), cfg=cfg)
    worker = Worker(root / "data", models={"world-tiny": str(folder)}, cfg=cfg,
                    factory=lambda source: Generator.load(source, sampling=SamplingConfig(steps=2)))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    with BackgroundServer(app) as server:
        yield server.url + "/v1"
    worker.stop.set()
    thread.join(timeout=30)


def client(url, key=KEY):
    return openai.OpenAI(api_key=key, base_url=url, max_retries=0, timeout=60)


def mp4_frames(data: bytes, tmp_path) -> np.ndarray:
    from worldreel.data.video_io import read_video

    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    frames, fps = read_video(path)
    assert fps == 8
    return frames


def test_create_and_poll_then_download(service, tmp_path):
    api = client(service)
    video = api.videos.create_and_poll(prompt="a red ball falls and bounces on the floor", model="world-tiny",
                                       seconds="1", size="32x32")
    assert video.status == "completed" and video.progress == 100, video.error
    assert (video.object, video.model, video.seconds, video.size) == ("video", "world-tiny", "1", "32x32")
    content = api.videos.download_content(video.id)
    assert mp4_frames(content.read(), tmp_path).shape == (9, 32, 32, 3)
    thumb = api.videos.download_content(video.id, variant="thumbnail").read()
    assert Image.open(io.BytesIO(thumb)).size == (32, 32)
    assert api.videos.retrieve(video.id).model_prompt  # the rewritten prompt is kept as an extra field


def test_errors_map_to_client_exceptions(service):
    api = client(service)
    with pytest.raises(openai.BadRequestError) as bad_size:
        api.videos.create(prompt="a blue box slides left", size="720x1280")
    assert bad_size.value.param == "size" and "16" in bad_size.value.message
    with pytest.raises(openai.BadRequestError) as bad_model:
        api.videos.create(prompt="a blue box slides left", model="sora-2")
    assert bad_model.value.param == "model" and "world-tiny" in bad_model.value.message
    with pytest.raises(openai.NotFoundError):
        api.videos.retrieve("video_does_not_exist")
    with pytest.raises(openai.AuthenticationError):
        client(service, key="not-a-key-at-all-000000").videos.list()


def test_list_remix_extend_edit_delete(service, tmp_path):
    api, other = client(service), client(service, OTHER_KEY)
    picture = io.BytesIO()
    Image.new("RGB", (48, 48), (40, 210, 220)).save(picture, format="PNG")
    first = api.videos.create_and_poll(prompt="a cyan ball rolls right", seconds="1", size="32x32",
                                       input_reference=("start.png", picture.getvalue(), "image/png"))
    assert first.status == "completed", first.error
    frame0 = mp4_frames(api.videos.download_content(first.id).read(), tmp_path)[0]
    assert np.abs(frame0.astype(int) - (40, 210, 220)).mean() < 12  # the image is frame 0 (after H.264)

    remix = api.videos.remix(first.id, prompt="a magenta ball rolls right")
    assert remix.remixed_from_video_id == first.id and remix.seconds == "1"
    by_id = api.videos.extend(prompt="it keeps rolling", seconds="1", video=openai.omit,
                              extra_body={"video": {"id": first.id}})
    source_mp4 = api.videos.download_content(first.id).read()
    by_file = api.videos.extend(prompt="it keeps rolling", seconds="1", video=("clip.mp4", source_mp4, "video/mp4"))
    edit = api.videos.edit(prompt="a white ball rolls right", video=("clip.mp4", source_mp4, "video/mp4"))
    for job, seconds, frames in ((remix, "1", 9), (by_id, "2", 17), (by_file, "2", 17), (edit, "1", 9)):
        done = api.videos.poll(job.id)
        assert done.status == "completed" and done.seconds == seconds, done.error
        clip = mp4_frames(api.videos.download_content(job.id).read(), tmp_path)
        assert clip.shape == (frames, 32, 32, 3)
    extended = mp4_frames(api.videos.download_content(by_id.id).read(), tmp_path)
    source = mp4_frames(source_mp4, tmp_path)
    assert np.abs(extended[:9].astype(int) - source.astype(int)).mean() < 6  # the source is kept, then continued

    mine = [v.id for v in api.videos.list(limit=2)]  # auto-pagination follows last_id / has_more
    assert set(mine) >= {first.id, remix.id, by_id.id, by_file.id, edit.id} and len(mine) == len(set(mine))
    assert [v.id for v in other.videos.list()] == []
    with pytest.raises(openai.NotFoundError):
        other.videos.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        other.videos.delete(first.id)

    deleted = api.videos.delete(first.id)
    assert deleted.deleted and deleted.id == first.id and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        api.videos.download_content(first.id)
