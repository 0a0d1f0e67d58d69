"""Tokens: every write needs one, plugin administration an admin one, reads are open unless
configured otherwise; tokens are stored hashed, compared in constant time, revocable."""
from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from service import auth, db
from service.models import ApiToken

from .helpers import HOST, experiment, token_for

SAFE = {"get", "head", "options"}


def _operations(app) -> list[tuple[str, str, dict]]:
    """Every (method, path with ids filled in, operation) of the OpenAPI document."""
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    found = []
    for path, item in document["paths"].items():
        concrete = re.sub(r"\{[^}]*name[^}]*\}", "esx", re.sub(r"\{[^}]*id\}", "1", path))
        for method, operation in item.items():
            if method in ("get", "put", "post", "patch", "delete", "head", "options"):
                found.append((method, concrete, operation))
    return found


def test_every_write_without_a_token_is_refused_before_anything_is_read_or_stored(app, anonymous, api, counts):
    api.create("/api/v1/hosts", {"name": "h", "spec": HOST})
    api.create("/api/v1/experiments", experiment(policies=("static",)))
    before = counts()
    writes = [(m, p) for m, p, _ in _operations(app) if m not in SAFE]
    assert len(writes) >= 10
    for method, path in writes:
        # an invalid body too: without a token, nobody learns what validation would say
        response = anonymous.open(path, method=method.upper(), json={"unknown": 1})
        assert response.status_code == 401, (method, path, response.get_data(as_text=True))
        body = response.get_json()
        assert body["code"] == 401 and "Authorization: Bearer" in body["message"]
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="vmemlab"')
    assert counts() == before


@pytest.mark.parametrize("header, reason", [
    ("Bearer vml_" + "x" * 43, "unknown or revoked"),
    ("Bearer not-even-a-vmemlab-token", "unknown or revoked"),
    ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
    ("Bearer ", "must be 'Bearer <token>'"),
])
def test_a_bad_token_is_a_401_that_says_why(anonymous, counts, header, reason):
    before = counts()
    response = anonymous.post("/api/v1/hosts", json={"name": "h", "spec": HOST}, headers={"Authorization": header})
    assert response.status_code == 401 and reason in response.get_json()["message"]
    assert "error=" in response.headers["WWW-Authenticate"]
    assert counts() == before


def test_a_write_token_writes_but_cannot_administer_plugins(app, settings, counts):
    writer = FlaskClient(app)
    writer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token_for(settings.database_url, 'write', 'alice')}"
    assert writer.post("/api/v1/hosts", json={"name": "h", "spec": HOST}).status_code == 201
    assert writer.post("/api/v1/experiments", json=experiment(policies=("static",))).status_code == 201
    before = counts()
    for response in (writer.post("/api/v1/plugins", json={"name": "esx"}),
                     writer.patch("/api/v1/plugins/esx", json={"enabled": False})):
        assert response.status_code == 403
        assert "admin token" in response.get_json()["message"] and "'alice'" in response.get_json()["message"]
    assert counts() == before
    assert app.test_client().patch("/api/v1/plugins/esx", json={"enabled": False}).status_code == 200  # admin


def test_a_revoked_token_is_refused_from_then_on(app, settings):
    client = FlaskClient(app)
    token = token_for(settings.database_url, "write", "leaving")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    assert client.post("/api/v1/hosts", json={"name": "h1", "spec": HOST}).status_code == 201
    with db.session_scope(settings.database_url) as session:
        assert auth.revoke_token(session, "leaving").name == "leaving"
    response = client.post("/api/v1/hosts", json={"name": "h2", "spec": HOST})
    assert response.status_code == 401 and "revoked" in response.get_json()["message"]


def test_reads_are_open_by_default_and_closed_on_request(make_app, settings):
    open_app = make_app()
    assert FlaskClient(open_app).get("/api/v1/runs").status_code == 200
    closed = make_app(open_reads=False)
    anonymous = FlaskClient(closed)
    for path in ("/api/v1/runs", "/api/v1/hosts", "/api/v1/plugins", "/experiments/1/report"):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.get("/api/v1/health").status_code == 200          # monitoring needs no token
    assert anonymous.get("/api/v1/openapi.json").status_code == 200
    assert anonymous.get("/api/v1/nowhere").status_code == 404
    assert closed.test_client().get("/api/v1/runs").status_code == 200   # with a token
    read_ops = [(m, p, op) for m, p, op in _operations(closed) if m == "get" and "/health" not in p]
    assert all(op.get("security") == [{"bearerAuth": []}] and "401" in op["responses"] for _, _, op in read_ops)


def test_the_openapi_document_says_which_token_each_operation_needs(app):
    operations = _operations(app)
    for method, path, operation in operations:
        if method in SAFE:
            assert "security" not in operation, (method, path)
            continue
        assert operation["security"] == [{"bearerAuth": []}], (method, path)
        assert "401" in operation["responses"], (method, path)
        admin = path.startswith("/api/v1/plugins")
        assert operation["x-required-role"] == ("admin" if admin else "write"), (method, path)
        assert ("403" in operation["responses"]) == admin, (method, path)
    scheme = app.test_client().get("/api/v1/openapi.json").get_json()["components"]["securitySchemes"]
    assert scheme["bearerAuth"]["scheme"] == "bearer"


def test_only_a_hash_of_a_token_is_stored(settings):
    token = token_for(settings.database_url, "admin", "root")
    assert re.fullmatch(r"vml_[A-Za-z0-9_-]{43}", token)
    with db.session_scope(settings.database_url) as session:
        row = session.scalar(select(ApiToken).where(ApiToken.name == "root"))
        dump = " ".join(str(v) for r in session.execute(text("SELECT * FROM api_tokens")) for v in r)
    assert token not in dump and token[12:] not in dump
    assert row.sha256 == auth.digest(token) and row.prefix == token[:12] and row.role == "admin"


def test_tokens_are_compared_in_constant_time(settings, monkeypatch):
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    token = token_for(settings.database_url, "write")
    with db.session_scope(settings.database_url) as session:
        principal = auth.authenticate(session, token)
        assert auth.authenticate(session, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert principal is not None and principal.role == "write"
    assert calls == [(auth.digest(token), auth.digest(token))]


def test_token_names_roles_and_revocation_references_are_checked(settings):
    with db.session_scope(settings.database_url) as session:
        with pytest.raises(auth.TokenError, match="name"):
            auth.create_token(session, "  ")
        with pytest.raises(auth.TokenError, match="unknown role 'root'"):
            auth.create_token(session, "x", "root")
        auth.create_token(session, "twin")
        auth.create_token(session, "twin")
        with pytest.raises(auth.TokenError, match="2 tokens match 'twin'"):
            auth.revoke_token(session, "twin")
        with pytest.raises(auth.TokenError, match="no unrevoked token"):
            auth.revoke_token(session, "nobody")
