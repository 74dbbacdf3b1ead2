"""The OpenAPI document is the contract of ``genrec serve``: every limit the server enforces is declared in
it (from the same settings), and a bounded, deterministic Schemathesis run against a live server on loopback
finds no failure of any check: responses conform to the schema (status codes, content types, bodies,
headers), schema-invalid requests are refused with a 4xx, schema-valid ones are accepted, never a 5xx but
the 503 of admission control. One check is narrowed, with its reason where it is."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import hypothesis.configuration
import pytest
import schemathesis
import schemathesis.engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events as engine_events
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from genrec.serve import ServerThread, ServeSettings, create_app
from genrec.serve.schemas import INT64_MAX, SID_PATTERN

KEY_ENV, KEY = "GENREC_SERVE_SCHEMA_KEY", "schema-key-9d41"
AUTH = {"Authorization": f"Bearer {KEY}"}
SETTINGS = dict(max_history=50, max_k=40, max_body_bytes=8192, log_level="error", api_key_env=KEY_ENV)
# Bounded and reproducible: a fixed number of examples per operation and phase, derandomized, no example
# database written to disk.
CONFIG = f"""
headers = {{ Authorization = "Bearer {KEY}" }}

[generation]
mode = "all"
max-examples = 25
deterministic = true
database = "none"

[checks]
positive_data_acceptance.enabled = false  # replaced by accepts_valid_data_but_unknown_catalog_ids below
not_a_server_error.enabled = false  # replaced by no_server_error_but_admission_control below
"""
# Schema-valid requests naming what this catalog does not hold (history ids no product has, a retailer the
# index lacks) are refused with 422 unknown_items / unknown_retailer: what exists is data, not shape, and
# changes with every reload, so no schema can declare it. Schemathesis's positive_data_acceptance would
# count those as "schema-valid request rejected"; it runs here with exactly those two refusals allowed.
CATALOG_REFUSALS = {"unknown_items", "unknown_retailer"}
# JSON Schema's "integer" holds 3.0 (the same value as 3), which the server refuses on purpose (strict
# requests): an item id written as a float has lost its digits past 2**53, so a float where an id or k
# belongs is a client bug to report, not a number to guess. Those refusals are allowed too, and only those.
FLOAT_REFUSAL = "Input should be a valid integer"


def _has_float(value) -> bool:
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return isinstance(value, float)


# The one 5xx the server means to send is admission control's 503: a retrieval that cannot be answered
# within its deadline (Schemathesis sends X-Request-Timeout-Ms: 1, and no decode takes under a millisecond)
# or does not fit in the queue, always with Retry-After. not_a_server_error runs with exactly that allowed.
ADMISSION_REFUSALS = {"queue_full", "deadline_unreachable", "deadline_exceeded"}


@schemathesis.check
def accepts_valid_data_but_unknown_catalog_ids(ctx, response, case):
    if response.status_code == 422:
        error = response.json()
        if error.get("error") in CATALOG_REFUSALS:
            return True
        if _has_float(case.body) and error.get("details") and \
                all(d["msg"] == FLOAT_REFUSAL for d in error["details"]):
            return True
    return positive_data_acceptance(ctx, response, case)


@schemathesis.check
def no_server_error_but_admission_control(ctx, response, case):
    if response.status_code == 503 and response.json().get("error") in ADMISSION_REFUSALS \
            and int(response.headers["retry-after"][0]) >= 1:
        return True
    return not_a_server_error(ctx, response, case)


@pytest.fixture(scope="module")
def served(tiny_run):
    """The tiny run served with an API key and small limits (reloads off, the default)."""
    os.environ[KEY_ENV] = KEY
    try:
        with ServerThread(create_app(tiny_run[0] / "run", ServeSettings(**SETTINGS))) as srv:
            yield srv
    finally:
        os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def openapi(served) -> dict:
    return httpx.get(served.url + "/openapi.json", headers=AUTH, timeout=30).json()


def _failures(events) -> tuple[list[str], int]:
    """Every failed check and engine error of a Schemathesis run, and how many checks passed."""
    failed, passed = [], 0
    for event in events:
        if isinstance(event, (engine_events.FatalError, engine_events.NonFatalError)):
            failed.append(f"engine error: {getattr(event, 'exception', None) or event.value!r}")
        recorder = getattr(event, "recorder", None)
        if recorder is None:
            continue
        for case_id, checks in recorder.checks.items():
            for check in checks:
                if check.failure_info is not None:
                    case = recorder.cases[case_id].value
                    interaction = recorder.interactions.get(case_id)
                    got = "" if interaction is None or interaction.response is None else \
                        f" [{interaction.response.status_code} {interaction.response.content[:200]!r}]"
                    failed.append(f"{check.name}: {case.method} {case.formatted_path} -> "
                                  f"{check.failure_info.failure.title}: {check.failure_info.failure.message}{got}")
                else:
                    passed += 1
    return failed, passed


def test_the_server_keeps_its_published_contract(served, tmp_path):
    hypothesis.configuration.set_hypothesis_home_dir(tmp_path / ".hypothesis")  # its caches: not the work tree
    try:
        schema = schemathesis.openapi.from_url(served.url + "/openapi.json", headers=AUTH,
                                               config=SchemathesisConfig.from_str(CONFIG))
        failed, passed = _failures(schemathesis.engine.from_schema(schema).execute())
    finally:
        hypothesis.configuration.set_hypothesis_home_dir(None)
    assert not failed, "\n".join(sorted(set(failed))[:30])
    assert passed > 500, passed  # it did run


def test_every_enforced_limit_is_declared(openapi):
    components = openapi["components"]["schemas"]
    body = components["RetrieveRequest"]
    assert body["additionalProperties"] is False and set(body["required"]) == {"history", "k"}
    props = body["properties"]
    assert (props["k"]["minimum"], props["k"]["maximum"]) == (1, SETTINGS["max_k"])
    assert props["history"]["maxItems"] == SETTINGS["max_history"]
    item = props["history"]["items"]
    assert item == {"type": "integer", "format": "int64", "minimum": -INT64_MAX - 1, "maximum": INT64_MAX}
    retailer = props["retailer_id"]["anyOf"][0]
    assert (retailer["format"], retailer["minimum"], retailer["maximum"]) == ("int32", -(2**31), 2**31 - 1)
    paths = openapi["paths"]
    (sid,) = [p for p in paths["/v1/sids/{sid}"]["get"]["parameters"] if p["name"] == "sid"]
    assert sid["schema"]["pattern"] == SID_PATTERN
    (item_id,) = paths["/v1/items/{item_id}"]["get"]["parameters"]
    assert item_id["schema"]["maximum"] == INT64_MAX
    (timeout,) = paths["/v1/retrieve"]["post"]["parameters"]
    assert timeout["in"] == "header" and timeout["schema"]["minimum"] == 1
    assert "pattern" in components["ReloadRequest"]["properties"]["run"]["anyOf"][0]
    retrieve = paths["/v1/retrieve"]["post"]["responses"]
    assert set(retrieve) == {"200", "400", "401", "413", "415", "422", "500", "503"}
    assert retrieve["503"]["headers"]["Retry-After"]["required"] is True
    assert paths["/admin/reload"]["post"]["responses"].keys() >= {"401", "403", "422"}
    for path, operations in paths.items():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):  # every error status with its JSON body
                    schema_ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert schema_ref.rsplit("/", 1)[1] in {"ErrorResponse", "ReadyResponse"}, (path, status)
            guarded = path not in {"/healthz", "/readyz"}
            assert (operation.get("security") == [{"bearer": []}]) == guarded, path
    assert openapi["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


def test_limits_follow_the_settings(tiny_run):
    """Other settings, another contract: the schema is generated from them, so it cannot drift."""
    app = create_app(tiny_run[0] / "run", ServeSettings(max_k=7, max_history=3, log_level="error"))
    body = app.openapi()["components"]["schemas"]["RetrieveRequest"]["properties"]
    assert body["k"]["maximum"] == 7 and body["history"]["maxItems"] == 3
    assert "security" not in app.openapi()["paths"]["/v1/retrieve"]["post"]  # no key, none declared


def test_reload_runs_root_is_in_the_settings_not_the_schema(tmp_path: Path):
    """The schema says which run names are well formed; which exist is the server's to say (403/422)."""
    from genrec.serve.schemas import RUN_PATTERN, ReloadRequest

    for ok in ("v2", "runs/beauty-2", "a.b_c"):
        assert ReloadRequest(run=ok).run == ok
    for bad in ("..", "../x", "a/../b", "/etc", ".hidden", "a//b", ""):
        with pytest.raises(ValueError):
            ReloadRequest(run=bad)
    assert RUN_PATTERN.startswith("^")
