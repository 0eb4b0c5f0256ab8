"""`python -m labutils doctor`: all fine here; a missing package gives advice and a non-zero exit."""

import subprocess
import sys

from labutils import doctor


def test_doctor_passes_here():
    done = subprocess.run([sys.executable, "-m", "labutils", "doctor"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for word in ("python", "torch", "cpu", "torch threads", "gpu", "ipywidgets front-end", "training cache"):
        assert word in done.stdout


def test_missing_package_gives_advice(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "REQUIRED", doctor.REQUIRED + [("no-such-package-xyz", "testing the doctor")])
    assert doctor.report() is False
    out = capsys.readouterr().out
    assert "no-such-package-xyz" in out and "pip install -r requirements.txt" in out


def test_unwritable_cache_gives_advice(monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LABUTILS_CACHE_DIR", str(blocker / "cache"))
    assert doctor.report() is False
    assert "LABUTILS_CACHE_DIR" in capsys.readouterr().out
