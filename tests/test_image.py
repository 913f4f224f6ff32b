"""The container image, built and run for real.

buildah builds the unmodified Dockerfile (chroot isolation, vfs storage: no daemon, no
overlay; docker format, which keeps the HEALTHCHECK) FROM a stand-in for
python:3.11-slim-bookworm: Debian bookworm made with `debootstrap --variant=minbase` plus
Debian's python3, tagged with the Dockerfile's base name. The image then runs as its config
says (ENTRYPOINT, CMD, USER, ENV) in its own network namespace, chrooted into the mounted
image, against a throwaway PostgreSQL reached through its Unix socket; the test reads
/metrics, checks the user, runs the HEALTHCHECK command and stops the exporter with SIGTERM.

Opt-in, as it needs root and the package registries (about 2 minutes the first time, the
stand-in base is cached afterwards): VENZORY_IMAGE_TEST=1. .ci/run sets it where buildah
and debootstrap are installed. Build time and size: docs/monitoring.md, "Image".
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.demo import build_demo_database
from exporter.pgcluster import start_cluster
from venzory_fixture import PROBLEM_VIOLATIONS

REPO = Path(__file__).resolve().parent.parent
IMAGE = "localhost/venzory-db-exporter:test"
# Where buildah keeps its images (the stand-in base survives between runs) and the rootfs.
CACHE = Path(os.environ.get("VENZORY_IMAGE_CACHE", "/var/cache/venzory-db-exporter-test"))
# The stand-in for the official image: what debootstrap installs, and the machine's CA
# bundle (pip inside the build must trust what this machine trusts, a proxy's CA included).
STAND_IN_PACKAGES = "python3,python3-venv,python-is-python3"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SOCKET_DIR = "/run/postgresql"  # in the image: where the exporter finds the server's socket

pytestmark = [
    pytest.mark.slow,
    pytest.mark.db,
    pytest.mark.skipif(os.environ.get("VENZORY_IMAGE_TEST") != "1",
                       reason="builds the container image with buildah (root, network, ~2 min): "
                              "set VENZORY_IMAGE_TEST=1 (.ci/run does where buildah and debootstrap are installed)"),
]


def buildah(*args: str, timeout: float = 900) -> str:
    command = ["buildah", "--root", str(CACHE / "storage"), "--runroot", str(CACHE / "run"),
               "--storage-driver", "vfs", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def dockerfile_base() -> str:
    """The Dockerfile's `ARG BASE=...` as a fully qualified name (what FROM resolves to)."""
    line = next(line for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines()
                if line.startswith("ARG BASE="))
    name = line.split("=", 1)[1].strip()
    return name if "/" in name else f"docker.io/library/{name}"


def ensure_stand_in_base(name: str) -> None:
    """debootstrap the stand-in once; rebuilt only when its recipe or the CA bundle change."""
    recipe = hashlib.sha256(f"bookworm minbase {STAND_IN_PACKAGES}".encode() + HOST_CA.read_bytes()).hexdigest()[:16]
    label = f"venzory.stand-in={recipe}"
    listed = json.loads(buildah("images", "--json", "--filter", f"label={label}") or "[]")
    if any(name in image.get("names", []) for image in listed):
        return
    work = CACHE / "stand-in"
    shutil.rmtree(work, ignore_errors=True)
    (work / "rootfs").mkdir(parents=True)
    started = time.monotonic()
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={STAND_IN_PACKAGES}", "bookworm",
                    str(work / "rootfs")], check=True, capture_output=True, timeout=900)
    subprocess.run(["tar", "-C", str(work / "rootfs"), "-cf", str(work / "rootfs.tar"),
                    "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*", "."],
                   check=True, timeout=300)
    shutil.rmtree(work / "rootfs")
    shutil.copy(HOST_CA, work / "host-ca.crt")
    (work / "Containerfile").write_text(
        "FROM scratch\nADD rootfs.tar /\nCOPY host-ca.crt /etc/ssl/certs/host-ca.crt\n"
        "ENV PIP_CERT=/etc/ssl/certs/host-ca.crt\nCMD [\"python3\"]\n", encoding="utf-8")
    buildah("bud", "--isolation", "chroot", "--format", "docker", "--label", label, "-t", name, str(work))
    (work / "rootfs.tar").unlink()
    print(f"image test: stand-in base {name} made in {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="module")
def image() -> dict:
    """Build the Dockerfile; its config (docker format)."""
    ensure_stand_in_base(dockerfile_base())
    started = time.monotonic()
    buildah("bud", "--isolation", "chroot", "--format", "docker", "--pull=false", "--layers=false",
            "-t", IMAGE, str(REPO))
    seconds = time.monotonic() - started
    info = json.loads(buildah("inspect", "--type", "image", IMAGE))
    size = next(i["size"] for i in json.loads(buildah("images", "--json", IMAGE)))
    print(f"image test: {IMAGE} built in {seconds:.0f} s, {size}")
    return info["Docker"]["config"]


@pytest.fixture()
def rootfs(image):
    """The image mounted read-write in a working container (removed afterwards)."""
    container = buildah("from", "--pull=false", IMAGE).strip()
    try:
        yield Path(buildah("mount", container).strip())
    finally:
        buildah("rm", container)


def in_image(config: dict, rootfs: Path, argv: list[str], extra_env: dict[str, str] | None = None) -> list[str]:
    """argv run as the image would run it: chrooted into `rootfs`, as the image's USER, with
    exactly the image's environment (plus `extra_env`)."""
    env = list(config["Env"]) + [f"{k}={v}" for k, v in (extra_env or {}).items()]
    return ["chroot", f"--userspec={config['User']}", str(rootfs), "/usr/bin/env", "-i", *env, *argv]


def healthcheck(config: dict) -> list[str]:
    test = config["Healthcheck"]["Test"]
    assert test[0] == "CMD", test
    return test[1:]


def fetch(pid: int, url: str) -> tuple[int, str]:
    """GET from inside the network namespace of `pid`."""
    code = ("import sys, urllib.request, urllib.error\n"
            "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code)\n"
            "except OSError:\n print(0)\n")
    result = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", code, url],
                            capture_output=True, text=True, timeout=30)
    status, _, body = result.stdout.partition("\n")
    return int(status or 0), body


def test_image_config_keeps_healthcheck_user_and_command(image):
    assert image["User"] == "10001:10001"
    assert image["Entrypoint"] == ["venzory-db-exporter"]
    assert image["Cmd"] == ["run", "--config", "/etc/venzory-db-exporter/venzory.yaml"]
    command = healthcheck(image)
    assert command[:2] == ["python", "-c"] and "127.0.0.1:19187/healthz" in command[2]
    assert image["Healthcheck"]["Interval"] == 30 * 10**9


def test_image_runs_against_postgresql_as_non_root_and_stops_on_sigterm(image, rootfs, tmp_path):
    cluster = start_cluster()
    try:
        build_demo_database(cluster, "venzory")
        os.chmod(cluster.datadir.parent, 0o755)  # the socket's folder, for the image's user
        (rootfs / SOCKET_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        database_url = f"postgresql://{cluster.user}@/venzory?host={SOCKET_DIR}&port={cluster.port}"
        run = in_image(image, rootfs, image["Entrypoint"] + image["Cmd"], {"DATABASE_URL": database_url})
        # Its own network namespace: the image's default port 19187 and its HEALTHCHECK as
        # they are, whatever else listens on this machine; a private mount namespace for
        # the socket's bind mount.
        script = (f'ip link set lo up && mount --bind "$1" "$2{SOCKET_DIR}" && shift 2 && exec "$@"')
        log = (tmp_path / "exporter.log").open("w+")
        proc = subprocess.Popen(["unshare", "--net", "--mount", "sh", "-c", script, "sh",
                                 str(cluster.datadir.parent), str(rootfs), *run],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while fetch(proc.pid, "http://127.0.0.1:19187/readyz")[0] != 200:
                assert proc.poll() is None and time.monotonic() < deadline, _tail(log)
                time.sleep(0.5)
            status, body = fetch(proc.pid, "http://127.0.0.1:19187/metrics")
            assert status == 200
            assert 'venzory_db_up{database="venzory"} 1.0' in body, body[:2000]
            n = PROBLEM_VIOLATIONS["location_inventory_negative_quantity"]
            assert f'check="location_inventory_negative_quantity",database="venzory",severity="critical",' \
                   f'table="LocationInventory"}} {n}.0' in body

            # Not root: the process runs as the image's user.
            uids = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                        if line.startswith("Uid:")).split()[1:]
            assert set(uids) == {"10001"}, uids

            # The HEALTHCHECK command, in the container's network: healthy now ...
            check = subprocess.run(["nsenter", f"--net=/proc/{proc.pid}/ns/net",
                                    *in_image(image, rootfs, healthcheck(image))],
                                   capture_output=True, text=True, timeout=30)
            assert check.returncode == 0, check.stderr

            # ... and SIGTERM stops it cleanly within 5 s.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0, _tail(log)
        finally:
            proc.kill()
            proc.wait()
        # ... and unhealthy where nothing answers (a namespace of its own, nothing listening).
        down = subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                               *in_image(image, rootfs, healthcheck(image))],
                              capture_output=True, text=True, timeout=30)
        assert down.returncode != 0
    finally:
        cluster.destroy()


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]
