"""scripts/gpu_bundle.sh and scripts/gpu_check_offline.sh: a GPU machine without internet gets the data and wheels
the GPU check needs, and the check runs there from the checkout, against a ``python3`` shim (no GPU, no network)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUNDLE, OFFLINE = ROOT / "scripts" / "gpu_bundle.sh", ROOT / "scripts" / "gpu_check_offline.sh"

#: A python3 that answers what the scripts ask: pip download writes a wheel (or fails where PIP_FAIL is set), pip
#: install records its target, torch imports, CUDA is absent (present where SHIM_CUDA is set: the check's steps then
#: run against the shim, a train call printing its arguments); each call's environment is logged.
SHIM = r"""#!/bin/bash
echo "PYTHONPATH=$PYTHONPATH CMLGRAPH_DATA=$CMLGRAPH_DATA ARGS=$*" >> "$SHIM_LOG"
if [ "$1 $2 $3" = "-m pip download" ]; then
    [ -n "${PIP_FAIL:-}" ] && exit 1
    while [ $# -gt 0 ]; do [ "$1" = -d ] && touch "$2/ogb-1.3.6-py3-none-any.whl"; shift; done
    exit 0
fi
[ "$1 $2 $3" = "-m pip install" ] && exit 0
case "$*" in *cuda.is_available*) [ -n "${SHIM_CUDA:-}" ] && exit 0; exit 1 ;; esac
if [ "$1 $2 $3" = "-m cmlgraph train" ]; then  # a step's run: its log names it; SHIM_BIG makes it long
    [ -n "${SHIM_BIG:-}" ] && head -c 300000 /dev/zero | tr '\0' x
    echo "shim train $*"
fi
exit 0
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    (shims / "python3").write_text(SHIM)
    (shims / "python3").chmod(0o755)
    return {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tmp_path), "SHIM_LOG": str(tmp_path / "shim.log"),
            "TMPDIR": str(tmp_path), **extra}


def _data(tmp_path: Path, names=("planetoid", "amazon_computers", "omniglot")) -> Path:
    data = tmp_path / "data"
    for name in names:
        (data / name).mkdir(parents=True)
        (data / name / "MANIFEST.md").write_text(name)
    return data


def _run(script: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60, env=env)


def test_the_bundle_holds_the_checks_datasets_and_wheels_only(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    proc = _run(BUNDLE, [str(bundle)], _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path))))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (bundle / "datasets").iterdir()) == ["amazon_computers", "planetoid"]
    assert (bundle / "datasets" / "planetoid" / "MANIFEST.md").read_text() == "planetoid"
    assert [p.name for p in (bundle / "wheels").iterdir()] == ["ogb-1.3.6-py3-none-any.whl"]
    assert "gpu_check_offline.sh" in proc.stdout


def test_the_bundle_is_ignored_by_git() -> None:
    proc = subprocess.run(["git", "check-ignore", "-q", ".gpu-bundle/datasets/x"], cwd=ROOT)
    assert proc.returncode == 0


def test_bad_data_roots_are_refused_naming_the_fix(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    proc = _run(BUNDLE, [str(bundle)], _env(tmp_path))
    assert proc.returncode == 2 and "CMLGRAPH_DATA" in proc.stderr
    proc = _run(BUNDLE, [str(bundle)], _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path, ("planetoid",)))))
    assert proc.returncode == 2 and "no amazon_computers/" in proc.stderr and "download" in proc.stderr
    assert not bundle.exists()


def test_a_failed_download_keeps_the_earlier_bundle_and_leaves_no_scraps(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    env = _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path)))
    assert _run(BUNDLE, [str(bundle)], env).returncode == 0
    proc = _run(BUNDLE, [str(bundle)], {**env, "PIP_FAIL": "1"})
    assert proc.returncode == 1 and "could not download" in proc.stderr
    assert (bundle / "wheels" / "ogb-1.3.6-py3-none-any.whl").exists()
    assert not list(tmp_path.glob("gpu-bundle.*"))


def test_the_offline_check_runs_from_the_checkout_on_the_bundles_data(tmp_path: Path) -> None:
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    env = _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path)))
    assert _run(BUNDLE, [str(bundle)], env).returncode == 0
    proc = _run(OFFLINE, [str(bundle), str(out)], _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in (out / "gpu_check.log").read_text()
    calls = (tmp_path / "shim.log").read_text().splitlines()
    assert any("-m pip install" in c and "ogb-1.3.6" in c for c in calls)
    check = [c for c in calls if "cuda.is_available" in c]
    assert check and f"CMLGRAPH_DATA={bundle}/datasets" in check[0] and f"PYTHONPATH={ROOT}:" in check[0]


def test_every_steps_log_comes_back_in_out_dir_cut_to_its_tail(tmp_path: Path) -> None:
    """The GPU machine and its temporary folders are gone after the run: each step's own log (where a CUDA-graph
    fallback or a failed run says why) must come back in OUT_DIR, a long one cut to its last 256 KiB."""
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    assert _run(BUNDLE, [str(bundle)], _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path)))).returncode == 0
    proc = _run(OFFLINE, [str(bundle), str(out)], _env(tmp_path, SHIM_CUDA="1", SHIM_BIG="1",
                                                      GPU_CHECK_PARTS="default,graphs"))
    assert proc.returncode == 0, proc.stderr
    # a lent device returns at most 8 files from OUT_DIR: the logs travel as one archive
    returned = [p for p in out.rglob("*") if p.is_file()]
    assert len(returned) <= 8 and (out / "logs.tar.gz") in returned, returned
    import tarfile

    unpacked = tmp_path / "unpacked"
    with tarfile.open(out / "logs.tar.gz") as tar:
        tar.extractall(unpacked, filter="data")
    logs = {p.name: p for p in (unpacked / "logs").iterdir()}
    assert {"default-cuda-auto.log", "default-cuda-off.log", "default-cpu-auto.log", "sinusoid-graphs-on.log",
            "khop-graphs-off.log", "gmeta-graphs-on.log"} <= set(logs)
    assert "--cuda-graphs off" in logs["khop-graphs-off.log"].read_text()[-1000:]  # the run's own output, last
    assert all(p.stat().st_size <= 262144 for p in logs.values())
    assert logs["default-cuda-auto.log"].stat().st_size == 262144  # 300 kB printed: its tail kept
    assert not list(tmp_path.glob("gpu-check-site.*"))


def test_the_offline_check_refuses_a_folder_that_is_no_bundle(tmp_path: Path) -> None:
    proc = _run(OFFLINE, [str(tmp_path)], _env(tmp_path))
    assert proc.returncode == 2 and "gpu_bundle.sh" in proc.stderr


def test_a_folder_that_is_no_bundle_is_never_replaced(tmp_path: Path) -> None:
    env = _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path)))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "important.txt").write_text("keep")
    proc = _run(BUNDLE, [str(precious)], env)
    assert proc.returncode == 2 and "not a bundle this script made" in proc.stderr
    assert (precious / "important.txt").read_text() == "keep"
    (tmp_path / "afile").write_text("x")
    assert _run(BUNDLE, [str(tmp_path / "afile")], env).returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(BUNDLE, [str(empty)], env).returncode == 0  # an empty folder, then its own bundle, are fine
    assert _run(BUNDLE, [str(empty)], env).returncode == 0 and (empty / "datasets" / "planetoid").is_dir()


def test_an_unwritable_out_dir_is_refused_before_anything_runs_and_no_scraps_stay(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    assert _run(BUNDLE, [str(bundle)], _env(tmp_path, CMLGRAPH_DATA=str(_data(tmp_path)))).returncode == 0
    (tmp_path / "shim.log").unlink()
    (tmp_path / "afile").write_text("x")
    proc = _run(OFFLINE, [str(bundle), str(tmp_path / "afile")], _env(tmp_path))
    assert proc.returncode == 2 and "cannot write to OUT_DIR" in proc.stderr
    assert not (tmp_path / "shim.log").exists()  # no pip install, no check
    assert _run(OFFLINE, [str(bundle), str(tmp_path / "out")], _env(tmp_path)).returncode == 0
    assert not list(tmp_path.glob("gpu-check-site.*")) and not list(tmp_path.glob("gpu-check.*"))
