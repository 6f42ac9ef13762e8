"""A bounded load test of the web demo on 127.0.0.1 (issue: robustness round 2, the demo server).

Starts `turbosr demo` as a separate process with a TMPDIR of its own, sends one small warm-up upscale (the model loads on first use), then one large upscale and, while it runs,
``--requests`` small ones at once through ``POST /api/upscale``, and loads the page itself every
``--page-every`` seconds until every request has its answer. Then it stops the server with Ctrl-C (SIGINT) and
lists what is left in that TMPDIR. Reported: how long the page took to answer (median and worst), the status
codes (200 ran, 503 queue full with Retry-After; a 500 would be a bug), the server's resident memory at start,
at its peak and after the load, and the files left behind.

    python benchmarks/demo_load.py --model x4 --big 512 --small 48 --requests 20 --out docs/benchmarks/demo_load

Only loopback traffic, bounded in count (1 + requests + one page load per interval) and in time (--timeout).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

SCRIPT = "benchmarks/demo_load.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def photo_png(size: int, seed: int) -> bytes:
    """A size x size RGB PNG with smooth content (time and memory do not depend on it)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, size // 16), max(2, size // 16), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def post(url: str, png: bytes, timeout: float) -> tuple[int, float]:
    """(status, seconds) of one multipart POST /api/upscale."""
    boundary = "turbosrloadtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "api/upscale", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    except OSError:  # no answer in time, connection refused or reset: counted as 0
        status = 0
    return status, time.perf_counter() - start


def page_seconds(url: str, timeout: float) -> float | None:
    """Seconds to load the page (None: no 200 within ``timeout``)."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as page:
            page.read()
            return time.perf_counter() - start if page.status == 200 else None
    except OSError:
        return None


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="x4", help="built-in name or model folder served by the demo")
    parser.add_argument("--big", type=int, default=512, help="side of the large job's input (px)")
    parser.add_argument("--small", type=int, default=48, help="side of the small jobs' inputs (px)")
    parser.add_argument("--requests", type=int, default=20, help="small requests sent at once (at most 100)")
    parser.add_argument("--page-every", type=float, default=0.5, help="seconds between page loads")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the whole test may take")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server (OMP_NUM_THREADS)")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if not 1 <= args.requests <= 100:
        raise SystemExit("--requests must be in 1..100 (the test stays bounded)")
    from turbosr.reports import command_line, markdown_table, software_versions, write_json, write_text

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + args.timeout
    with tempfile.TemporaryDirectory() as scratch:
        server_tmp = Path(scratch, "server-tmp")
        server_tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(server_tmp), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": str(args.threads)}
        server = subprocess.Popen([sys.executable, "-m", "turbosr", "demo", "--model", args.model, "--port",
                                   str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while page_seconds(url, 5) is None:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the demo did not start: {server.stderr.read().strip()[-500:]}")
                time.sleep(0.5)
            idle_page = [page_seconds(url, 30) for _ in range(5)]
            warm_up = post(url, photo_png(args.small, 0), max(1.0, deadline - time.monotonic()))[0]
            if warm_up != 200:
                raise SystemExit(f"the warm-up upscale answered {warm_up}")
            start_memory = memory_kib(server.pid)  # the model loaded, one job done

            answers: list[tuple[str, int, float]] = []
            lock = threading.Lock()

            def send(kind: str, png: bytes) -> None:
                status, seconds = post(url, png, max(1.0, deadline - time.monotonic()))
                with lock:
                    answers.append((kind, status, seconds))

            big = threading.Thread(target=send, args=("large", photo_png(args.big, 0)))
            big.start()
            time.sleep(1.0)  # the large job is running: now the small ones arrive together
            smalls = [threading.Thread(target=send, args=("small", photo_png(args.small, i + 1)))
                      for i in range(args.requests)]
            for thread in smalls:
                thread.start()
            loaded: list[float | None] = []
            while any(t.is_alive() for t in [big, *smalls]) and time.monotonic() < deadline:
                loaded.append(page_seconds(url, 30))
                time.sleep(args.page_every)
            for thread in [big, *smalls]:
                thread.join(max(0.0, deadline - time.monotonic()))
            time.sleep(2.0)  # background deletions run after each response
            after_memory = memory_kib(server.pid)
            left_while_running = sorted(str(p.relative_to(server_tmp)) for p in server_tmp.rglob("*") if p.is_file())
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        left_after = sorted(str(p.relative_to(server_tmp)) for p in server_tmp.rglob("*") if not p.is_dir())
        folders_after = sorted(str(p.relative_to(server_tmp)) for p in server_tmp.rglob("*") if p.is_dir())

    statuses: dict[str, dict[int, int]] = {}
    for kind, status, _ in answers:
        statuses.setdefault(kind, {}).setdefault(status, 0)
        statuses[kind][status] += 1
    page = [s for s in loaded if s is not None]
    row = {
        "model": args.model, "big": args.big, "small": args.small, "requests": args.requests,
        "page_loads": len(loaded), "page_failures": len(loaded) - len(page),
        "page_median_s": statistics.median(page) if page else None, "page_worst_s": max(page) if page else None,
        "idle_page_median_s": statistics.median([s for s in idle_page if s is not None]),
        "large_seconds": next((s for k, _, s in answers if k == "large"), None),
        "statuses": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in statuses.items()},
        "server_errors": sum(1 for _, status, _ in answers if status >= 500 and status != 503),
        "unanswered": 1 + args.requests - len(answers) + sum(1 for _, status, _ in answers if status == 0),
        "rss_start_mib": start_memory["VmRSS"] / 1024, "rss_peak_mib": after_memory["VmHWM"] / 1024,
        "rss_after_mib": after_memory["VmRSS"] / 1024,
        "files_left_while_running": left_while_running, "left_after_shutdown": left_after,
        "folders_after_shutdown": folders_after,
    }
    command = command_line(SCRIPT, argv)
    versions = ", ".join(f"{k} {v}" for k, v in software_versions().items())
    header = [f"# Web demo under load on 127.0.0.1 ({args.out.name})", "",
              f"- `{command}`",
              f"- One {args.big}² upscale, then {args.requests} upscales of {args.small}² sent at once while it runs "
              f"(the API queue holds 8 waiting; more get 503 + Retry-After); the page loaded every "
              f"{args.page_every} s until every request had its answer. Model `{args.model}`, server on "
              f"{args.threads} torch threads.",
              f"- Machine: {platform.machine()} CPU, {os.cpu_count()} cores; {versions}.", ""]
    status_text = "; ".join(f"{kind}: " + ", ".join(f"{code} x{n}" for code, n in codes.items())
                            for kind, codes in row["statuses"].items())
    table = markdown_table(["what", "measured"], [
        ["page load while idle, median (s)", f"{row['idle_page_median_s']:.3f}"],
        [f"page load under load, median / worst of {len(loaded)} (s)",
         f"{row['page_median_s']:.3f} / {row['page_worst_s']:.3f}" if page else "-"],
        ["page loads that failed", row["page_failures"]],
        [f"the {args.big}² upscale (s)", f"{row['large_seconds']:.1f}" if row["large_seconds"] else "-"],
        ["answers by status", status_text],
        ["5xx other than 503 / unanswered", f"{row['server_errors']} / {row['unanswered']}"],
        ["server RSS after a warm-up job / peak / after the load (MiB)",
         f"{row['rss_start_mib']:.0f} / {row['rss_peak_mib']:.0f} / {row['rss_after_mib']:.0f}"],
        ["files in the server's TMPDIR after the load (before shutdown)", len(left_while_running)],
        ["files left in the server's TMPDIR after Ctrl-C", len(left_after)],
        ["empty folders left there (made by the libraries, not the demo)", ", ".join(folders_after) or "none"],
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out.with_suffix(".json"), {"commands": [command], "versions": software_versions(), "rows": [row]})
    write_text(args.out.with_suffix(".md"), header + table)
    print("\n".join(header + table))
    return 1 if row["server_errors"] or row["unanswered"] or left_after else 0


if __name__ == "__main__":
    sys.exit(main())
