"""``tuwen index --ray``: the Ray runner on a local Ray instance this module starts (127.0.0.1, 2 CPUs)
and stops. It must give what the local runner gives, survive a killed worker, and leave the live
generation alone when it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
from processes import free_port

from indexer.build import index_corpus
from indexer.encode.mapper import EncodeMapper
from indexer.encode.ray_runner import RayRunner
from indexer.index_files import CURRENT, current_generation_name, load_generation
from indexer.manifest import Manifest

ROOT = Path(__file__).resolve().parent.parent
KILL_MARKER = "TUWEN_TEST_KILL_MARKER"
BATCH = 16  # several batches per set, so a worker can die between two of them
TUWEN = str(Path(sys.executable).parent / "tuwen")
SETS = ("image_candidates", "text_candidates", "text_queries", "image_queries", "bank_texts", "bank_images")


class DyingMapper(EncodeMapper):
    """The real mapper, whose actor process kills itself (SIGKILL) on its second text batch, once
    per test (the marker file says it already happened): a worker lost mid-run."""

    calls = 0

    def encode_sources(self, kind, sources):
        DyingMapper.calls += 1
        marker = Path(os.environ[KILL_MARKER])
        if DyingMapper.calls == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().encode_sources(kind, sources)


class FailingMapper(EncodeMapper):
    """The real mapper, whose text batches raise: a run that fails half-way."""

    def encode_sources(self, kind, sources):
        raise RuntimeError("the disk went away")


def with_mapper(mapper_class: type[EncodeMapper]):
    """A runner that hands the Ray runner a ``mapper_class`` built from the same arguments."""

    def runner(sets, mapper, writer, say):
        RayRunner("auto")(sets, mapper_class(**mapper.kwargs), writer, say)

    return runner


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    marker = tmp_path_factory.mktemp("ray") / "killed"
    # The cluster's own processes (and the workers of other drivers) get no PYTHONPATH, as after
    # `ray start`; this driver's workers get it through the runtime_env below.
    python_path = os.environ.pop("PYTHONPATH", None)
    try:
        _init_local_cluster(marker)
    finally:
        if python_path is not None:
            os.environ["PYTHONPATH"] = python_path
    yield marker
    ray.shutdown()


def _init_local_cluster(marker: Path) -> None:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", KILL_MARKER: str(marker)}
        },
    )


def _build(settings, runner=None) -> Path:
    kwargs = {"runner": runner} if runner else {}
    gen = index_corpus(
        settings=settings,
        model="tiny",
        precision="fp32",
        batch_size=BATCH,
        workers=0,
        progress=False,
        reuse=False,  # encode every row: the runners are compared, not the saved vectors
        **kwargs,
    )
    return gen


def _assert_same_generation(local: Path, other: Path) -> None:
    a, b = load_generation(local), load_generation(other)
    assert set(a.sets) == set(b.sets) == set(SETS)  # the four sets and QB-Norm's bank
    for name, vs in a.sets.items():
        assert b.sets[name].ids == vs.ids, name
        cosines = np.einsum("ij,ij->i", np.asarray(vs.vectors), np.asarray(b.sets[name].vectors))
        assert cosines.min() >= 0.9999, (name, float(cosines.min()))
        if vs.index is not None:
            assert (type(b.sets[name].index), b.sets[name].index.ntotal) == (type(vs.index), vs.index.ntotal)
    ma, mb = Manifest.read(local), Manifest.read(other)
    assert ma.model_dump(exclude={"created_at"}) == mb.model_dump(exclude={"created_at"})
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in other.iterdir())


def test_ray_build_matches_the_local_build(ray_local, ingested, tmp_path):
    local = _build(ingested)
    on_ray = _build(ingested, RayRunner("auto"))
    assert on_ray != local and current_generation_name(ingested.index_dir) == on_ray.name
    _assert_same_generation(local, on_ray)


def test_a_worker_killed_mid_run_is_replaced_and_the_build_completes(ray_local, ingested):
    local = _build(ingested)
    on_ray = _build(ingested, with_mapper(DyingMapper))
    assert ray_local.exists(), "the encoding actor was never killed"
    _assert_same_generation(local, on_ray)


def test_a_failed_run_leaves_the_live_generation_and_no_leftover(ray_local, ingested):
    live = _build(ingested)
    pointer = (ingested.index_dir / CURRENT).read_text()
    with pytest.raises(Exception, match="the disk went away"):
        _build(ingested, with_mapper(FailingMapper))
    assert (ingested.index_dir / CURRENT).read_text() == pointer == live.name
    assert not list(ingested.index_dir.glob(".tmp-*"))


def test_an_unreachable_ray_address_is_one_clear_line(tmp_path):
    port = free_port()  # nobody listens on it
    for address, message in [(f"127.0.0.1:{port}", "cannot reach 127.0.0.1"), ("nonsense", "expected auto")]:
        done = subprocess.run(
            [TUWEN, "index", "--home", str(tmp_path), "--model", "tiny", "--ray", address],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_tuwen_index_on_a_running_cluster_by_its_address(ray_local, ingested):
    """The command line end to end on a cluster it did not start (this module's, whose processes have
    no PYTHONPATH, as after `ray start`: tuwen's code reaches the workers as py_modules from the
    driver): `tuwen index --ray 127.0.0.1:PORT` joins it as a second driver."""
    address = "127.0.0.1:" + ray.get_runtime_context().gcs_address.rpartition(":")[2]  # it listens on all
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUWEN_")) and k != "PYTHONPATH"}
    before = current_generation_name(ingested.index_dir)
    done = subprocess.run(
        [TUWEN, "index", "--home", str(ingested.home), "--model", "tiny", "--ray", address],
        env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray: 1 node(s), 2 CPU, 0 GPU" in done.stderr
    after = current_generation_name(ingested.index_dir)
    assert after is not None and after != before
    manifest = Manifest.read(ingested.index_dir / after)
    assert (manifest.model_spec, sorted(manifest.sets)) == ("tiny", sorted(SETS))
    assert all(count > 0 for count in manifest.counts.values())
