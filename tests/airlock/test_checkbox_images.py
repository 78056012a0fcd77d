"""Image previews are rendered in the one-shot check sandbox, not in the service.

The researcher's image is decoded by Pillow inside the sandbox that holds
nothing (:mod:`ecluse.airlock.checkbox`); what comes out is a re-encoded
preview with its pixels only. Real sandboxes: root, like ``test_checkbox``.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from ecluse.airlock.checkbox import CHECK_DIR
from ecluse.sdc import DisclosurePolicy
from tests.airlock import test_checkbox as _box
from tests.airlock.test_imagepreview import SECRET, jpeg_with_exif, png_with_text
from tests.support.sandboxes import LAUNCHED

pytestmark = pytest.mark.timeout(240)

# the check sandbox fixtures of test_checkbox (a deployment, a tracked SandboxChecker)
deployment = _box.deployment
checker = _box.checker


def test_images_are_re_encoded_without_metadata_in_the_check_sandbox(checker, tmp_path):
    chk, tmp = checker
    for name, make in (("figure.png", png_with_text), ("photo.jpg", jpeg_with_exif)):
        data = make(tmp_path / ("src-" + name)).read_bytes()
        out = chk(_box._object(tmp_path, data), name, DisclosurePolicy(), tmp, 200)
        spec = LAUNCHED[-1]["spec"]
        assert [(m.target, m.read_only) for m in spec.extra_mounts] == [(CHECK_DIR, True)]
        assert out["report"]["verdict"] == "review", out["report"]
        preview = out["preview"]
        assert preview["kind"] == "image", preview
        assert SECRET not in json.dumps(out["preview"])
        raw = base64.b64decode(preview["data"])
        assert SECRET.encode() not in raw
        with Image.open(io.BytesIO(raw)) as im:
            assert not im.getexif() and "icc_profile" not in im.info
            assert not getattr(im, "text", {})


def test_a_malformed_image_in_the_check_sandbox_gets_a_finding_and_no_preview(checker,
                                                                             tmp_path):
    chk, tmp = checker
    data = png_with_text(tmp_path / "src.png").read_bytes()[:70]  # cut inside its chunks
    out = chk(_box._object(tmp_path, data), "cut.png", DisclosurePolicy(), tmp, 200)
    assert out["preview"]["kind"] == "none" and "data" not in out["preview"]
    assert out["report"]["verdict"] != "pass"
    assert any(f["rule"] == "reader-error" and "image" in f["message"]
               for f in out["report"]["findings"]), out["report"]["findings"]
