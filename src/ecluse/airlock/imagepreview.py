"""Image previews for output checkers: decoded and re-encoded, metadata stripped.

Runs where previews are rendered — at check time, in the one-shot check
sandbox (:mod:`.checkjob`) — never in the service process. The researcher's
image is decoded by Pillow (first frame, at most :data:`MAX_PIXELS` pixels,
no truncated image accepted), its pixels are copied into a new image that
carries nothing else, scaled down to :data:`MAX_SIDE` pixels and written
again as PNG (or JPEG when the PNG would be too large). What the original
carried beside its pixels — EXIF (GPS position, camera, dates), PNG text
chunks, ICC profiles, XMP, comments — is not in the preview; the preview is
decoded once more to make sure (fail closed).

An image that cannot be decoded gets no preview and a ``reader-error``
finding (its verdict is never ``pass``).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

#: suffixes previewed as raster images (SVG is text: never rendered here)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
#: decoders accepted (Pillow format names); anything else is not decoded
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
#: a decompression bomb is refused rather than decoded
MAX_PIXELS = 40_000_000
#: the longest side of a preview, in pixels
MAX_SIDE = 1200
#: the largest encoded preview kept (it is stored, and crosses the sandbox's pipe)
MAX_BYTES = 300 * 1024
#: metadata keys that must not survive in a preview (checked after encoding)
_CARRIERS = ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment", "dpi_text")


class ImagePreviewError(ValueError):
    """The image cannot be previewed (the message says why; no content)."""


def is_image(name: str, fmt: str = "") -> bool:
    return fmt == "image" and not name.lower().endswith(".svg") or \
        name.lower().endswith(IMAGE_SUFFIXES)


def _decode(path: Path) -> Any:
    from PIL import Image, ImageOps  # deferred: only when an image is previewed

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            if im.format not in FORMATS:
                raise ImagePreviewError(f"{im.format or 'unknown'} images are not previewed")
            if im.width * im.height > MAX_PIXELS:
                raise ImagePreviewError(f"{im.width}×{im.height} pixels: too large to preview")
            im.seek(0)
            im.load()  # decode every pixel now: a truncated or corrupt image fails here
            # the orientation the camera recorded, applied to the pixels, then dropped
            im = ImageOps.exif_transpose(im) or im
            mode = "RGBA" if im.mode in ("RGBA", "LA", "PA") or (
                im.mode == "P" and "transparency" in im.info) else "RGB"
            im = im.convert(mode)
            # a new image from the pixels alone: no info, no EXIF, no profile, no text
            return Image.frombytes(mode, im.size, im.tobytes())
    except ImagePreviewError:
        raise
    except Image.DecompressionBombError as e:
        raise ImagePreviewError("too many pixels to preview") from e
    except Exception as e:  # noqa: BLE001 - any decoder error: no preview
        raise ImagePreviewError(f"the image could not be decoded ({type(e).__name__})") from e


def _encode(im: Any) -> tuple[str, bytes]:
    out = io.BytesIO()
    im.save(out, format="PNG", optimize=True)
    if out.tell() <= MAX_BYTES:
        return "image/png", out.getvalue()
    rgb = im.convert("RGB") if im.mode != "RGB" else im
    for quality, side in ((85, MAX_SIDE), (75, 800), (60, 480)):
        if max(rgb.size) > side:
            rgb = rgb.copy()
            rgb.thumbnail((side, side))
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=quality)
        if out.tell() <= MAX_BYTES:
            return "image/jpeg", out.getvalue()
    raise ImagePreviewError("the preview would be too large")


def _verify_clean(data: bytes) -> None:
    """The encoded preview carries pixels only (fail closed if not)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if any(k in im.info for k in _CARRIERS) or getattr(im, "text", None):
            raise ImagePreviewError("the preview kept metadata")
        if im.getexif():
            raise ImagePreviewError("the preview kept EXIF data")


def image_preview(path: Path) -> dict[str, Any]:
    """``{"kind": "image", "mime", "data" (base64), "width", "height", "original"}``
    (raises :class:`ImagePreviewError`)."""
    im = _decode(Path(path))
    original = list(im.size)
    if max(im.size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE))
    mime, data = _encode(im)
    _verify_clean(data)
    return {"kind": "image", "mime": mime, "data": base64.b64encode(data).decode("ascii"),
            "width": im.size[0], "height": im.size[1], "original": original,
            "note": "re-encoded for review; metadata (EXIF, text chunks, colour profile) "
                    "removed"}
