"""Where a bench bundle runs: this machine (a child python process) or a device over SSH.

SSH uses the system OpenSSH client rather than a Python library so that ~/.ssh/config, agents, jump hosts
and known_hosts work as they do for the user. The bundle goes over one connection as a tar stream (no
scp/sftp subsystem needed on the device), bench.py runs there, and its JSON comes back on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgedistillError
from edgedistill.profiling.bundle import load_result

log = logging.getLogger(__name__)


def _env() -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_local_onnx(bundle: Path, model_dir: Path | None = None, label: str = "local") -> dict[str, Any]:
    """Run the bundle's bench.py here, in a fresh python process, on its model or on ``model_dir``."""
    bundle = Path(bundle).resolve()  # bench.py runs with the bundle as its working directory
    with tempfile.TemporaryDirectory(prefix="edgedistill-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(bundle / "bench.py"), "--label", label, "--out", str(out)]
        if model_dir is not None:
            cmd += ["--model", str(Path(model_dir).resolve())]
        proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, env=_env(), check=False)
        if proc.returncode != 0 or not out.is_file():
            raise EdgedistillError(f"profile: bench.py failed on this machine (exit {proc.returncode}):\n"
                                   f"{_tail(proc.stderr)}")
        log.debug("bench.py: %s", proc.stderr.strip())
        return load_result(out)


def run_local_torch(models: dict[str, Path], bundle: Path) -> dict[str, dict[str, Any]]:
    """Profile PyTorch sentence-transformers models here with the bundle's sentences and settings."""
    bundle = Path(bundle).resolve()
    with tempfile.TemporaryDirectory(prefix="edgedistill-torch-bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "edgedistill.profiling.torch_bench", "--sentences",
               str(bundle / "sentences.json"), "--settings", str(bundle / "settings.json"), "--out", str(out)]
        for label, path in models.items():
            cmd += ["--model", f"{label}={Path(path).resolve()}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
        if proc.returncode != 0 or not out.is_file():
            raise EdgedistillError(f"profile: measuring the PyTorch models ({', '.join(models)}) failed "
                                   f"(exit {proc.returncode}):\n{_tail(proc.stderr)}")
        return {label: load_result(r, where=f"torch bench of {label}") for label, r in json.loads(out.read_text()).items()}


class SshDevice:
    """A device reached with ``ssh``: copy a bundle, run bench.py, read its JSON back, clean up."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def _ssh(self) -> list[str]:
        t = self.target
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(t.connect_timeout_s)}"]
        if t.port:
            cmd += ["-p", str(t.port)]
        if t.identity_file:
            cmd += ["-i", str(Path(t.identity_file).expanduser())]
        for option in t.ssh_options:
            cmd += ["-o", option]
        return cmd + [t.ssh]

    def _run(self, remote: str, what: str, stdin: Any = None, timeout: float | None = None,
             input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self._ssh() + [remote], input=input_bytes, stdin=stdin, capture_output=True,
                                  timeout=timeout or self.target.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise EdgedistillError(f"profile target '{self.target.name}': {what} timed out after "
                                   f"{timeout or self.target.timeout_s:.0f}s; raise timeout_s in the recipe") from None
        except FileNotFoundError:
            raise EdgedistillError("profile: no `ssh` client on this machine; install OpenSSH "
                                   "(e.g. apt-get install openssh-client)") from None
        if proc.returncode != 0:
            raise self._error(what, proc)
        return proc

    def _error(self, what: str, proc: subprocess.CompletedProcess) -> EdgedistillError:
        t = self.target
        err = _tail(proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr)
        hint = ""
        if proc.returncode == 255:
            hint = (f"\nCheck that `{' '.join(shlex.quote(c) for c in self._ssh())} true` works without a password "
                    "(key in ssh-agent or identity_file, host in known_hosts or ssh_options: "
                    "[StrictHostKeyChecking=accept-new]).")
        elif proc.returncode == 3:
            hint = f"\nInstall the bench's dependencies on the device: {t.python} -m pip install onnxruntime numpy tokenizers"
        return EdgedistillError(f"profile target '{t.name}' ({t.ssh}): {what} failed (exit {proc.returncode}):\n"
                                f"{err}{hint}")

    def upload(self, bundle: Path, remote_dir: str) -> None:
        """Send the bundle as one tar stream into ``remote_dir`` (created)."""
        q = shlex.quote(remote_dir)
        cmd = self._ssh() + [f"rm -rf {q} && mkdir -p {q} && tar -xf - -C {q}"]
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise EdgedistillError("profile: no `ssh` client on this machine; install OpenSSH") from None
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                tar.add(str(bundle), arcname=".")
        except BrokenPipeError:
            pass  # the error is in ssh's stderr
        proc.stdin.close()
        stderr = proc.stderr.read()
        proc.wait(timeout=self.target.timeout_s)
        if proc.returncode != 0:
            raise self._error("copying the bench bundle", subprocess.CompletedProcess(cmd, proc.returncode, b"", stderr))

    def profile(self, bundle: Path, tag: str) -> dict[str, Any]:
        """Copy ``bundle``, run it, return the checked result; the remote folder is removed unless ``keep``."""
        t = self.target
        remote_dir = f"{t.remote_dir.rstrip('/')}/{tag}"
        q = shlex.quote(remote_dir)
        log.info("profile target %s: copying the bench bundle to %s:%s", t.name, t.ssh, remote_dir)
        self.upload(bundle, remote_dir)
        try:
            log.info("profile target %s: running bench.py", t.name)
            # t.python is inserted as written so a user can give e.g. "~/venv/bin/python3" or "env X=1 python3".
            self._run(f"cd {q} && {t.python} bench.py --label {shlex.quote(t.name)} --out result.json",
                      "running bench.py")
            raw = self._run(f"cat {q}/result.json", "reading result.json", timeout=120).stdout
        finally:
            if not t.keep:
                try:
                    subprocess.run(self._ssh() + [f"rm -rf {q}"], capture_output=True, timeout=120, check=False)
                except (subprocess.SubprocessError, OSError):
                    log.warning("profile target %s: could not remove %s on the device", t.name, remote_dir)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise EdgedistillError(f"profile target '{t.name}': result.json from the device is not JSON ({e})") from None
        return load_result(data, where=f"result from {t.name}")
