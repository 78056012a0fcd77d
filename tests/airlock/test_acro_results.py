"""An ACRO results.json sent with the outputs: the reviewer sees ACRO's judgement and
the researcher's exception beside each file (issue 20 item 6)."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

import ecluse.airlock
from ecluse.airlock.web.review import setup_jinja

TEMPLATES = Path(ecluse.airlock.__file__).parent / "templates"


def _results(exception: str) -> bytes:
    def output(uid, status, name, exc=""):
        return {"uid": uid, "status": status, "type": "table", "properties": {},
                "files": [{"name": name, "sdc": {}}], "outcome": {},
                "command": "acro.crosstab(df.sex, df.age_band)",
                "summary": status if status == "pass" else f"{status}; threshold: 1 cells",
                "timestamp": "2026-12-03T10:00:00", "comments": [], "exception": exc}
    return json.dumps({"version": "0.4.8", "results": {
        "output_0": output("output_0", "pass", "counts_safe.csv"),
        "output_1": output("output_1", "fail", "counts_small.csv", exception),
    }}).encode()


def test_acro_results_shown_beside_the_files(service, users, files, create_request_at_status):
    exception = "<b>age band</b> published by the registry"
    req = create_request_at_status("submitted", files=[
        files.ok, files.fail, ("results.json", _results(exception))])
    view = service.get_request(users.carol, req["id"], record_view=False)
    by = {f["name"]: f for f in view["files"]}
    assert [a["status"] for a in by["counts_safe.csv"]["acro"]] == ["pass"]
    small = by["counts_small.csv"]["acro"][0]
    assert (small["status"], small["output"], small["exception"]) == ("fail", "output_1",
                                                                      exception)
    # our verdicts are untouched; the results file itself is text a person reads
    assert by["counts_small.csv"]["verdict"] == "fail"
    assert by["counts_safe.csv"]["verdict"] == "pass"
    assert by["results.json"]["verdict"] == "review" and "acro" not in by["results.json"]
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    setup_jinja(env)  # as the service's own environment: gettext, the pages' functions
    html = env.get_template("request.html").render(
        req=view, prefix="/services/airlock/", identity=None, hub_home="/hub/home",
        xsrf_form_html="", static=lambda p: "/static/" + p, flash="")
    assert "ACRO fail" in html and "ACRO pass" in html
    assert "&lt;b&gt;age band&lt;/b&gt; published by the registry" in html  # escaped
    assert "<b>age band</b>" not in html


def test_a_malformed_acro_results_goes_to_review(service, users, files,
                                                  create_request_at_status):
    req = create_request_at_status("submitted", files=[
        files.ok, ("results.json", b'{"version": "1", "results": {"output_0": {}}}')])
    view = service.get_request(users.carol, req["id"], record_view=False)
    by = {f["name"]: f for f in view["files"]}
    res = by["results.json"]
    assert res["verdict"] == "review"
    assert any(f["rule"] == "reader-error" and "not ACRO's results.json" in f["message"]
               for f in res["findings"])
    assert "acro" not in by["counts_safe.csv"]
