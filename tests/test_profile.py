"""Profiling: the self-contained bench script, memory/cold-start probes, the torch worker, SSH targets."""

from __future__ import annotations

import ast
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgedistill.errors import EdgedistillError
from edgedistill.profiling import bench
from edgedistill.profiling.bundle import load_result, make_bench_bundle
from edgedistill.profiling.profiler import ChainItem, profile, speedups, upstream_chain
from edgedistill.recipe import ExportStage, ProfileStage, ProfileTarget
from tests.tiny import build_st_model, make_sentences

FAST = {"warmup": 2, "repeats": 2, "min_repeats": 2, "max_seconds": 5, "threads": [0, 1], "batch_size": 4,
        "batch_sizes": [1, 4], "seq_lengths": [8, 24], "cell_repeats": 2, "cell_seconds": 1}
SENTENCES = make_sentences(12, seed=11)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A teacher, a distilled student and its ONNX export laid out like a run's stage folders."""
    from edgedistill.contract import Artifact, StageContext
    from edgedistill.stages import export
    from edgedistill.tasks.embedding.evaluate import EvalSet, Evaluator

    root = tmp_path_factory.mktemp("chain")
    teacher = build_st_model(root / "teacher", family="mpnet", hidden=32, layers=2, seed=0)
    student = build_st_model(root / "run" / "00-distill-aaa" / "artifact", family="bert", hidden=16, layers=2,
                             dense_out=32)
    (student.parent / "config.json").write_text(json.dumps(
        {"type": "distill", "key": "aaa", "input_kind": "teacher", "input_path": str(teacher)}))
    work = root / "run" / "01-export-bbb"
    work.mkdir()
    ctx = StageContext(index=1, teacher=teacher, input=Artifact("sentence-transformer", student, "aaa"),
                       work_dir=work, device="cpu", input_evaluation={},
                       _evaluator=lambda: Evaluator(EvalSet(sts=None, heldout=SENTENCES, latency_sentences=SENTENCES)))
    export.run(ExportStage(type="export", exporter="torchscript"), ctx)
    (work / "config.json").write_text(json.dumps(
        {"type": "export", "key": "bbb", "input_kind": "sentence-transformer", "input_path": str(student)}))
    return {"teacher": teacher, "student": student, "onnx": work / "artifact", "root": root}


def test_bench_script_is_self_contained() -> None:
    """bench.py goes to devices alone: it may import only the standard library, numpy, onnxruntime, tokenizers."""
    tree = ast.parse(bench.__file__ and Path(bench.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "tokenizers"}
    assert names - allowed == set()
    assert "edgedistill" not in names and "torch" not in names


def test_host_facts_name_cpu_isa_and_versions() -> None:
    facts = bench.host_facts()
    assert facts["cpu"] and facts["cpu"] != "unknown"
    assert facts["machine"] and facts["cores"] >= 1 and facts["usable_cores"] >= 1
    assert isinstance(facts["isa"], list) and set(facts["isa"]) <= set(bench.X86_FEATURES + bench.ARM_FEATURES)
    if facts["machine"] in ("x86_64", "AMD64"):
        assert "sse4_2" in facts["isa"]
    import onnxruntime

    assert facts["onnxruntime"] == onnxruntime.__version__


def test_arm_cpuinfo_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 asimdhp asimddp\n"
               "CPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\nprocessor\t: 1\nCPU implementer\t: 0x41\n"
               "CPU part\t: 0xd05\n")
    files = {"/proc/cpuinfo": cpuinfo, "/proc/device-tree/model": "Raspberry Pi 5 Model B\x00"}
    monkeypatch.setattr(bench, "_read", lambda path: files.get(path, ""))
    model, flags, board = bench._cpuinfo()
    assert model == "Arm Cortex-A76 + Cortex-A55" and board == "Raspberry Pi 5 Model B"
    assert {"asimddp", "asimdhp"} <= flags


def test_bench_engine_matches_the_runtime(chain: dict[str, Path]) -> None:
    from edgedistill.runtime import OnnxEncoder

    ours = bench.OnnxEngine(str(chain["onnx"]), threads=1).encode(SENTENCES, batch_size=5)
    reference = OnnxEncoder(chain["onnx"], threads=1).encode(SENTENCES, batch_size=5)
    assert np.abs(ours - reference).max() < 1e-5


def test_fixed_length_texts_truncate_to_exact_token_counts(chain: dict[str, Path]) -> None:
    engine = bench.OnnxEngine(str(chain["onnx"]), threads=1)
    for length in (8, 24):
        texts = bench.fixed_length_texts(SENTENCES, 3, length)
        engine._truncate(length)
        assert [len(e.ids) for e in engine.tokenizer.encode_batch(texts)] == [length] * 3
        assert len(set(texts)) == 3  # different real text in each row


class CountingFactory:
    """An engine factory whose engines take longer with more threads (so the counts are told apart)."""

    max_seq_length = 64

    def __call__(self, threads: int):
        class Engine:
            def encode(self, texts: list[str], batch_size: int = 1, max_length: int | None = None) -> np.ndarray:
                time.sleep(0.0005 * threads)
                return np.zeros((len(texts), 4), dtype=np.float32)

        return Engine()


def test_batch1_rounds_run_in_fresh_processes_and_report_spread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "BUSY_CORES", 1e9)  # whatever else this machine is doing, keep every round
    settings = {**FAST, "threads": [1, 2], "repeats": 3, "min_repeats": 2, "max_seconds": 60}
    result = bench.process_rounds(CountingFactory(), ["a", "b", "c", "d"], settings)
    assert len(set(result["pids"])) == 3 and os.getpid() not in result["pids"]
    for t in ("1", "2"):
        stats = result["latency_ms"][t]
        assert stats["n"] == 12 and stats["processes"] == 3 and len(stats["round_p50"]) == 3
        assert stats["spread_pct"] >= 0 and stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert result["latency_ms"]["2"]["p50"] > result["latency_ms"]["1"]["p50"]
    cold = result["cold"]
    assert cold["cold_start_ms"] > 0 and len(cold["cold_start_runs_ms"]) == 3 and cold["largest_batch"] == [4, 24]
    few = bench.process_rounds(CountingFactory(), ["a"], {**settings, "repeats": 10, "max_seconds": 0})
    assert len(few["pids"]) == 2  # past the time budget, but never fewer than min_repeats rounds


def test_rounds_disturbed_by_other_processes_are_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def disturbed(probe: dict) -> bool:  # the first two rounds had company
        if probe["pid"] not in seen:
            seen.append(probe["pid"])
        return seen.index(probe["pid"]) < 2

    monkeypatch.setattr(bench, "_disturbed", disturbed)
    settings = {**FAST, "threads": [1], "repeats": 3, "min_repeats": 2, "max_seconds": 60}
    result = bench.process_rounds(CountingFactory(), ["a", "b"], settings)
    assert result["contention"]["rounds"] == 5 and result["contention"]["rounds_used"] == 3
    assert result["latency_ms"]["1"]["processes"] == 3 and result["latency_ms"]["1"]["n"] == 6
    assert len(result["contention"]["round_other_cores"]) == 5
    always = bench.process_rounds(CountingFactory(), ["a"], {**settings, "max_seconds": 0})
    monkeypatch.setattr(bench, "_disturbed", lambda probe: True)
    busy = bench.process_rounds(CountingFactory(), ["a"], {**settings, "max_seconds": 0})
    assert always["contention"]["rounds_used"] >= 2
    assert busy["contention"]["rounds"] == busy["contention"]["rounds_used"] == 2  # all kept when none was quiet


def test_cpu_watch_sees_other_processes_not_its_own_work() -> None:
    watch = bench.CpuWatch()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    time.sleep(1.2)  # not yet waited for, so its CPU time is another process's
    seen = watch.result()
    busy.wait()
    assert seen["other_cores"] > 0.5 and seen["seconds"] >= 1.2


def test_child_probe_sees_only_its_own_memory() -> None:
    def allocate() -> dict:
        bench.reset_peak_rss()
        base = bench.rss_mb()
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MB touched
        return {"own": bench.peak_rss_mb() - base, "sum": float(block[:10].sum())}

    result = bench.in_child(allocate)
    assert 55 < result["own"] < 200
    assert bench.in_child(lambda: 1 / 0)["error"].startswith("ZeroDivisionError")


def test_bench_bundle_runs_on_its_own(chain: dict[str, Path], tmp_path: Path) -> None:
    bundle = make_bench_bundle(chain["onnx"], SENTENCES, FAST, tmp_path / "bench")
    assert {p.name for p in bundle.iterdir()} == {"bench.py", "model", "sentences.json", "settings.json", "README.txt"}
    assert {p.name for p in (bundle / "model").iterdir()} == {"manifest.json", "model.onnx", "tokenizer.json"}
    # As on a device: plain `python bench.py` in the unpacked folder, nothing else on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "bench.py", "--label", "board", "--out", "r.json"], cwd=bundle, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    result = load_result(bundle / "r.json")
    manifest = json.loads((chain["onnx"] / "manifest.json").read_text())
    assert result["label"] == "board" and result["model"]["sha256"] == manifest["sha256"]["model.onnx"]
    cores = len(os.sched_getaffinity(0))
    assert result["threads"] == list(dict.fromkeys([cores, 1]))
    for stats in result["latency_ms"].values():
        assert stats["processes"] >= 2 and stats["n"] == stats["processes"] * len(SENTENCES)
        assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"]
    assert {(g["batch"], g["seq"]) for g in result["throughput"]["grid"]} == {(1, 8), (4, 8), (1, 24), (4, 24)}
    assert result["throughput"]["real"]["sentences_per_s"] > 0
    cold = result["cold"]
    assert cold["cold_start_ms"] > 0 and cold["model_rss_mb"] > 0
    assert len(cold["cold_start_runs_ms"]) == result["contention"]["rounds"] >= 2
    assert cold["peak_rss_mb"] >= cold["peak_rss_batch1_mb"]
    assert result["model"]["size_mb"] > 0 and result["host"]["cores"] >= 1


def test_bench_rejects_bad_input(chain: dict[str, Path], tmp_path: Path) -> None:
    bundle = make_bench_bundle(chain["onnx"], SENTENCES, {**FAST, "bogus": 1}, tmp_path / "bench")
    proc = subprocess.run([sys.executable, "bench.py"], cwd=bundle, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "unknown settings ['bogus']" in proc.stderr
    with pytest.raises(EdgedistillError, match="not an edgedistill bench result"):
        load_result({"hello": 1}, where="x.json")
    with pytest.raises(EdgedistillError, match="no manifest.json"):
        make_bench_bundle(chain["student"], SENTENCES, FAST, tmp_path / "b2")


def test_upstream_chain_reads_stage_folders(chain: dict[str, Path]) -> None:
    items = upstream_chain(chain["onnx"])
    assert [(i.stage, i.dir, i.kind) for i in items] == [
        ("distill", "00-distill-aaa", "sentence-transformer"), ("export", "01-export-bbb", "onnx")]
    assert [i.stage for i in upstream_chain(chain["root"] / "elsewhere")] == ["input"]


def test_teacher_student_and_onnx_measured_side_by_side(chain: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(chain["root"])  # relative paths, as the runner gives them (runs/<name>/...)
    items = upstream_chain(Path("run/01-export-bbb/artifact"))
    teacher = ChainItem("teacher", "teacher", "teacher", Path("teacher"))
    local = ProfileTarget(name="local")
    work = Path(os.path.relpath(tmp_path, chain["root"]))
    measurements = profile(items[-1], SENTENCES, {**FAST, "threads": [1]}, [local], work, [teacher, items[0]])
    assert [(m["artifact"], m["runtime"], m["profiled"]) for m in measurements] == [
        ("teacher", "torch", False), ("00-distill-aaa", "torch", False), ("01-export-bbb", "onnxruntime", True)]
    assert [m["label"] for m in measurements] == ["teacher · PyTorch fp32", "student · PyTorch fp32",
                                                  "export · ONNX fp32"]
    for m in measurements:
        r = m["result"]
        assert r["sentences"]["count"] == len(SENTENCES) and r["latency_ms"]["1"]["processes"] >= 2
        assert r["cold"]["cold_start_ms"] > 0 and r["cold"]["model_rss_mb"] > 0, r["cold"]
        assert r["model"]["size_mb"] > 0
    assert measurements[0]["result"]["host"]["torch"]
    ratios = speedups(measurements)
    assert ratios["teacher"] == pytest.approx(1.0) and ratios["01-export-bbb"] > 0
    assert (tmp_path / "bench" / "bench.py").is_file()


def test_profile_stage_config() -> None:
    stage = ProfileStage(type="profile", threads=2, targets=["local", {"name": "pi5", "ssh": "pi@10.0.0.2"}])
    assert stage.threads == [2] and [t.name for t in stage.targets] == ["local", "pi5"]
    assert stage.targets[0].is_local and not stage.targets[1].is_local
    with pytest.raises(ValueError, match="needs ssh"):
        ProfileStage(type="profile", targets=["lokal"])
    with pytest.raises(ValueError, match="unique"):
        ProfileStage(type="profile", targets=["local", "local"])


# -- SSH, against an sshd on loopback that the test starts ---------------------------------------------------
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    """An OpenSSH server on 127.0.0.1 only, as the current user, with keys made for this test."""
    if not SSHD or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("needs OpenSSH (sshd, ssh, ssh-keygen): apt-get install -y openssh-server openssh-client "
                    "(.ci/run installs them)")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "user_key.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder, when root
    port = _free_port()
    (root / "sshd_config").write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"PidFile {root / 'sshd.pid'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", ""]))
    with open(root / "sshd.log", "w") as log:  # sshd keeps its own copy of the descriptor
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config"), "-p", str(port)], stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    if proc.poll() is not None:
        pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")
    target = {"name": "loopback", "ssh": f"{getpass.getuser()}@127.0.0.1", "port": port,
              "identity_file": str(root / "user_key"), "python": sys.executable, "remote_dir": str(root / "remote"),
              "ssh_options": [f"UserKnownHostsFile={root / 'known_hosts'}", "StrictHostKeyChecking=accept-new"],
              "timeout_s": 300}
    yield target
    proc.terminate()
    proc.wait(timeout=10)


def test_ssh_target_copies_runs_and_pulls_back(sshd: dict, chain: dict[str, Path], tmp_path: Path) -> None:
    items = upstream_chain(chain["onnx"])
    targets = [ProfileTarget(name="local"), ProfileTarget(**sshd)]
    measurements = profile(items[-1], SENTENCES, {**FAST, "threads": [1]}, targets, tmp_path)
    by_target = {m["target"]: m for m in measurements}
    assert set(by_target) == {"local", "loopback"} and all(m["profiled"] for m in measurements)
    remote = by_target["loopback"]["result"]
    assert remote["label"] == "loopback" and remote["host"]["cpu"]
    assert remote["model"]["sha256"] == by_target["local"]["result"]["model"]["sha256"]
    assert remote["latency_ms"]["1"]["n"] == remote["latency_ms"]["1"]["processes"] * len(SENTENCES)
    assert list(Path(sshd["remote_dir"]).iterdir()) == []  # the device is left clean


def test_ssh_target_errors_are_clear(sshd: dict, chain: dict[str, Path], tmp_path: Path) -> None:
    from edgedistill.profiling.targets import SshDevice

    bundle = make_bench_bundle(chain["onnx"], SENTENCES, FAST, tmp_path / "bench")
    closed = ProfileTarget(**{**sshd, "port": _free_port(), "connect_timeout_s": 5})
    with pytest.raises(EdgedistillError, match=r"(?s)target 'loopback'.*copying the bench bundle.*without a password"):
        SshDevice(closed).profile(bundle, "t1")
    no_deps = tmp_path / "bare-python"
    no_deps.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")  # no site-packages: no onnxruntime
    no_deps.chmod(0o755)
    bare = ProfileTarget(**{**sshd, "python": str(no_deps)})
    with pytest.raises(EdgedistillError, match=r"(?s)lacks .*onnxruntime.*pip install onnxruntime numpy tokenizers"):
        SshDevice(bare).profile(bundle, "t2")
