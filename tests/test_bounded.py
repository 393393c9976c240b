"""coursekit.grader.bounded: what a kernel writes is read back bounded, and planted files are never followed."""
import io
import json
import os
import resource
import struct
import zipfile

import numpy as np
import pytest

from coursekit.grader.bounded import OutputError, load_json, load_npz, new_dir, read_regular, save_npz, write_json


def _bomb(path, nbytes):
    """A valid-looking .npz whose one float64 array of ``nbytes`` zeros deflates ~200:1 or more."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (nbytes // 8,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, zf.open("y.npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        chunk = bytes(2**22)
        for _ in range(nbytes // len(chunk)):
            f.write(chunk)


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path):
    path = tmp_path / "out0.npz"
    _bomb(path, 2**28)  # 256 MiB of zeros in about 1 MB
    assert path.stat().st_size < 2 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(OutputError, match="unpacks to more than"):
        load_npz(path, max_array_bytes=2**26)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: grew < 64 MiB


def test_an_array_header_larger_than_its_declared_member_is_refused(tmp_path):
    path = tmp_path / "out0.npz"
    np.savez(path, y=np.arange(1000.0))
    data = bytearray(path.read_bytes())
    cd = data.rfind(b"PK\x01\x02")  # the central directory entry: uncompressed size at offset 24
    struct.pack_into("<I", data, cd + 24, 300)
    path.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="'y'"):  # too large for its member, or a corrupt member
        load_npz(path)


def test_npz_member_count_names_and_objects_are_checked(tmp_path):
    many = tmp_path / "many.npz"
    np.savez(many, **{f"a{i}": np.zeros(1) for i in range(20)})
    with pytest.raises(OutputError, match="holds 20 arrays"):
        load_npz(many, max_members=10)
    assert set(load_npz(many)) == {f"a{i}" for i in range(20)}
    odd = tmp_path / "odd.npz"
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("payload.pkl", b"x")
    with pytest.raises(OutputError, match="distinct .npy members"):
        load_npz(odd)
    obj = tmp_path / "obj.npz"
    np.savez(obj, y=np.array([{"a": 1}], dtype=object))
    with pytest.raises(OutputError, match="Python objects"):
        load_npz(obj)
    notzip = tmp_path / "notzip.npz"
    notzip.write_bytes(b"hello")
    with pytest.raises(OutputError, match="not an .npz"):
        load_npz(notzip)
    good = tmp_path / "good.npz"
    np.savez(good, y=np.eye(3), z=np.arange(4, dtype=np.int32))
    out = load_npz(good)
    assert np.array_equal(out["y"], np.eye(3)) and out["z"].dtype == np.int32


def test_symlinks_fifos_and_devices_are_not_read(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"ok": False, "error": "TOPSECRET"}))
    link = tmp_path / "res0.json"
    link.symlink_to(secret)
    with pytest.raises(OutputError, match="not a regular file") as e:
        load_json(link)
    assert "TOPSECRET" not in str(e.value)
    zero = tmp_path / "out0.npz"
    zero.symlink_to("/dev/zero")
    with pytest.raises(OutputError, match="not a regular file"):
        load_npz(zero)
    fifo = tmp_path / "res1.json"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):  # O_NONBLOCK: no hang waiting for a writer
        read_regular(fifo, 100)
    with pytest.raises(OutputError, match="was not written"):
        read_regular(tmp_path / "missing.json", 100)


def test_json_size_and_depth_are_bounded(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(OutputError, match="nested too deeply"):
        load_json(deep)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"ok": True, "pad": "x" * 2_000_000}))
    with pytest.raises(OutputError, match="too large"):
        load_json(big)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"ok": tru')
    with pytest.raises(OutputError, match="not valid JSON"):
        load_json(bad)
    assert load_json(_write(tmp_path / "ok.json", '{"ok": true}')) == {"ok": True}


def _write(path, text):
    path.write_text(text)
    return path


def test_writes_never_follow_or_overwrite_what_the_kernel_planted(tmp_path):
    d = new_dir(tmp_path, "batch_norm_train")
    assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700 and d.name.startswith("batch_norm_train-")
    assert new_dir(tmp_path, "batch_norm_train") != d  # a pre-created name is never reused
    target = tmp_path / "trusted.txt"
    target.write_text("trusted")
    (d / "cases.json").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_json(d / "cases.json", [1])
    (d / "in0.npz").write_bytes(b"planted")
    with pytest.raises(FileExistsError):
        save_npz(d / "in0.npz", {"x": np.zeros(2)})
    assert target.read_text() == "trusted" and (d / "in0.npz").read_bytes() == b"planted"
    save_npz(d / "in1.npz", {"x": np.ones(2)})
    write_json(d / "cases2.json", [{"a": 1}])
    assert np.array_equal(load_npz(d / "in1.npz")["x"], np.ones(2)) and load_json(d / "cases2.json") == [{"a": 1}]
