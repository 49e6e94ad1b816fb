"""Zero retention, end to end: a canary planted in raw data is found only in the tenant's own data
files after refine -> train -> eval, nowhere at all after `studio purge --all`, and the pipeline
made zero network attempts (strict egress log). Every verb runs as a real `studio` process with
HOME, TMPDIR and the user config dir inside the test's temporary directory.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, make_project, studio


def _plant(raw_src: Path, raw_dst: Path, canary: str) -> None:
    """Copy the sample raw logs into the tenant's raw/ folder with the canary in every record."""
    raw_dst.mkdir(parents=True, exist_ok=True)
    text = (raw_src / "tickets.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    col = rows[0].index("transcript")
    for row in rows[1:]:
        row[col] = row[col].replace("Customer: ", f"Customer: my account is {canary}. ", 1)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (raw_dst / "tickets.csv").write_text(buf.getvalue())
    chats = []
    for line in (raw_src / "chat_export.jsonl").read_text().splitlines():
        try:
            chat = json.loads(line)
            chat["messages"][0]["content"] += f" (account {canary})"
            chats.append(json.dumps(chat))
        except (ValueError, KeyError, IndexError, TypeError):  # the sample's deliberately broken lines
            chats.append(line)
    (raw_dst / "chat_export.jsonl").write_text("\n".join(chats) + "\n")
    shutil.rmtree(raw_src)  # the only copies now live in the tenant's raw/ folder


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path) -> dict:
    proj = make_project(tmp_path / "proj", tickets=40)
    home, tmpdir = tmp_path / "home", tmp_path / "tmpdir"
    home.mkdir()
    tmpdir.mkdir()
    ws = proj / "studio-workspace"
    canary = f"cnry{uuid.uuid4().hex[:20]}"
    _plant(proj / "data" / "raw", ws / "tenants" / "default" / "raw", canary)
    cfg = yaml.safe_load((proj / "configs" / "refine_tickets.yaml").read_text())
    for spec in cfg["refine"]["inputs"]:
        spec["path"] = str(ws / "tenants" / "default" / "raw" / Path(spec["path"]).name)
    (proj / "configs" / "refine_tickets.yaml").write_text(yaml.safe_dump(cfg))
    train = yaml.safe_load((proj / "configs" / "sft_lora.yaml").read_text())
    train["train"].update(max_seq_len=128, save_steps=1000)
    (proj / "configs" / "sft_lora.yaml").write_text(yaml.safe_dump(train))
    variables = {"TMPDIR": str(tmpdir), "STUDIO_EGRESS_LOG": str(tmp_path / "egress.jsonl"),
                 "PYTHONPATH": str(ROOT)}  # the engine of this checkout, whatever pip installed
    return {"root": tmp_path, "proj": proj, "home": home, "ws": ws, "canary": canary,
            "env": variables, "tiny": tiny_model_dir}


def _studio(e: dict, *args: str) -> object:
    res = studio(*args, cwd=e["proj"], home=e["home"], env=e["env"])
    return res


def _scan(e: dict, *allow: Path) -> dict:
    args = ["audit", "retention", "--canary", e["canary"], "--no-default-roots",
            "--path", str(e["root"]), "--json"]
    if Path("/dev/shm").is_dir():
        args += ["--path", "/dev/shm"]
    for a in allow:
        args += ["--allow", str(a)]
    res = _studio(e, *args)
    assert res.stdout.startswith("{"), res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert (res.returncode == 0) == (report["stray"] == 0), res.stderr
    return report


def _serve_with_canary(e: dict, run_id: str) -> str:
    """Promote the run, start the real `studio serve` (a child process), send it a prompt that
    carries the canary, stop it with Ctrl-C; returns everything the server printed."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    assert _studio(e, "serve", "promote", run_id, "--name", "triage", "--force").returncode == 0
    key = _studio(e, "keys", "create", "--tenant", "default").stdout.strip()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (e["proj"] / "configs" / "serve_test.yaml").write_text(yaml.safe_dump({
        "kind": "serve", "serve": {"base_model": "smollm2-135m-instruct", "port": port,
                                   "threads": 1}}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "XDG_", "TRANSFORMERS_", "TORCH", "TRITON", "TMPDIR"))}
    env.update(e["env"], HOME=str(e["home"]))
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "configs/serve_test.yaml"],
                            cwd=e["proj"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            r = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "triage", "max_tokens": 8, "messages": [
                              {"role": "user", "content": f"my account is {e['canary']}, help"}]})
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-2000:]
    return output


def test_canary_stays_in_tenant_files_and_is_gone_after_purge(env: dict) -> None:
    e = env
    tenant = e["ws"] / "tenants" / "default"
    assert _studio(e, "models", "import", str(e["tiny"]), "--name", "smollm2-135m-instruct").returncode == 0
    res = _studio(e, "refine", "configs/refine_tickets.yaml")
    assert res.returncode == 0, res.stderr
    res = _studio(e, "train", "configs/sft_lora.yaml")
    assert res.returncode == 0, res.stderr
    (run_row,) = json.loads(_studio(e, "runs", "list", "--json").stdout)
    cfg = yaml.safe_load((e["proj"] / "configs" / "eval.yaml").read_text())
    cfg["eval"]["models"] = ["smollm2-135m-instruct", run_row["run_id"]]
    cfg["eval"]["generation"]["max_new_tokens"] = 4
    (e["proj"] / "configs" / "eval_both.yaml").write_text(yaml.safe_dump(cfg))
    res = _studio(e, "eval", "configs/eval_both.yaml")
    assert res.returncode == 0, res.stderr
    eval_ids = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("eval ")]
    assert _studio(e, "diff", *eval_ids, "--require", "none").returncode == 0
    assert _studio(e, "export", run_row["run_id"]).returncode == 0
    served_log = _serve_with_canary(e, run_row["run_id"])
    assert e["canary"] not in served_log  # prompts and completions are never logged

    # the canary is where the data is meant to be, and nowhere else
    allowed = [tenant / "raw", tenant / "datasets", tenant / "evals", tenant / "cache"]
    # (diff reports under evals/ show per-item texts; runs/ — adapter, export — must hold none)
    report = _scan(e, *allowed)
    assert report["stray"] == 0, [h for h in report["hits"] if not h["allowed"]]
    hit_dirs = {Path(h["path"]).relative_to(tenant).parts[0] for h in report["hits"]}
    assert {"raw", "datasets"} <= hit_dirs  # the scan really finds the planted data
    assert _scan(e)["stray"] > 0  # and reports it as stray when nothing is allowed

    # the whole pipeline made zero network attempts
    egress = e["root"] / "egress.jsonl"
    assert not egress.exists() or egress.read_text() == ""

    # the audit log recorded every verb, verifies, and carries no content
    res = _studio(e, "audit", "log", "--json")
    actions = [json.loads(line)["action"] for line in res.stdout.splitlines()]
    assert actions == ["models.import", "refine", "train", "eval", "diff", "export",
                       "serve.promote", "keys.create", "serve.key_use", "serve"]
    assert _studio(e, "audit", "verify").returncode == 0
    log_text = (e["ws"] / "audit" / "audit.jsonl").read_text()
    assert e["canary"] not in log_text and "Customer" not in log_text

    res = _studio(e, "purge", "--all", "--yes")
    assert res.returncode == 0, res.stderr
    cert = next((e["ws"] / "certificates").glob("cert-*.json"))
    res = _studio(e, "audit", "verify-certificate", str(cert))
    assert res.returncode == 0 and "valid" in res.stdout, res.stderr
    body = json.loads(cert.read_text())
    assert any(f["path"].startswith("tenants/default/raw/") for f in body["deleted"]["files"])
    assert body["deleted"]["registry_rows"]["runs"] == 1

    report = _scan(e)
    assert report["hits"] == [], report["hits"]
    assert not tenant.exists()
    assert _studio(e, "audit", "verify").returncode == 0
    last = json.loads(_studio(e, "audit", "log", "--json").stdout.splitlines()[-1])
    assert last["action"] == "purge.request" and last["tenant"] == "default"


def test_encrypted_tenant_and_retention_policy(env: dict, config_dir: Path) -> None:
    """With encryption on, data rests sealed between jobs; raw_after_refine deletes the uploads
    with a certificate; destroying the key (purge --all) leaves nothing readable."""
    e = env
    (e["ws"]).mkdir(exist_ok=True)
    (e["ws"] / "privacy.yaml").write_text(
        "retention: {raw_after_refine: delete}\ntenants: {default: {encryption: true}}\n")
    assert _studio(e, "privacy", "enable").returncode == 0
    tenant = e["ws"] / "tenants" / "default"
    assert sorted(p.name for p in (tenant / "raw").iterdir()) == ["chat_export.jsonl.sealed",
                                                                  "tickets.csv.sealed"]
    res = _studio(e, "refine", "configs/refine_tickets.yaml")
    assert res.returncode == 0, res.stderr
    assert "retention: deleted per policy" in res.stderr
    assert "plaintext view wiped" in res.stderr
    assert not tenant.is_symlink() and not (e["ws"] / "tenants" / ".store-default").exists()
    assert list((tenant / "raw").iterdir()) == []  # uploads deleted after refine
    version = next((tenant / "datasets").glob("*/v1"))
    names = sorted(p.name for p in version.iterdir())
    assert names and all(n.endswith(".sealed") for n in names), names
    # at rest, the canary is nowhere in plaintext (sealed files are ciphertext)
    assert _scan(e)["hits"] == []
    certs = list((e["ws"] / "certificates").glob("*.json"))
    assert len(certs) == 1 and json.loads(certs[0].read_text())["reason"] == "retention:raw_after_refine"
    # a job opens the sealed data for its duration and seals it again
    assert _studio(e, "models", "import", str(e["tiny"]), "--name", "smollm2-135m-instruct").returncode == 0
    res = _studio(e, "train", "configs/sft_lora.yaml", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert all(p.name.endswith(".sealed") for p in version.iterdir())
    assert json.loads(res.stdout[res.stdout.index("{"):])["loss_mode"] == "assistant_only"
    # the job saw the decrypted data (in tmpfs); nothing plaintext is left anywhere
    assert _scan(e)["hits"] == []
    (key_file,) = list((config_dir / "keys").rglob("default.key"))  # $STUDIO_CONFIG_DIR
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert _studio(e, "purge", "--all", "--yes").returncode == 0
    assert not key_file.exists()
    assert _studio(e, "audit", "verify").returncode == 0
