"""What a column is, from its name and from its values.

Names are normalised first (accents dropped, camelCase split, lower case,
non-alphanumerics to ``_``) and split into tokens, so ``Patient ID``,
``patientId``, ``id_patient`` and ``N° patient`` all read the same.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import pandas as pd

# ----------------------------------------------------------------- names

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalise(name: object) -> str:
    s = "" if name is None else str(name)
    s = s.replace("%", " pct ").replace("°", "o ").replace("#", " n ")
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    s = _CAMEL.sub("_", s).lower()
    return re.sub(r"[^a-z0-9]+", "_", s).strip("_")


def tokens(name: object) -> list[str]:
    return [t for t in normalise(name).split("_") if t]


ENTITY = {
    "patient", "person", "personne", "subject", "sujet", "individual", "individu",
    "participant", "pat", "member", "beneficiary", "beneficiaire", "client", "user",
    "stay", "sejour", "encounter", "visit", "admission", "episode", "record", "case",
    "enfant", "child", "mother", "mere", "donor", "donneur", "resident", "usager",
}
ENTITY_PLURAL = {
    "patients", "persons", "people", "personnes", "subjects", "sujets", "individuals",
    "individus", "participants", "members", "beneficiaries", "beneficiaires", "clients",
    "users", "stays", "sejours", "encounters", "visits", "admissions", "episodes",
    "records", "cases", "deaths", "deces", "events", "evenements", "obs", "nobs",
    "observations", "children", "enfants", "births", "naissances", "residents", "usagers",
    "hospitalisations", "hospitalizations", "consultations", "passages", "donors",
}
ID_TOKENS = {"id", "ident", "identifier", "identifiant", "num", "numero", "no", "nr",
             "key", "hash", "code", "pseudo", "pseudonym", "pid", "uid", "token"}
STRONG_ID_NAMES = {
    "ipp", "nda", "nir", "nss", "ins", "mrn", "ssn", "nhs_number", "nhs_no", "nhsnumber",
    "patid", "personid", "patientid", "subjid", "subjectid", "usubjid", "pseudo_id",
    "pseudonym", "pseudonyme", "uuid", "guid", "numero_secu", "num_secu", "no_secu",
    "numero_securite_sociale", "social_security", "social_security_number", "matricule_ins",
    "first_name", "last_name", "firstname", "lastname", "surname", "given_name", "full_name",
    "nom", "prenom", "nom_naissance", "nom_usage", "patient_name", "email", "e_mail", "mail",
    "courriel", "phone", "telephone", "tel", "mobile", "address", "adresse", "street", "rue",
    "ipp_patient", "num_ipp", "num_nda", "nda_sejour", "person_source_value", "eid",
}
WEAK_ID_NAMES = {"id", "identifier", "identifiant", "key", "hash", "code_patient", "index", "ref"}

COUNT_FIRST = {"n", "nb", "nbr", "count", "cnt", "number", "nombre", "effectif", "effectifs",
               "freq", "frequency", "frequence", "num"}
COUNT_LAST = {"n", "nb", "count", "counts", "cnt", "freq", "frequency", "effectif",
              "effectifs", "cases"}
COUNT_ONLY = {"size", "weight_n", "denominator", "denominateur", "numerator", "numerateur",
              "tot"}

STAT_TOKENS = {
    "mean", "avg", "average", "moyenne", "moy", "median", "mediane", "med", "sd", "std",
    "stdev", "stddev", "ecart", "variance", "var", "pct", "percent", "percentage",
    "pourcentage", "pourcent", "prop", "proportion", "rate", "taux", "ratio", "share",
    "iqr", "q1", "q3", "quartile", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99",
    "min", "max", "minimum", "maximum", "se", "sem", "lower", "upper", "lci", "uci",
    "prevalence", "incidence", "risk", "risque", "odds", "per", "pour",
}
REGRESSION_COEF = {"coef", "coefficient", "coefficients", "estimate", "estimates", "beta", "b",
                   "hr", "hazard", "or", "irr"}
REGRESSION_ERR = {"std_err", "stderr", "se", "std_error", "standard_error", "p", "pvalue",
                  "p_value", "p_t", "p_z", "pr_t", "pr_z", "t", "z", "t_value", "z_value",
                  "0_025", "0_975", "conf_low", "conf_high", "ci_lower", "ci_upper",
                  "statistic", "t_stat", "z_stat", "wald", "chi2", "chisq"}
DF_NAMES = {"df_resid", "df_residuals", "residual_df", "resid_df", "df_residual",
            "residual_degrees_of_freedom", "ddl_residuels", "ddl", "df_res"}
NOBS_NAMES = {"nobs", "n_obs", "no_observations", "observations", "n_observations",
              "number_of_observations"}
DFMODEL_NAMES = {"df_model", "model_df"}

TOTAL_WORDS = {"total", "totals", "all", "ensemble", "tous", "toutes", "overall", "sum",
               "somme", "grand_total", "tout", "margin", "marge", "all_all"}
LABEL_HINTS = {"year", "annee", "an", "month", "mois", "week", "semaine", "day", "jour",
               "date", "age", "agegrp", "age_group", "classe", "class", "group", "groupe",
               "code", "region", "departement", "dept", "site", "hospital", "hopital",
               "category", "categorie", "level", "niveau", "period", "periode", "quarter",
               "trimestre", "cim", "icd", "ccam", "ghm", "label", "libelle", "variable",
               "modalite", "strata", "strate", "stratum"}

BIRTH_TOKENS = {"dob", "ddn", "birth", "birthdate", "birthday", "naissance", "naiss",
                "date_naissance", "datenaissance", "dt_naiss", "dnais", "yob"}
SEX_NAMES = {"sex", "sexe", "gender", "genre", "sex_code", "code_sexe"}
POSTCODE_TOKENS = {"postcode", "postal", "zip", "zipcode", "cp", "codepostal", "commune",
                   "iris", "lsoa", "msoa", "postcode_district", "code_commune", "insee_commune",
                   "code_geo", "geocode", "address_zip"}


def is_total_label(value: object) -> bool:
    return normalise(value) in TOTAL_WORDS


def name_kind(name: object) -> str | None:
    """Classify a column name: identifier, weak-id, birth, sex, postcode, count,
    stat, df, nobs, dfmodel, total, label, or ``None``."""
    norm = normalise(name)
    toks = norm.split("_") if norm else []
    if not toks:
        return None
    if norm in STRONG_ID_NAMES:
        return "identifier"
    if any(t in ENTITY for t in toks) and any(t in ID_TOKENS for t in toks):
        return "identifier"
    if norm in DF_NAMES:
        return "df"
    if norm in NOBS_NAMES:
        return "nobs"
    if norm in DFMODEL_NAMES:
        return "dfmodel"
    if norm in BIRTH_TOKENS or any(t in BIRTH_TOKENS for t in toks):
        return "birth"
    if norm in SEX_NAMES:
        return "sex"
    if norm in POSTCODE_TOKENS or any(t in POSTCODE_TOKENS for t in toks) or norm == "code_postal":
        return "postcode"
    if norm in WEAK_ID_NAMES or (toks[-1] in {"id", "uuid", "guid", "hash"}):
        return "weak-id"
    if norm in TOTAL_WORDS:
        return "total"
    if any(t in STAT_TOKENS for t in toks):
        return "stat"
    if (toks[0] in COUNT_FIRST or toks[-1] in COUNT_LAST or norm in COUNT_ONLY
            or all(t in ENTITY_PLURAL or t in {"of", "de", "des", "nb", "n"} for t in toks)):
        return "count"
    if norm in LABEL_HINTS or toks[0] in LABEL_HINTS or toks[-1] in LABEL_HINTS:
        return "label"
    return None


def regression_role(name: object) -> str | None:
    """``coef`` or ``err`` for regression-table columns (statsmodels, R, Stata headers)."""
    raw = str(name).strip().lower()
    if raw.startswith("p>|") or raw.startswith("pr(>") or raw in {"[0.025", "0.975]"}:
        return "err"
    norm = normalise(name)
    if norm in REGRESSION_COEF:
        return "coef"
    if norm in REGRESSION_ERR:
        return "err"
    return None


# ----------------------------------------------------------------- values

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
HASH_RE = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{56}|[0-9a-f]{64}|[0-9a-f]{128})$", re.I)
NIR_RE = re.compile(r"^[1-478]\d{2}(?:0[1-9]|1[0-2]|[2-9]\d)(?:\d{2}|2[ab])\d{6}(?:\d{2})?$", re.I)
EMAIL_RE = re.compile(r"^[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}$", re.I)
HOSPNUM_RE = re.compile(r"^(?:[a-z]{1,4}[-_]?\d{5,}|\d{7,12})$", re.I)

#: patterns searched inside free text (word-bounded)
TEXT_PATTERNS: dict[str, re.Pattern[str]] = {
    "NIR": re.compile(r"(?<![\d.,])[1-478] ?\d{2} ?(?:0[1-9]|1[0-2]) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3}(?: ?\d{2})?(?![\d.,])"),
    "UUID": re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
    "hash": re.compile(r"\b[0-9a-f]{32,64}\b"),
    "e-mail": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}\b"),
}

SEX_VALUES = {"m", "f", "h", "male", "female", "homme", "femme", "masculin", "feminin", "man",
              "woman", "men", "women"}
DATE_RE = re.compile(
    r"^(?:\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}|\d{4}/\d{2}/\d{2}|\d{2}\.\d{2}\.\d{4})"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")
UK_POSTCODE_RE = re.compile(r"^[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}$", re.I)


def _as_strings(values: Iterable[object]) -> list[str]:
    out = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, float):
            if v != v:  # NaN
                continue
            if v.is_integer():
                v = int(v)
        s = str(v).strip()
        if s:
            out.append(s)
    return out


def value_identifier_kind(values: Iterable[object], *, min_share: float = 0.5,
                          hospital_numbers: bool = True) -> str | None:
    """Name the identifier pattern most values follow (``NIR``, ``UUID``, ``hash``,
    ``e-mail``, ``hospital number``), or ``None``."""
    vals = _as_strings(values)
    if not vals:
        return None
    n = len(vals)
    for label, rx in (("UUID", UUID_RE), ("hash", HASH_RE), ("e-mail", EMAIL_RE)):
        hits = sum(1 for v in vals if rx.match(v))
        if hits >= max(1, min_share * n):
            return label
    compact = [v.replace(" ", "") for v in vals]
    hits = sum(1 for v in compact if NIR_RE.match(v))
    if hits >= max(1, min_share * n):
        return "NIR"
    # fixed-width or prefixed hospital numbers (IPP/NDA): need many distinct values
    if n >= 5 and hospital_numbers:
        matched = [v for v in compact if HOSPNUM_RE.match(v)]
        if len(matched) >= 0.9 * n and len(set(matched)) >= 0.9 * len(matched):
            widths = {len(v) for v in matched}
            prefixed = any(not v[0].isdigit() for v in matched)
            leading_zero = any(v.startswith("0") for v in matched)
            if len(widths) == 1 or prefixed or leading_zero:
                return "hospital number"
    return None


def values_kind(series: pd.Series) -> str | None:
    """``date``, ``sex`` or ``postcode`` when (nearly) all values have that shape."""
    vals = _as_strings(series.head(2000).tolist())
    if len(vals) < 2:
        return None
    n = len(vals)
    if sum(1 for v in vals if DATE_RE.match(v)) >= 0.9 * n:
        return "date"
    if all(v.lower() in SEX_VALUES for v in vals):
        return "sex"
    if sum(1 for v in vals if UK_POSTCODE_RE.match(v)) >= 0.9 * n:
        return "postcode"
    return None


def is_datetime_series(series: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(series.dtype)


def text_identifiers(text: str) -> dict[str, int]:
    """Count identifier-shaped strings in free text, by pattern."""
    out: dict[str, int] = {}
    for label, rx in TEXT_PATTERNS.items():
        if label == "e-mail" and "@" not in text or label == "UUID" and "-" not in text:
            continue
        if label == "hash":
            n = sum(1 for m in rx.finditer(text) if len(m.group()) in (32, 40, 64))
        else:
            n = sum(1 for _ in rx.finditer(text))
        if n:
            out[label] = n
    return out


_DF_TEXT = [
    re.compile(r"Df Residuals:\s*(\d+)"),
    re.compile(r"on (\d+) degrees of freedom"),
    re.compile(r"Residual DF\s*[:=]?\s*(\d+)", re.I),
    re.compile(r"df_resid\s*[:=]\s*(\d+)"),
]


def text_residual_df(text: str) -> list[int]:
    """Residual degrees of freedom quoted in regression printouts (statsmodels, R)."""
    out = []
    for rx in _DF_TEXT:
        out.extend(int(m.group(1)) for m in rx.finditer(text))
    return out
