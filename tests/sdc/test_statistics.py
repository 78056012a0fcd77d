"""The statistics checkers ask about, read from the ordinary pandas output of each
(issue 20): counts beside means, survival tables, regression tables, minima and
maxima, ``describe()``, JSON of counts, rounding; and the named policy packs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from ecluse.cli import main
from ecluse.config import ConfigError, load_projects
from ecluse.sdc import DisclosurePolicy, check_file, check_paths
from ecluse.sdc.policy import PACKS


def rules(rep):
    return {f.rule for f in rep.findings}


def cells(rep, rule):
    return [f.location for f in rep.findings if f.rule == rule]


@pytest.fixture
def stays():
    rng = np.random.default_rng(20)
    return pd.DataFrame({"region": rng.choice(["N", "S", "E"], 400),
                         "sex": rng.choice(["F", "M"], 400),
                         "age": rng.integers(20, 90, 400), "los": rng.integers(1, 30, 400)})


# ---------------------------------------------------------------- the misjudged shapes


def test_mean_and_count_with_two_header_rows_is_judged_by_its_count(stays, tmp_path):
    p = tmp_path / "agg.csv"
    stays.groupby("region").agg({"age": ["mean", "count"]}).to_csv(p)
    assert p.read_text().splitlines()[1].startswith(",mean,count")  # two header rows
    rep = check_file(p)
    assert rep.verdict == "pass", rep.findings
    # the same shape with a small group: the count fails and so does the mean on it
    small = stays[(stays.region != "E") | (stays.age < 23)]
    small.groupby(["region", "sex"]).agg({"age": ["mean", "count"]}).to_csv(p)
    rep = check_file(p)
    assert rep.verdict == "fail"
    assert {loc["column"] for loc in cells(rep, "small-count")} == {"age / count"}
    assert {loc["column"] for loc in cells(rep, "small-n-statistic")} == {"age / mean"}
    assert all(loc["labels"]["region"] == "E" for loc in cells(rep, "small-count"))


def test_kaplan_meier_zero_at_time_zero_is_structural(tmp_path):
    # R survfit summary, as broom / as.data.frame writes it
    p = tmp_path / "km.csv"
    pd.DataFrame({"time": [0, 30, 60, 90, 180], "n.risk": [150, 140, 120, 100, 80],
                  "n.event": [0, 10, 20, 20, 15], "n.censor": [0, 0, 10, 0, 12],
                  "surv": [1, 0.93, 0.8, 0.67, 0.55]}).to_csv(p, index=False)
    rep = check_file(p)
    assert rep.verdict == "pass", [(f.rule, f.message) for f in rep.findings]
    # zeros of later intervals fail only when the policy says so; the first never does
    strict = DisclosurePolicy(survival_zeros_disclosive=True)
    rep = check_file(p, strict)
    assert {loc["row"] for loc in cells(rep, "zero-count")} == {3, 5}
    # an interval with 3 events, and the estimate on 6 at risk, fail
    pd.DataFrame({"timeline": [0, 30, 60], "removed": [0, 12, 3], "observed": [0, 12, 3],
                  "censored": [0, 0, 0], "entrance": [60, 0, 0], "at_risk": [60, 60, 6],
                  "KM_estimate": [1, 0.8, 0.4]}).to_csv(p, index=False)
    rep = check_file(p)
    assert rules(rep) == {"small-count", "small-n-statistic"}
    assert {(loc["row"], loc["column"]) for loc in cells(rep, "small-count")} == {
        (4, "removed"), (4, "observed"), (4, "at_risk")}
    assert cells(rep, "small-n-statistic")[0]["column"] == "KM_estimate"


def test_regression_table_with_n_obs_column(tmp_path):
    p = tmp_path / "reg.csv"
    reg = pd.DataFrame({"term": ["Intercept", "age", "sexM"], "coef": [1.2, 0.03, -0.2],
                        "std_err": [0.1, 0.01, 0.05], "p_value": [0.001, 0.02, 0.3],
                        "n_obs": [300, 300, 300]})
    reg.to_csv(p, index=False)
    rep = check_file(p)
    assert rep.verdict == "pass" and "statistic-without-n" not in rules(rep)
    reg.assign(n_obs=12).to_csv(p, index=False)  # 12 - 3 = 9 residual df
    rep = check_file(p)
    assert rules(rep) == {"low-residual-df"}


@pytest.mark.parametrize("label", ["No. Observations", "nobs", "df_resid", "Df Residuals"])
def test_regression_sizes_as_rows(tmp_path, label):
    # statsmodels' summary tables exported as rows of label, value
    p = tmp_path / "fit.csv"
    small = 5 if "df" in label.lower() else 8
    pd.DataFrame({"statistic": ["R-squared", label], "value": [0.31, small]}).to_csv(
        p, index=False)
    assert "low-residual-df" in rules(check_file(p))


def test_json_of_counts_per_category(stays, tmp_path):
    p = tmp_path / "counts.json"
    stays.region.value_counts().to_json(p)
    rep = check_file(p)
    assert rep.verdict == "pass", rep.findings
    # nested: {sex: {region: n}}, and the pandas frame form {"count": {...}} of many keys
    p.write_text(json.dumps({"F": {"N": 60, "S": 4}, "M": {"N": 61, "S": 45}}))
    rep = check_file(p)
    assert rules(rep) == {"small-count"}
    frame = pd.DataFrame({"count": {f"I2{k}": 30 + k for k in range(8)}})
    frame.to_json(p)
    rep = check_file(p)
    assert rep.verdict == "pass", rep.findings  # category keys are no identifier column
    p.write_text(json.dumps({"F": {"<50": {"N": 12, "S": 30}, ">=50": {"N": 40, "S": 3}}}))
    rep = check_file(p)
    assert [loc["labels"] for loc in cells(rep, "small-count")] == [
        {"category 1": "F", "category 2": ">=50", "category 3": "S"}]


def test_minima_and_maxima_fail_by_default(stays, tmp_path):
    p = tmp_path / "minmax.csv"
    stays.groupby("region")["age"].agg(["min", "max", "count"]).to_csv(p)
    rep = check_file(p)
    assert rules(rep) == {"min-max"}
    assert {loc["column"] for loc in cells(rep, "min-max")} == {"min", "max"}
    assert check_file(p, DisclosurePolicy(min_max_disclosive=False)).verdict == "pass"
    # the bounds of age bands are labels, not maxima
    pd.DataFrame({"age_min": [0, 20, 40, 60], "age_max": [19, 39, 59, 120],
                  "n": [40, 50, 60, 70]}).to_csv(p, index=False)
    assert check_file(p).verdict == "pass"


def test_describe_of_a_whole_frame(stays, tmp_path):
    p = tmp_path / "describe.csv"
    stays[["age", "los"]].describe().to_csv(p)
    rep = check_file(p)
    assert rules(rep) == {"min-max"}
    assert {loc["row"] for loc in cells(rep, "min-max")} == {5, 9}
    lenient = DisclosurePolicy(min_max_disclosive=False)
    assert check_file(p, lenient).verdict == "pass"
    stays.head(6)[["age", "los"]].describe().to_csv(p)
    rep = check_file(p, lenient)
    assert rules(rep) == {"small-count", "small-n-statistic"}
    assert {loc["column"] for loc in cells(rep, "small-n-statistic")} == {"age", "los"}


def test_medians_and_percentiles_need_their_group_count(stays, tmp_path):
    p = tmp_path / "median.csv"
    g = stays[(stays.region != "S") | (stays.age < 24)].groupby("region")
    g.agg(n=("age", "size"), median_age=("age", "median"),
          p75_los=("los", lambda s: s.quantile(0.75))).to_csv(p)
    rep = check_file(p)
    assert {loc["column"] for loc in cells(rep, "small-n-statistic")} == {"median_age",
                                                                         "p75_los"}
    assert {loc["labels"]["region"] for loc in cells(rep, "small-n-statistic")} == {"S"}


def test_percentage_with_its_numerator_and_denominator(tmp_path):
    p = tmp_path / "pct.csv"
    pd.DataFrame({"region": ["N", "S"], "deaths": [12, 4], "admissions": [300, 250],
                  "pct": [4.0, 1.6]}).to_csv(p, index=False)
    rep = check_file(p)
    assert {loc["column"] for loc in cells(rep, "small-n-statistic")} == {"pct"}
    # the percentage gives the 4 deaths back too
    assert {loc["column"] for loc in cells(rep, "small-count")} == {"deaths", "pct"}


def test_dominance_with_largest_contributors(tmp_path):
    p = tmp_path / "turnover.csv"
    pd.DataFrame({"sector": ["A", "B"], "n": [12, 15], "total": [1000, 1000],
                  "top1": [870, 300], "top2": [60, 200]}).to_csv(p, index=False)
    # ACRO's N-k (n=2, k=0.9): 870 + 60 of 1000
    assert {loc["labels"]["sector"] for loc in cells(check_file(p), "dominance-nk")} == {"A"}
    insee = DisclosurePolicy(pack="insee-business")
    rep = check_file(p, insee)
    assert {loc["labels"]["sector"] for loc in cells(rep, "dominance-nk")} == {"A"}


# ---------------------------------------------------------------- policy packs


def test_packs_set_their_values_and_state_their_boundary():
    assert DisclosurePolicy().pack == "ecluse-default"
    assert DisclosurePolicy(pack="snds").threshold == 11
    os_ = DisclosurePolicy(pack="opensafely")
    assert (os_.threshold, os_.rounding_required, os_.rounding_base) == (8, True, 5)
    ins = DisclosurePolicy(pack="insee-business")
    assert (ins.threshold, ins.dominance_n, ins.dominance_k) == (3, 1, 0.85)
    assert DisclosurePolicy(pack="snds", threshold=12).threshold == 12  # beside the pack
    for name, pack in PACKS.items():
        assert pack.source and pack.boundary, name
    assert DisclosurePolicy(pack="snds").boundary.startswith("a count n fails when 0 < n < 11")


def test_a_project_pack_replaces_the_deployment_pack():
    deployment = DisclosurePolicy(pack="opensafely")
    project = deployment.merged({"pack": "snds"})
    assert (project.pack, project.threshold, project.rounding_required) == ("snds", 11, False)
    back = DisclosurePolicy(pack="insee-business").merged({"pack": "ecluse-default"})
    assert back == DisclosurePolicy()
    # single values beside the deployment's pack keep it
    assert deployment.merged({"threshold": 10}).rounding_required is True


def test_unknown_pack_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown disclosure policy pack 'casd'.*snds"):
        DisclosurePolicy(pack="casd")
    with pytest.raises(ValueError, match="unknown disclosure policy pack"):
        DisclosurePolicy().merged({"pack": "casd"})


def test_a_project_picks_a_pack(tmp_path):
    f = tmp_path / "projects.yaml"
    f.write_text(yaml.safe_dump({"projects": {"cardio-los": {
        "title": "t", "ldap_group": "g", "disclosure": {"pack": "opensafely"}}}}))
    proj = load_projects(f)["cardio-los"]
    pol = DisclosurePolicy().merged(proj.disclosure)
    assert (pol.pack, pol.threshold, pol.rounding_required) == ("opensafely", 8, True)
    f.write_text(yaml.safe_dump({"projects": {"cardio-los": {
        "title": "t", "ldap_group": "g", "disclosure": {"pack": "casd"}}}}))
    with pytest.raises(ConfigError, match="unknown disclosure policy pack 'casd'"):
        load_projects(f)


def test_snds_pack_fails_ten_and_the_report_names_it(tmp_path, capsys):
    p = tmp_path / "t.csv"
    p.write_text("ward,n\nA,40\nB,10\n")
    assert check_file(p).verdict == "pass"
    rep = check_file(p, DisclosurePolicy(pack="snds"))
    assert rep.verdict == "fail" and rep.policy["pack"] == "snds"
    pol = tmp_path / "policy.yaml"
    pol.write_text("pack: snds\n")
    assert main(["check", "--policy", str(pol), str(p)]) == 1
    assert "policy pack: snds" in capsys.readouterr().out


def test_opensafely_pack_wants_rounded_counts_above_seven(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("ward,n\nA,40\nB,15\nC,10\n")
    pol = DisclosurePolicy(pack="opensafely")
    assert check_file(p, pol).verdict == "pass"
    p.write_text("ward,n\nA,40\nB,13\nC,5\n")
    rep = check_file(p, pol)
    assert rules(rep) == {"unrounded-count", "small-count"}
    assert [loc["row"] for loc in cells(rep, "unrounded-count")] == [3]
    assert [loc["row"] for loc in cells(rep, "small-count")] == [4]


def test_dominance_with_contributors_in_a_supporting_file(tmp_path):
    mag = tmp_path / "turnover.csv"
    mag.write_text("sector,n_firms,total\nA,25,1000\nB,30,2000\n")
    con = tmp_path / "turnover_contributors.csv"
    con.write_text("sector,top1,top2\nA,870,40\nB,600,300\n")
    assert check_paths([mag]).verdict == "pass"  # alone, dominance cannot be told
    rep = check_paths([mag, con])
    table = rep.files[0]
    assert table.verdict == "fail"
    found = [f for f in table.findings if f.rule == "dominance-nk"]
    assert [(f.location["row"], f.location["column"], f.location["supporting_file"])
            for f in found] == [(2, "total", str(con))]
    assert "turnover_contributors.csv" in found[0].message
    # INSEE's 85 % rule on the largest contributor alone
    rep = check_paths([mag, con], DisclosurePolicy(pack="insee-business"))
    assert [f.location["labels"] for f in rep.files[0].findings
            if f.rule == "dominance-nk"] == [{"sector": "A"}]


def test_a_percentage_with_its_denominator_gives_its_numerator_back(tmp_path):
    p = tmp_path / "mortality.csv"
    # 1.3 % of 300 is 4 deaths, never published as a count
    pd.DataFrame({"region": ["N", "S"], "admissions": [300, 250],
                  "pct_died": [1.3, 8.0]}).to_csv(p, index=False)
    rep = check_file(p)
    assert [(loc["row"], loc["column"]) for loc in cells(rep, "small-count")] == [
        (2, "pct_died")]
    assert "gives a count of 4" in next(f.message for f in rep.findings
                                         if f.rule == "small-count")
    # a proportion (0-1) the same way; percentiles are not shares
    pd.DataFrame({"region": ["N", "S"], "n": [300, 250], "prop_died": [0.013, 0.08],
                  "25%": [1.0, 2.0]}).to_csv(p, index=False)
    assert [loc["column"] for loc in cells(check_file(p), "small-count")] == ["prop_died"]


def test_dominance_from_stored_sides_matches_the_files_checked_together(tmp_path):
    """The airlock checks files one at a time and matches them later from their reports:
    the sides kept in the reports give the findings the files give together."""
    from ecluse.sdc.contributors import judge_sides, side_of

    mag = tmp_path / "turnover.csv"
    mag.write_text("sector,n_firms,total\nA,25,1000\nB,30,2000\n")
    con = tmp_path / "turnover_contributors.csv"
    con.write_text("sector,top1,top2\nA,870,40\nB,600,300\n")
    together = check_paths([mag, con]).files[0]
    alone = [check_file(mag), check_file(con)]
    sides = [side_of(p, r) for p, r in zip([mag, con], alone, strict=True)]
    assert sides[0]["total"] == "total" and sides[1]["tops"] == {"1": "top1", "2": "top2"}
    sides = json.loads(json.dumps(sides))  # as stored
    judge_sides(list(zip(alone, sides, strict=True)), DisclosurePolicy())
    assert alone[0].verdict == together.verdict == "fail"
    assert [f.to_dict() for f in alone[0].findings] == [f.to_dict() for f in together.findings]
    # a table that is neither keeps no side; nor does a row-level file
    plain = tmp_path / "plain.csv"
    plain.write_text("sex,n\nF,25\nM,31\n")
    assert side_of(plain, check_file(plain)) is None
