"""Every CLI entry point that takes a name or id refuses path traversal with a user error (exit 2),
and nothing is created outside the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main

REFINE = """kind: refine
tenant: {tenant}
refine:
  dataset: {dataset}
  inputs: [{{path: chats.jsonl, format: openai_jsonl}}]
"""


def _exit_code(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "chats.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    return tmp_path / "proj"


CASES = {  # argv, and what the error must say
    "refine dataset": (lambda p: ["refine", _cfg(p, "default", "../../escaped")], "invalid dataset name"),
    "refine tenant": (lambda p: ["refine", _cfg(p, "../escaped", "tickets")], "invalid tenant name"),
    "purge run": (lambda p: ["purge", "--run", "../../escaped", "--yes"], "invalid run id"),
    "purge eval": (lambda p: ["purge", "--eval", "a/../../escaped", "--yes"], "invalid eval id"),
    "purge dataset": (lambda p: ["purge", "--dataset", "../escaped:v1", "--yes"], "invalid dataset name"),
    "purge tenant": (lambda p: ["purge", "--tenant", "../escaped", "--all", "--yes"], "invalid tenant"),
    "export run": (lambda p: ["export", "../../escaped"], "unknown run"),
    "models import name": (lambda p: ["models", "import", str(p), "--name", "../escaped"],
                           "invalid model name"),
    "privacy only": (lambda p: ["privacy", "seal", "--only", "../../escaped"], "invalid folder name"),
    "privacy enable tenant": (lambda p: ["privacy", "enable", "--tenant", "../escaped"], "invalid tenant"),
    "privacy open tenant": (lambda p: ["privacy", "open", "--tenant", "../escaped"], "invalid tenant"),
}


def _cfg(p: Path, tenant: str, dataset: str) -> str:
    f = p / f"refine-{abs(hash((tenant, dataset)))}.yaml"
    f.write_text(REFINE.format(tenant=tenant, dataset=dataset))
    return str(f)


@pytest.mark.parametrize("case", sorted(CASES))
def test_traversal_is_refused(case: str, project: Path, config_dir: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    ws = project / "ws"
    argv, message = CASES[case]
    code = _exit_code(["--workspace", str(ws), *argv(project)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err
    assert not (project / "escaped").exists() and not (ws / "escaped").exists()
    assert not (ws / "tenants" / "escaped").exists() and not (project.parent / "escaped").exists()
    assert list(config_dir.rglob("*escaped*")) == []


def test_purge_without_yes_needs_a_terminal(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = project / "ws"
    run_dir = ws / "tenants" / "default" / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    assert _exit_code(["--workspace", str(ws), "purge", "--run", "run-1"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert run_dir.is_dir()
    assert _exit_code(["--workspace", str(ws), "purge", "--run", "run-1", "--yes"]) == 0
    assert not run_dir.exists()


def test_verify_certificate_cli_with_exported_public_key(project: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ws = project / "ws"
    (ws / "tenants" / "default" / "evals" / "eval-1").mkdir(parents=True)
    (ws / "tenants" / "default" / "evals" / "eval-1" / "scores.jsonl").write_text("{}\n")
    assert _exit_code(["--workspace", str(ws), "purge", "--eval", "eval-1", "--yes"]) == 0
    cert = next((ws / "certificates").glob("cert-*.json"))
    capsys.readouterr()
    assert _exit_code(["--workspace", str(ws), "audit", "public-key"]) == 0
    pem = tmp_path / "signing.pub.pem"
    pem.write_text(capsys.readouterr().out)
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert _exit_code(["--workspace", str(ws), "audit", "verify-certificate", str(cert),
                       "--public-key", str(pem)]) == 0
    assert "valid" in capsys.readouterr().out
    cert.write_text(cert.read_text().replace('"eval-1"', '"eval-2"'))
    assert _exit_code(["--workspace", str(ws), "audit", "verify-certificate", str(cert)]) == 2
    assert "signature is invalid" in capsys.readouterr().err
