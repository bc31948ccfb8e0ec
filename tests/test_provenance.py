"""C2PA provenance: sign, verify valid / tampered / unsigned, edits with a parent, the CLI commands."""
import json

import numpy as np
import pytest

from worldreel.cli import main
from worldreel.data.video_io import write_video
from worldreel.errors import UserError
from worldreel.eval.watermark_bench import true_clip
from worldreel.safety import provenance as P

GEN = {"mode": "generate", "model": "world-tiny", "weights_digest": "abc", "seed": 3,
       "sampling": {"steps": 20}, "prompt_sha256": "0" * 64, "watermark_payload": 42}


@pytest.fixture
def signed(tmp_path):
    path = tmp_path / "video.mp4"
    write_video(path, true_clip(0)[:9], 8)
    P.sign(path, GEN, folder=tmp_path / "keys")
    return path


def test_valid_and_trusted_with_our_root(signed, tmp_path):
    v = P.verify(signed, folder=tmp_path / "keys")
    assert v.state == "trusted" and v.errors == []
    assert v.action == "c2pa.created" and v.generation == GEN
    # another machine's root does not trust it, but the signature is still valid
    assert P.verify(signed, folder=tmp_path / "elsewhere").state == "valid"


def test_one_flipped_byte_is_invalid(signed, tmp_path):
    data = bytearray(signed.read_bytes())
    data[data.find(b"mdat") + 64] ^= 0x01  # one bit of the video's own bytes
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    v = P.verify(bad, folder=tmp_path / "keys")
    assert v.state == "invalid" and v.errors


def test_unsigned_files(tmp_path):
    path = tmp_path / "plain.mp4"
    write_video(path, true_clip(1)[:5], 8)
    assert P.verify(path, folder=tmp_path / "keys").state == "unsigned"
    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a")
    assert P.verify(gif, folder=tmp_path / "keys").state == "unsigned"
    with pytest.raises(UserError):
        P.verify(tmp_path / "missing.mp4")


def test_edit_names_its_parent(signed, tmp_path):
    child = tmp_path / "child.mp4"
    write_video(child, true_clip(2)[:9], 8)
    P.sign(child, {**GEN, "mode": "edit"}, parent=signed, folder=tmp_path / "keys")
    v = P.verify(child, folder=tmp_path / "keys")
    assert v.state == "trusted" and v.action == "c2pa.edited"


def test_own_certificate_needs_both_parts(tmp_path, signed):
    with pytest.raises(UserError) as err:
        P.sign(signed, GEN, cert=tmp_path / "keys" / P.LEAF_CERT)
    assert err.value.param == "sign_cert"
    # the local chain and key given explicitly work like the default
    out = tmp_path / "again.mp4"
    write_video(out, true_clip(0)[:5], 8)
    P.sign(out, GEN, cert=tmp_path / "keys" / P.LEAF_CERT, key=tmp_path / "keys" / P.LEAF_KEY)
    assert P.verify(out, folder=tmp_path / "keys").state == "trusted"


def test_verify_and_detect_commands(signed, tmp_path, capsys):
    keys = ["--data-dir", str(tmp_path / "keys")]
    assert main(["verify", str(signed), *keys]) == 0
    assert "valid and trusted" in capsys.readouterr().out
    plain = tmp_path / "plain.mp4"
    write_video(plain, true_clip(1)[:5], 8)
    assert main(["verify", str(plain), *keys]) == 1
    assert "unsigned" in capsys.readouterr().out
    assert main(["detect", str(plain), "--json", *keys]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ours"] is False and result["provenance"]["state"] == "unsigned" and 0 < result["p_value"] <= 1
    assert main(["detect", str(tmp_path / "nope.mp4")]) == 2
