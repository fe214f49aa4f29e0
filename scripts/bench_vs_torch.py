#!/usr/bin/env python3
"""mpsnn against the PyTorch CPU SNN reference, run alternately on the same machine.

For every configuration (model x mode x threads) it runs `mpsnn bench` and the reference
`torch_snn_bench.py` one after the other, `--rounds` times, and reports the medians of images/s,
the median of the per-round ratios (mpsnn / PyTorch; runs made back to back see the same machine
load), peak RSS, the load average around each run and the share of CPU time the hypervisor
stole during it (a shared VM's neighbours show there, not in the load average). The table goes to stdout and, with
`--write`, into docs/perf.md and README.md between the `<!-- bench-table -->` markers.

Called by scripts/bench_vs_torch.sh, which builds mpsnn and finds (or installs) PyTorch.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

MODELS = {  # mpsnn model -> reference net
    "mnist-cnn": "mnist_cnn",
    "resnet19": "resnet19_paper",
    "vgg-small": "cifar_vgg_small",
}


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_times():
    """(stolen, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def stolen_share(before, after):
    """Fraction of the CPU time between two `cpu_times` readings that was stolen.

    >>> stolen_share((100, 1000), (130, 1100))
    0.3
    >>> stolen_share(None, (1, 2)) is None, stolen_share((5, 10), (5, 10)) is None
    (True, True)
    """
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def last_json(out):
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in output:\n" + out[-2000:])


def run(cmd, env=None):
    load0, times0 = loadavg(), cpu_times()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    r = last_json(p.stdout)
    r["_load"] = (load0, loadavg())
    r["_steal"] = stolen_share(times0, cpu_times())
    return r


def cpu_model():
    """The CPU's model name with its x86 family and model: a VM's "AMD EPYC" alone does not
    tell Zen 4 (family 25, AVX-512 on 256-bit units) from Zen 5 (family 26, 512-bit)."""
    try:
        fields = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if "model name" in fields:
            name = fields["model name"]
            if "cpu family" in fields and "model" in fields:
                name += f", family {fields['cpu family']} model {fields['model']}"
            return name
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def percent(share):
    """A share as a whole percentage, or a dash where there was no reading.

    >>> percent(0.304), percent(None)
    ('30 %', '—')
    """
    return "—" if share is None else f"{100 * share:.0f} %"


def med_or_none(values):
    """The median of the values that are not None (None if there are none).

    >>> med_or_none([0.1, None, 0.3, 0.2]), med_or_none([None])
    (0.2, None)
    """
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpsnn", required=True, help="path of the mpsnn binary")
    ap.add_argument("--python", required=True, help="python with torch")
    ap.add_argument("--ref", required=True, help="path of torch_snn_bench.py")
    ap.add_argument("--models", default="mnist-cnn,resnet19")
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("-T", type=int, default=4)
    ap.add_argument("-B", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--heavy-rounds", type=int, default=2, help="rounds for resnet19 (slow)")
    ap.add_argument("--warmup", type=int, default=None, help="default: 2 (resnet19: 1)")
    ap.add_argument("--iters", type=int, default=None, help="default: 7 (resnet19: 2)")
    ap.add_argument("--write", action="store_true", help="update docs/perf.md and README.md")
    ap.add_argument("--json-out", default=None, help="append raw results as JSON lines here")
    ap.add_argument("--from-json", default=None,
                    help="only render the table from a --json-out file of an earlier run")
    a = ap.parse_args()
    if a.from_json:
        raw = [json.loads(line) for line in open(a.from_json) if line.strip()]
        a.models = ",".join(dict.fromkeys(r["model"] for r in raw))
        a.modes = ",".join(dict.fromkeys(r["mode"] for r in raw))
        a.threads = ",".join(str(t) for t in dict.fromkeys(r["threads"] for r in raw))

    torch_env = dict(os.environ)
    for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        torch_env.pop(v, None)
    rows = []
    for model in a.models.split(","):
        heavy = model.startswith("resnet")
        warm = a.warmup if a.warmup is not None else (1 if heavy else 2)
        iters = a.iters if a.iters is not None else (2 if heavy else 7)
        for mode in a.modes.split(","):
            for th in [int(t) for t in a.threads.split(",")]:
                ours, theirs = [], []
                if a.from_json:
                    pick = [r for r in raw if (r["model"], r["mode"], r["threads"]) == (model, mode, th)]
                    ours = [r for r in pick if r["who"] == "mpsnn"]
                    theirs = [r for r in pick if r["who"] == "torch"]
                    if not ours:
                        continue
                for rnd in range(0 if a.from_json else (a.heavy_rounds if heavy else a.rounds)):
                    m = run([a.mpsnn, "bench", "--model", model, "-T", str(a.T),
                             "--batch-size", str(a.B), "--threads", str(th), "--mode", mode,
                             "--warmup", str(warm), "--iters", str(iters)])
                    t = run([a.python, a.ref, "--net", MODELS[model], "-T", str(a.T),
                             "-B", str(a.B), "--threads", str(th), "--mode", mode,
                             "--no-flops", "--warmup", str(warm), "--iters", str(iters)],
                            env=torch_env)
                    ours.append(m)
                    theirs.append(t)
                    print(f"{model} {mode} {th}t round {rnd + 1}: mpsnn {m['images_per_s']:.1f} "
                          f"img/s ({m['peak_rss_mb']:.0f} MB), torch {t['images_per_s']:.1f} img/s "
                          f"({t['peak_rss_mb']:.0f} MB), load {m['_load'][0]:.1f}-{t['_load'][1]:.1f}, "
                          f"steal {percent(m['_steal'])}/{percent(t['_steal'])}",
                          file=sys.stderr, flush=True)
                    if a.json_out:
                        with open(a.json_out, "a") as f:
                            for who, r in (("mpsnn", m), ("torch", t)):
                                f.write(json.dumps({"who": who, "model": model, "mode": mode,
                                                    "threads": th, **r}) + "\n")
                med = statistics.median
                dens = ours[-1].get("conv_spike_density") or {}
                rows.append({
                    "model": model, "mode": mode, "threads": th,
                    "ours": med(r["images_per_s"] for r in ours),
                    "theirs": med(r["images_per_s"] for r in theirs),
                    "ratio": med(m["images_per_s"] / t["images_per_s"] for m, t in zip(ours, theirs)),
                    "rss_ours": max(r["peak_rss_mb"] for r in ours),
                    "rss_theirs": max(r["peak_rss_mb"] for r in theirs),
                    "load": med(x for r in ours + theirs for x in r["_load"]),
                    # Older --json-out files have no steal readings.
                    "steal": med_or_none(r.get("_steal") for r in ours + theirs),
                    "density": (min(dens.values()), max(dens.values())) if dens else None,
                    "cpu": med(r.get("cpu_seconds_per_step") or float("nan") for r in ours),
                    "wall": med(r["step_seconds_median"] for r in ours),
                })
    # A table rendered from an earlier run's JSON carries that run's time (the file's last write).
    when = (datetime.datetime.fromtimestamp(os.path.getmtime(a.from_json))
            if a.from_json else datetime.datetime.now())
    date = when.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"Measured {date} on {os.cpu_count()} vCPUs of {cpu_model()} ({platform.system()} "
        f"{platform.release()}), T = {a.T}, B = {a.B}; mpsnn and PyTorch alternate, {a.rounds} "
        f"rounds per row ({a.heavy_rounds} for ResNet-19), medians; load avg = the machine's "
        f"1-minute load average around the runs (2 = both cores busy); steal = the share of "
        f"the VM's CPU time the hypervisor took during the runs (`/proc/stat`). "
        f"`scripts/bench_vs_torch.sh` reruns it.",
        "",
        "| model | mode | threads | mpsnn img/s | PyTorch img/s | ratio | mpsnn peak RSS MB "
        "| PyTorch peak RSS MB | RSS ratio | conv input density | mpsnn s/step wall (CPU) "
        "| load avg | steal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = "—" if r["density"] is None else f"{r['density'][0]:.2f}–{r['density'][1]:.2f}"
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['threads']} | {r['ours']:.1f} | {r['theirs']:.1f} "
            f"| **{r['ratio']:.2f}×** | {r['rss_ours']:.0f} | {r['rss_theirs']:.0f} "
            f"| {r['rss_ours'] / r['rss_theirs']:.2f} | {d} | {r['wall']:.3g} ({r['cpu']:.3g}) "
            f"| {r['load']:.1f} | {percent(r['steal'])} |")
    scaling = []
    for model in a.models.split(","):
        for mode in a.modes.split(","):
            by = {r["threads"]: r["ours"] for r in rows if r["model"] == model and r["mode"] == mode}
            if 1 in by and 2 in by:
                scaling.append(f"{model} {mode}: {by[2] / by[1]:.2f}×")
    if scaling:
        lines += ["", "mpsnn thread scaling (2 threads / 1 thread, medians): " + ", ".join(scaling) + "."]
    table = "\n".join(lines)
    print(table)
    if a.write:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for rel in ("docs/perf.md", "README.md"):
            path = os.path.join(root, rel)
            text = open(path).read()
            new, n = re.subn(r"<!-- bench-table -->.*?<!-- /bench-table -->",
                             "<!-- bench-table -->\n" + table + "\n<!-- /bench-table -->",
                             text, flags=re.S)
            if n == 0:
                print(f"no bench-table markers in {rel}; not written", file=sys.stderr)
            else:
                open(path, "w").write(new)


if __name__ == "__main__":
    main()
