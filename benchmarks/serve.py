"""Load test of ``medplug serve`` on loopback: N requests, C concurrent, p50/p99 and errors.

The server runs as its own process (``medplug serve``, bearer token, default
limits, 2 worker threads) so client and server do not share a GIL; both share
this machine's cores. Each request uploads one generated study (a zipped DICOM
series or a NIfTI from ``medplug.sampledata``) and asks for the Prediction JSON.
The plugin is ``image-classifier`` (its model under ``$MEDPLUG_MODELS``, or its
demo configuration trained here), or the small ``bright-spot`` test plugin (a real
third-party distribution, installed into a temporary folder) with ``--plugin
bright-spot`` or when the image plugin is not installed.

    python benchmarks/serve.py [--requests 200] [--concurrency 8] [--plugin NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def study_payloads(cohort: Path) -> list[tuple[str, bytes, str]]:
    """(file name, bytes, kind) for each case: zipped DICOM for even cases, NIfTI for odd."""
    import csv

    payloads = []
    with (cohort / "manifest.csv").open() as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index % 2 == 0:
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                    for path in sorted((cohort / row["dicom_dir"]).iterdir()):
                        archive.write(path, f"series/{path.name}")
                payloads.append(("study.zip", buffer.getvalue(), "zip"))
            else:
                data = (cohort / row["nifti"]).read_bytes()
                payloads.append(("image.nii.gz", data, "nifti"))
    return payloads


def choose_plugin(
    requested: str | None, work: Path, cohort: Path
) -> tuple[str, Path, dict[str, str]]:
    """Plugin name, models folder and extra environment for the server process.

    ``image-classifier`` by default: the model under ``$MEDPLUG_MODELS`` if there is
    one, else its demo configuration trained here for two epochs (latency depends
    on the network, not on how well it was trained). ``bright-spot`` (a tiny test
    plugin) only when the image plugin is not installed or when asked for.
    """
    models_env = os.environ.get("MEDPLUG_MODELS")
    if requested not in (None, "bright-spot", "image-classifier"):
        if not models_env or not (Path(models_env) / requested).is_dir():
            sys.exit(f"no model folder for {requested!r} under $MEDPLUG_MODELS")
        return requested, Path(models_env), {}
    if requested in (None, "image-classifier") and importlib.util.find_spec("medplug_image"):
        if models_env and (Path(models_env) / "image-classifier").is_dir():
            return "image-classifier", Path(models_env), {}
        out = work / "models" / "image-classifier"
        subprocess.run(
            [sys.executable, "-m", "medplug.cli.main", "train", "image", "--data",
             str(cohort / "manifest.csv"), "--config", "demo", "--epochs", "2",
             "--out", str(out)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return "image-classifier", out.parent, {}
    if requested == "image-classifier":
        sys.exit("the image-classifier plugin (medplug_image) is not installed")
    sys.path.insert(0, str(ROOT / "tests"))
    from viewer_support import install_bright_spot, write_bright_spot_model

    site = install_bright_spot(work / "plugin")
    write_bright_spot_model(work / "models")
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return "bright-spot", work / "models", {"PYTHONPATH": pythonpath}


async def load(
    url: str, token: str, plugin: str, payloads: list, n_requests: int, concurrency: int
) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    semaphore = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=300, headers=headers) as client:

        async def one(index: int) -> None:
            name, data, _ = payloads[index % len(payloads)]
            async with semaphore:
                started = time.perf_counter()
                try:
                    response = await client.post(
                        f"/predict/{plugin}", files={"files": (name, data)}
                    )
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    return
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"HTTP {response.status_code}: {response.text[:120]}")

        await asyncio.gather(*(one(i) for i in range(n_requests)))
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--plugin", default=None)
    args = parser.parse_args()

    from medplug.sampledata import generate_cohort

    with tempfile.TemporaryDirectory(prefix="medplug-bench-serve-") as tmp:
        work = Path(tmp)
        cohort = generate_cohort(work / "cohort", n_cases=args.cases, seed=0)
        payloads = study_payloads(cohort)
        plugin, models, extra_env = choose_plugin(args.plugin, work, cohort)
        token = secrets.token_urlsafe(24)
        port = free_port()
        env = dict(os.environ, MEDPLUG_SERVE_TOKEN=token, **extra_env)
        command = [
            sys.executable,
            "-m",
            "medplug.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--models",
            str(models),
            "--workers",
            str(args.workers),
        ]
        server = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit("server did not start")
                time.sleep(0.2)
            # Warm-up: load the model once so the first timed request does not pay for it.
            asyncio.run(load(url, token, plugin, payloads, 2, 1))
            single, single_errors = asyncio.run(load(url, token, plugin, payloads, 10, 1))
            load_average = os.getloadavg()[0]
            rss_before = psutil.Process(server.pid).memory_info().rss
            started = time.perf_counter()
            latencies, errors = asyncio.run(
                load(url, token, plugin, payloads, args.requests, args.concurrency)
            )
            errors = single_errors + errors
            wall = time.perf_counter() - started
            rss_after = psutil.Process(server.pid).memory_info().rss
        finally:
            server.terminate()
            server.wait(timeout=30)

    zip_mb = statistics.mean(len(d) for _, d, k in payloads if k == "zip") / 1e6
    nifti_mb = statistics.mean(len(d) for _, d, k in payloads if k == "nifti") / 1e6
    rows = [
        ("plugin", plugin),
        ("requests / concurrency", f"{args.requests} / {args.concurrency}"),
        ("server worker threads", str(args.workers)),
        (
            "payloads",
            f"{len(payloads)} studies: zipped DICOM ({zip_mb:.2f} MB), "
            f"NIfTI ({nifti_mb:.2f} MB), alternating",
        ),
        ("errors", str(len(errors))),
        (
            "latency, one request at a time (median of 10)",
            f"{1000 * statistics.median(single):.0f} ms",
        ),
        ("p50 latency", f"{1000 * statistics.median(latencies):.0f} ms"),
        ("p99 latency", f"{1000 * percentile(latencies, 99):.0f} ms"),
        ("max latency", f"{1000 * max(latencies):.0f} ms"),
        ("throughput", f"{args.requests / wall:.1f} requests/s ({wall:.1f} s wall)"),
        ("server RSS before / after", f"{rss_before / 1e6:.0f} MB / {rss_after / 1e6:.0f} MB"),
    ]
    machine = (
        f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} logical "
        f"CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
        f"Python {platform.python_version()}; client and server on the same machine; "
        f"1-min load average {load_average:.1f} before the timed run (cores shared with other work)"
    )
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    text = (
        "# medplug serve load test\n\n"
        "`make bench-serve` (`benchmarks/serve.py`): POST /predict over loopback to a "
        "`medplug serve` process with bearer auth and default limits.\n\n"
        f"Machine: {machine}.\n\n| measure | value |\n|---|---|\n{table}\n"
    )
    if errors:
        text += "\nErrors (first 5):\n\n" + "\n".join(f"- {e}" for e in errors[:5]) + "\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
