"""The gateway's duties: static-token auth (both headers, identity, other tenants'
data), rate limits and quotas; and a restart after SIGKILL losing nothing
acknowledged."""
import signal
import textwrap

import httpx
import numpy as np
import pytest
from chromadb.errors import ChromaError

C = "/api/v2/tenants/{t}/databases/{d}/collections"


@pytest.fixture
def auth_server(tmp_path, make_server):
    cfg = tmp_path / "indigo.toml"
    cfg.write_text(
        textwrap.dedent(
            """
            [[tokens]]
            token = "admin-token"
            tenant = "default_tenant"
            user_id = "admin"

            [[tokens]]
            token = "acme-token"
            tenant = "acme"
            databases = ["prod"]
            """
        )
    )
    s = make_server(config=cfg)
    # Set up acme's tenant and database through the API with a token allowed to.
    assert httpx.post(s.url + "/api/v2/tenants", json={"name": "acme"},
                      headers={"X-Chroma-Token": "acme-token"}).status_code == 200
    assert httpx.post(s.url + "/api/v2/tenants/acme/databases", json={"name": "prod"},
                      headers={"Authorization": "Bearer acme-token"}).status_code == 200
    return s


def test_requests_need_a_valid_token(auth_server):
    url = auth_server.url
    r = httpx.get(url + "/api/v2/tenants/default_tenant")
    assert r.status_code == 401 and r.json()["error"] == "AuthError"
    r = httpx.get(url + "/api/v2/tenants/default_tenant", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = httpx.get(url + "/api/v2/tenants/default_tenant", headers={"Authorization": "Bearer admin-token"})
    assert r.status_code == 200
    # Liveness stays open for load balancers.
    assert httpx.get(url + "/api/v2/heartbeat").status_code == 200
    with pytest.raises(ChromaError):
        auth_server.client()  # the client's handshake is refused without a token


def test_identity_and_tenant_scoping(auth_server):
    acme = auth_server.client(
        tenant="acme", database="prod", headers={"Authorization": "Bearer acme-token"}
    )
    ident = httpx.get(auth_server.url + "/api/v2/auth/identity",
                      headers={"X-Chroma-Token": "acme-token"}).json()
    assert ident["tenant"] == "acme" and ident["databases"] == ["prod"]
    col = acme.create_collection("private")
    col.add(ids=["x"], embeddings=[[1.0, 0.0]])
    assert col.count() == 1
    admin = auth_server.client(headers={"X-Chroma-Token": "admin-token"})
    admin.create_collection("adminstuff")
    # acme cannot reach the default tenant's data, nor another of its databases.
    t, d = "default_tenant", "default_database"
    r = httpx.get(auth_server.url + C.format(t=t, d=d), headers={"X-Chroma-Token": "acme-token"})
    assert r.status_code == 403 and r.json()["error"] == "AuthorizationError"
    r = httpx.post(auth_server.url + "/api/v2/tenants/acme/databases", json={"name": "dev"},
                   headers={"X-Chroma-Token": "acme-token"})
    assert r.status_code == 403
    # The admin token is bound to the default tenant, so acme's data is out of reach.
    r = httpx.get(auth_server.url + C.format(t="acme", d="prod") + "/private",
                  headers={"X-Chroma-Token": "admin-token"})
    assert r.status_code == 403


def test_rate_limit(make_server):
    # One token every 20 s after a burst of 3: the fourth request is refused however
    # slowly a busy machine sends them.
    s = make_server(env={"INDIGO_RATE_LIMIT_PER_SECOND": "0.05", "INDIGO_RATE_LIMIT_BURST": "3"})
    codes = [httpx.get(s.url + "/api/v2/tenants/default_tenant").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    r = httpx.get(s.url + "/api/v2/tenants/default_tenant")
    assert r.status_code == 429
    assert r.json()["error"] == "RateLimitError" and "retry" in r.json()["message"]


def test_quotas(make_server):
    s = make_server(env={
        "INDIGO_MAX_BATCH_SIZE": "5",
        "INDIGO_MAX_COLLECTIONS_PER_DATABASE": "2",
        "INDIGO_MAX_RECORDS_PER_COLLECTION": "8",
    })
    client = s.client()
    assert httpx.get(s.url + "/api/v2/pre-flight-checks").json()["max_batch_size"] == 5
    col = client.create_collection("one")
    client.create_collection("two")
    r = httpx.post(s.url + C.format(t="default_tenant", d="default_database"), json={"name": "three"})
    assert r.status_code == 400 and r.json()["error"] == "QuotaError"
    url = s.url + C.format(t="default_tenant", d="default_database") + f"/{col.id}/add"
    r = httpx.post(url, json={"ids": [str(i) for i in range(6)], "embeddings": [[1.0]] * 6})
    assert r.status_code == 400 and r.json()["error"] == "QuotaError"
    col.add(ids=[str(i) for i in range(5)], embeddings=[[float(i)] for i in range(5)])
    r = httpx.post(url, json={"ids": ["a", "b", "c", "d"], "embeddings": [[1.0]] * 4})
    assert r.status_code == 400 and r.json()["error"] == "QuotaError"
    assert col.count() == 5


def test_restart_after_sigkill_keeps_everything_acknowledged(make_server):
    s = make_server()
    client = s.client()
    col = client.create_collection("durable", metadata={"hnsw:space": "cosine"})
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((3000, 16)).astype(np.float32)
    for i in range(0, 3000, 500):
        col.add(
            ids=[f"r{j}" for j in range(i, i + 500)],
            embeddings=vecs[i:i + 500],
            documents=[f"doc {j}" for j in range(i, i + 500)],
            metadatas=[{"j": j} for j in range(i, i + 500)],
        )
    col.delete(ids=[f"r{j}" for j in range(0, 100)])
    col.update(ids=["r100"], metadatas=[{"j": -1}])
    assert s.stop(signal.SIGKILL) == -signal.SIGKILL
    s.start()
    col = s.client().get_collection("durable")
    assert col.count() == 2900
    got = col.get(ids=["r100", "r2999", "r5"], include=["metadatas", "documents", "embeddings"])
    assert got["ids"] == ["r100", "r2999"]
    assert got["metadatas"] == [{"j": -1}, {"j": 2999}]
    assert np.allclose(got["embeddings"][1], vecs[2999])
    r = col.query(query_embeddings=[vecs[1234]], n_results=1)
    assert r["ids"] == [["r1234"]]
    # A clean stop (SIGTERM) exits 0.
    assert s.stop(signal.SIGTERM) == 0


def test_payload_limit(make_server):
    s = make_server(env={"INDIGO_MAX_PAYLOAD_BYTES": "1000"})
    col = s.client().create_collection("small")
    url = s.url + C.format(t="default_tenant", d="default_database") + f"/{col.id}/add"
    r = httpx.post(url, json={"ids": [str(i) for i in range(100)], "embeddings": [[1.0, 2.0]] * 100})
    assert r.status_code == 413 and r.json()["error"] == "QuotaError"
    assert col.count() == 0
