"""worldreel.atomic: whole files or none, in the umask's mode."""
import os

import pytest

from worldreel.atomic import BadLine, atomic_path, read_jsonl, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target, ".json") as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("durable", [False, True])
def test_new_files_get_the_umask_mode_and_their_folder(tmp_path, durable):
    old = os.umask(0o027)
    try:
        path = write_text(tmp_path / "deep" / "x.txt", "hello", durable=durable)
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert (path.stat().st_mode & 0o777) == 0o640


def test_read_jsonl_numbers_lines_skips_blanks_and_names_a_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2, 3]\n{"cut": \n"text"\n')
    with pytest.raises(BadLine) as err:
        read_jsonl(path)
    assert err.value.number == 5 and "rows.jsonl line 5" in str(err.value)
    assert isinstance(err.value, ValueError)
    skipped = []
    rows = read_jsonl(path, bad=lambda number, reason: skipped.append(number))
    assert rows == [(1, {"a": 1}), (4, [2, 3]), (6, "text")]
    assert skipped == [5]
    assert read_jsonl(write_text(tmp_path / "empty.jsonl", "\n")) == []
