"""Image previews: re-encoded at check time, with nothing but their pixels.

The researcher's image may carry more than it shows — a PNG text chunk, EXIF
(GPS position, camera owner), an ICC profile. The checker's preview must carry
none of it; an image that cannot be decoded gets no preview, a finding, and
never ``pass``.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from ecluse.airlock.checks import inspect_named
from ecluse.airlock.imagepreview import MAX_SIDE, ImagePreviewError, image_preview
from ecluse.sdc import DisclosurePolicy

SECRET = "carrier-7f3a9e"


def png_with_text(path: Path) -> Path:
    im = Image.new("RGB", (64, 48), (30, 120, 200))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", SECRET)
    info.add_itxt("Description", SECRET + " itxt")
    im.save(path, format="PNG", pnginfo=info, icc_profile=b"fake-icc-" + SECRET.encode())
    raw = path.read_bytes()
    assert SECRET.encode() in raw  # the carrier is really there
    return path


def jpeg_with_exif(path: Path) -> Path:
    im = Image.new("RGB", (80, 60), (200, 60, 40))
    exif = Image.Exif()
    exif[0x013B] = SECRET  # Artist
    exif[0x010E] = SECRET + " description"  # ImageDescription
    exif[0x0112] = 1  # Orientation
    im.save(path, format="JPEG", exif=exif.tobytes(), comment=SECRET.encode())
    with Image.open(path) as check:
        assert check.getexif()[0x013B] == SECRET
    return path


def _decoded(preview: dict) -> bytes:
    assert preview["kind"] == "image", preview
    return base64.b64decode(preview["data"])


def _assert_clean(data: bytes) -> None:
    assert SECRET.encode() not in data
    with Image.open(io.BytesIO(data)) as im:
        assert not im.getexif()
        assert "icc_profile" not in im.info and "exif" not in im.info
        assert not getattr(im, "text", {})
        assert "comment" not in im.info


def test_png_text_chunks_and_icc_profile_are_not_in_the_preview(tmp_path):
    out = inspect_named(png_with_text(tmp_path / "plot.png"), "plot.png", DisclosurePolicy())
    data = _decoded(out["preview"])
    _assert_clean(data)
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (64, 48)
        assert im.getpixel((10, 10))[:3] == (30, 120, 200)  # the pixels themselves are kept
    assert out["report"]["verdict"] != "pass"  # an image is looked at by a person


def test_jpeg_exif_and_comment_are_not_in_the_preview(tmp_path):
    out = inspect_named(jpeg_with_exif(tmp_path / "photo.jpg"), "photo.jpg",
                        DisclosurePolicy())
    _assert_clean(_decoded(out["preview"]))
    assert out["report"]["verdict"] != "pass"


def test_exif_orientation_is_applied_then_dropped(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "rot.jpg", format="JPEG", exif=exif.tobytes())
    pv = image_preview(tmp_path / "rot.jpg")
    assert (pv["width"], pv["height"]) == (20, 40)
    _assert_clean(_decoded(pv))


def test_a_large_image_is_scaled_down(tmp_path):
    Image.new("RGB", (MAX_SIDE * 2, MAX_SIDE), (9, 9, 9)).save(tmp_path / "big.png")
    pv = image_preview(tmp_path / "big.png")
    assert max(pv["width"], pv["height"]) == MAX_SIDE
    assert pv["original"] == [MAX_SIDE * 2, MAX_SIDE]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


@pytest.mark.parametrize("name,data", [
    # a PNG signature and header whose pixel data is garbage
    ("broken.png", b"\x89PNG\r\n\x1a\n"
     + _chunk(b"IHDR", struct.pack(">IIBBBBB", 50, 50, 8, 2, 0, 0, 0))
     + _chunk(b"IDAT", b"not zlib at all") + _chunk(b"IEND", b"")),
    # a JPEG cut after its first bytes
    ("cut.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
    # a GIF header and nothing a decoder can use
    ("junk.gif", b"GIF89a\x10\x00\x10\x00\x80\x00\x00" + b"\x00" * 7),
])
def test_a_malformed_image_gets_no_preview_a_finding_and_never_pass(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImagePreviewError):
        image_preview(tmp_path / name)
    out = inspect_named(tmp_path / name, name, DisclosurePolicy())
    assert out["preview"]["kind"] == "none"
    assert "data" not in out["preview"]
    assert out["report"]["verdict"] != "pass"
    rules = [f["rule"] for f in out["report"]["findings"]]
    assert "reader-error" in rules or out["report"]["verdict"] in ("fail", "block"), rules


def test_a_decompression_bomb_is_not_decoded(tmp_path):
    # a PNG header claiming 100000 x 100000 pixels
    bomb = (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b""))
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(ImagePreviewError, match="pixels"):
        image_preview(tmp_path / "bomb.png")
