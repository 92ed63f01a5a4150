#!/usr/bin/env python3
"""bench/report.py: turns the raw measurements of bench/run.sh into
perf/bench-latest.json, perf/bench-latest.md and perf/bench-latest-*.svg
(gnuplot), and prints the summary tables and the PASS/MISS lines.

    python3 bench/report.py --work DIR --out perf/bench-latest [--natgw BIN] [--xdpfwd BIN]

DIR is run.sh's work directory: results.jsonl (one JSON object per
measurement), meta/ (settings, configs, load) and the files some
measurements point to (slab snapshots, natgw stats). Old outputs with the
same prefix are removed first, so the report always describes one run.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys

LABELS = {
    "ceiling": "generator ceiling (no gateway)",
    "base": "generator + sink only (no gateway)",
    "route": "kernel routing, no NAT (floor)",
    "kernel": "kernel nftables masquerade + conntrack",
    "natgw": "natgw AF_XDP, masquerade",
    "raw": "natgw AF_XDP, accept-all (raw forwarding)",
    "tun": "natgw TUN, masquerade",
    "xdpfwd": "minimal AF_XDP forwarder (bench/xdpfwd, no NAT)",
    "natgw2q": "natgw AF_XDP, 2 queues per interface",
    "natgw2qrt": "natgw AF_XDP, 2 queues per interface, both real-time workers on the gateway's one CPU",
    "natgwc": "natgw AF_XDP with receive coalescing (afxdp.coalesce_us), masquerade",
    "natgwrt": "natgw AF_XDP with its workers at real-time priority (afxdp.rt_priority), masquerade",
    "natgwb": "natgw AF_XDP, masquerade, second build (NATGW_B)",
    "lbdnat": "natgw AF_XDP, client -> DNAT rule -> server (+ masquerade)",
    "lb": "natgw AF_XDP, client -> virtual service (rr, 2 real servers) -> server (+ masquerade)",
}
SHORT = {
    "ceiling": "ceiling", "base": "base", "route": "kernel route", "kernel": "kernel NAT",
    "natgw": "natgw AF_XDP", "raw": "natgw raw", "tun": "natgw TUN", "xdpfwd": "xdpfwd",
    "natgw2q": "natgw 2 queues", "natgw2qrt": "natgw 2 real-time queues, 1 CPU", "natgwc": "natgw coalescing", "natgwrt": "natgw real-time", "natgwb": "natgw (B build)", "lbdnat": "natgw DNAT rule", "lb": "natgw LB service",
}
ORDER = ["ceiling", "base", "route", "kernel", "natgw", "natgwb", "natgwc", "natgwrt", "raw", "tun", "xdpfwd", "natgw2q", "natgw2qrt", "lbdnat", "lb"]
FLOW_ORDER = ["1", "1k", "100k", "1M"]


def sh(cmd, default=""):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        s = (out.stdout or out.stderr).strip()
        return s if s else default
    except Exception:
        return default


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def kfmt(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    return f"{v / 1e3:.0f}k"


def ffmt(v, nd=1, unit=""):
    return "-" if v is None else f"{v:.{nd}f}{unit}"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def mode_order(m):
    return ORDER.index(m) if m in ORDER else len(ORDER)


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def text_table(header, rows):
    cols = [header] + [[str(c).replace("**", "") for c in r] for r in rows]
    w = [max(len(r[i]) for r in cols) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in cols]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def disturbed(runs):
    return sorted({r["rep"] for r in runs if r.get("disturbed")})


class Report:
    def __init__(self, work, out, natgw, xdpfwd):
        self.work, self.out, self.natgw, self.xdpfwd = work, out, natgw, xdpfwd
        self.runs = []
        with open(os.path.join(work, "results.jsonl")) as f:
            for line in f:
                line = line.strip()
                if line:
                    r = json.loads(line)
                    if "flows" in r:
                        r["flows"] = str(r["flows"])  # a label: 1, 1k, 100k, 1M
                    self.runs.append(r)
        self.settings = json.loads(read(os.path.join(work, "meta", "settings.json"), "{}"))
        self.quick = self.settings.get("quick", False)
        self.targets = []
        self.summary = {}
        self.cpu_invalid = {}     # rate -> why the machine-wide CPU per packet is not valid
        self.gw_cpu_invalid = {}  # rate -> why the gateway-CPU figure is not valid
        self.notes = []

    def meta(self, name, default=""):
        return read(os.path.join(self.work, "meta", name), default)

    def sel(self, fig, **kw):
        return [r for r in self.runs if r.get("fig") == fig and "error" not in r
                and all(r.get(k) == v for k, v in kw.items())]

    def errors(self):
        return [r for r in self.runs if "error" in r]

    # ---------------------------------------------------------------- figure 1
    def fig_pps(self):
        rows = {}
        for r in self.sel("pps", figno=1):
            rows.setdefault((r["mode"], r["flows"]), []).append(r)
        ceil = {f: med([r["pps"] for r in v]) for (m, f), v in rows.items() if m == "ceiling"}
        ceil_any = ceil.get("1k") or (max(ceil.values()) if ceil else None)
        out = []
        for (m, f), v in sorted(rows.items(), key=lambda kv: (FLOW_ORDER.index(kv[0][1]) if kv[0][1] in FLOW_ORDER else 9, mode_order(kv[0][0]))):
            pps = [r["pps"] for r in v]
            sent = med([r["sent_pps"] for r in v])
            d = med(pps)
            c = ceil.get(f, ceil_any)
            notes = []
            gb = m != "ceiling" and c and d >= 0.9 * c
            if gb:
                notes.append("generator-bound (within 10% of the ceiling)")
            cpu1 = med([r["cpu1"] for r in v])
            loss = max(0.0, (sent - d) / sent) if sent else None
            if m not in ("ceiling",) and loss is not None and loss < 0.02 and cpu1 is not None and cpu1 < 90 and not gb:
                notes.append(f"CPU{self.settings.get('gw_cpu', 1)} {cpu1:.0f}% busy, no loss: paced by CPU{self.settings.get('gen_cpu', 0)}")
            unt = sum(r.get("untranslated", 0) for r in v)
            if m not in ("ceiling", "route", "xdpfwd", "raw") and unt:
                notes.append(f"{unt} frames arrived untranslated")
            dist = disturbed(v)
            if dist:
                notes.append(f"others' builds ran during rep {','.join(map(str, dist))}")
            if any(r.get("generator_alive") is False for r in v):
                notes.append("trafgen died during a run")
            out.append({
                "mode": m, "flows": f, "nflows": v[0]["nflows"], "pps_median": d, "pps_min": min(pps), "pps_max": max(pps),
                "pps_all": pps, "sent_pps_median": sent, "loss": loss,
                "cpu0_median": med([r["cpu0"] for r in v]), "cpu1_median": cpu1,
                "flows_seen": v[-1].get("flows_seen"), "generator_bound": bool(gb), "notes": notes,
                "verify": next((r["verify"] for r in v if r.get("verify")), ""), "reps": len(v),
            })
        self.summary["pps"] = out
        ratios = {}
        for f in FLOW_ORDER:
            n = next((r for r in out if r["mode"] == "natgw" and r["flows"] == f), None)
            k = next((r for r in out if r["mode"] == "kernel" and r["flows"] == f), None)
            if n and k:
                ratios[f] = ratio(n["pps_median"], k["pps_median"])
        self.summary["pps_ratio_natgw_kernel"] = ratios
        return out

    def get_pps(self, mode, flows="1k", figno=None):
        for r in self.summary.get("pps", []) + self.summary.get("queues", []):
            if r["mode"] == mode and r["flows"] == flows:
                return r
        return None

    # ---------------------------------------------------------------- figures 2 + 3
    @staticmethod
    def _per_packet(v, base, key, by_rep=False):
        """Per-run (key(mode) - key(base of the same rep and rate)) / rx_pps, ns per packet
        (with by_rep, as {rep: value})."""
        out = {}
        for r in v:
            b = base.get((r["rep"], r["rate"]))
            if r["mode"] != "base" and b and r.get("rx_pps", 0) > 0 and r.get(key) is not None and b.get(key) is not None:
                out[r["rep"]] = (r[key] - b[key]) / r["rx_pps"]
        return out if by_rep else list(out.values())

    @staticmethod
    def paired_verdict(a, b):
        """PASS/MISS for "a <= b" from repetitions measured side by side ({rep: value} each,
        interleaved in one run): True when a <= b in all but at most a fifth of the pairs, False
        when a > b in all but at most a fifth, "?" when the pairs split (the difference is
        within run-to-run noise: a median comparison would flip between runs). None with
        fewer than 3 pairs. Returns (verdict, pairs where a <= b, pairs)."""
        reps = sorted(set(a) & set(b))
        n = len(reps)
        if n < 3:
            return None, 0, n
        wins = sum(1 for r in reps if a[r] <= b[r])
        if wins >= n - n // 5:
            return True, wins, n
        if wins <= n // 5:
            return False, wins, n
        return "?", wins, n

    NATGW_MODES = ("natgw", "raw", "tun", "natgw2q", "natgw2qrt", "natgwc", "natgwrt", "natgwb")

    @staticmethod
    def _dedup_gw(r):
        """The gateway CPU of a natgw run without the double count: CPU 1's irq + softirq plus
        natgw's utime + stime counts a softirq tick taken in a natgw thread's context twice
        (this kernel charges it to the CPU's softirq and to the thread's stime, see
        account_system_index_time), and all of it lies within CPU 1's whole busy time, so the
        smaller of the two is an upper bound of the true figure. The raw sum stays in
        gw_cpu_sum_ns_per_s."""
        if r.get("mode") not in Report.NATGW_MODES or "gw_cpu_sum_ns_per_s" in r:
            return r
        r = dict(r)
        g, c1 = r.get("gw_cpu_ns_per_s"), r.get("cpu1_busy_ns_per_s")
        r["gw_cpu_sum_ns_per_s"] = g
        if g is not None and c1 is not None:
            r["gw_cpu_ns_per_s"] = min(g, c1)
        return r

    @staticmethod
    def _precise(r):
        """Runs of a run.sh that recorded the precise measure (gw_work_ns_per_s, from CPU idle
        time, see precise_now in run.sh) take it as the gateway and machine-wide CPU; CPU 1's
        tick-based busy time (cpu1_busy_ns_per_s) stays beside it, and every tick figure stays in
        the raw results. Older runs keep the tick-based measure, without the double count
        (_dedup_gw)."""
        if r.get("gw_work_ns_per_s") is None:
            return Report._dedup_gw(r)
        r = dict(r)
        r["gw_cpu_ns_per_s"], r["busy_ns_per_s"] = r["gw_work_ns_per_s"], r.get("work_ns_per_s")
        r["gen_softirq_ns_per_s"] = r.get("gen_work_ns_per_s")
        r["precise"] = True
        return r

    def fig_paced(self):
        runs = [self._precise(r) for r in self.sel("paced")]
        base = {(r["rep"], r["rate"]): r for r in runs if r["mode"] == "base"}
        keys = sorted({(r["mode"], r["rate"]) for r in runs}, key=lambda k: (k[1], mode_order(k[0])))
        out = []
        for m, rate in keys:
            v = [r for r in runs if r["mode"] == m and r["rate"] == rate]
            per_pkt = self._per_packet(v, base, "busy_ns_per_s")
            gw_by_rep = self._per_packet(v, base, "gw_cpu_ns_per_s", by_rep=True)
            gw_pkt = list(gw_by_rep.values())
            cpu1_pkt = self._per_packet(v, base, "cpu1_busy_ns_per_s")
            gen_pkt = self._per_packet(v, base, "gen_softirq_ns_per_s")
            sinks = [r["sink"] for r in v if isinstance(r.get("sink"), dict)]
            gens = [r["gen"] for r in v if isinstance(r.get("gen"), dict)]
            losses = []
            for r in v:
                g, s = r.get("gen"), r.get("sink")
                if isinstance(g, dict) and isinstance(s, dict) and g.get("sent_measured"):
                    losses.append(max(0.0, (g["sent_measured"] - s["received_measured"]) / g["sent_measured"]))
            loss = max(losses) if losses else None
            notes = []
            if loss is not None and loss > 0.01:
                notes.append(f"did not sustain the rate: up to {loss * 100:.1f}% lost")
            dist = disturbed(v)
            if dist:
                notes.append(f"others' builds ran during rep {','.join(map(str, dist))}")
            if any(s.get("no_kernel_ts") for s in sinks):
                notes.append("some receive time stamps taken in user space")
            if any(s.get("negative") for s in sinks):
                notes.append("negative latencies seen (clock?)")
            if m != "base" and any(r.get("gw_cpu_ns_per_s", 0) is None for r in v):
                notes.append("natgw's CPU time could not be read in some runs")
            gw_med, c1_med = med(gw_pkt), med(cpu1_pkt)
            # natgw's threads run on CPU 1 only, so without overlap the gateway CPU (CPU 1's irq +
            # softirq + natgw's time) is part of CPU 1's whole busy time; what it exceeds that by
            # was counted twice (softirq run in natgw's context, charged to the thread as well).
            over = None
            if m in self.NATGW_MODES and not any(r.get("precise") for r in v):
                over = med([r["gw_cpu_sum_ns_per_s"] - r["cpu1_busy_ns_per_s"] for r in v
                            if r.get("gw_cpu_sum_ns_per_s") is not None and r.get("cpu1_busy_ns_per_s") is not None])
                if over is not None and over > 0.05e9:
                    rx = med([r["rx_pps"] for r in v]) or 0
                    notes.append(f"irq + softirq + natgw's time exceeded CPU 1's whole busy time by {over / 1e9:.2f} CPUs"
                                 + (f" (~{over / rx:.0f} ns/packet)" if rx > 0 else "")
                                 + " (softirq in natgw's context counted twice): CPU 1's busy time taken")
            rng = lambda x: (min(x) if x else None, max(x) if x else None)
            out.append({
                "mode": m, "rate_target": rate, "frac": v[0].get("frac"), "rx_pps_median": med([r["rx_pps"] for r in v]),
                "rate_sent_median": med([g.get("rate_measured") for g in gens]),
                "busy_cpus_median": med([r["busy_ns_per_s"] / 1e9 for r in v]),
                "gw_cpus_median": med([r["gw_cpu_ns_per_s"] / 1e9 for r in v if r.get("gw_cpu_ns_per_s") is not None]),
                "cpu_ns_per_packet_median": med(per_pkt), "cpu_ns_per_packet_all": per_pkt,
                "cpu_ns_per_packet_min": rng(per_pkt)[0], "cpu_ns_per_packet_max": rng(per_pkt)[1],
                "gw_cpu_ns_per_packet_median": gw_med, "gw_cpu_ns_per_packet_all": gw_pkt,
                "gw_cpu_ns_per_packet_by_rep": {str(k): x for k, x in gw_by_rep.items()},
                "p99_us_by_rep": {str(r["rep"]): r["sink"]["p99_ns"] / 1e3 for r in v
                                  if isinstance(r.get("sink"), dict) and r["sink"].get("p99_ns") is not None},
                "gw_cpu_ns_per_packet_min": rng(gw_pkt)[0], "gw_cpu_ns_per_packet_max": rng(gw_pkt)[1],
                "cpu1_busy_ns_per_packet_median": c1_med, "cpu1_busy_ns_per_packet_all": cpu1_pkt,
                "gw_cpu_over_cpu1_busy_ns_per_s_median": over,
                "precise": all(r.get("precise") for r in v),
                "natgw_run_ns_per_packet_median": med([r["natgw_run_ns_per_s"] / r["rx_pps"] for r in v
                                                       if r.get("natgw_run_ns_per_s") is not None and r.get("rx_pps", 0) > 0]),
                "steal1_median": med([r.get("steal1") for r in v if r.get("steal1") is not None]),
                "gen_softirq_ns_per_packet_median": med(gen_pkt), "gen_softirq_ns_per_packet_all": gen_pkt,
                "p50_us": med([s["p50_ns"] / 1e3 for s in sinks]), "p90_us": med([s["p90_ns"] / 1e3 for s in sinks]),
                "p99_us": med([s["p99_ns"] / 1e3 for s in sinks]), "p999_us": med([s["p999_ns"] / 1e3 for s in sinks]),
                "p99_us_min": min([s["p99_ns"] / 1e3 for s in sinks]) if sinks else None,
                "p99_us_max": max([s["p99_ns"] / 1e3 for s in sinks]) if sinks else None,
                "p99_us_all": [s["p99_ns"] / 1e3 for s in sinks],
                "max_us_max": max([s["max_ns"] / 1e3 for s in sinks]) if sinks else None,
                "samples": sum(s["received_measured"] for s in sinks), "loss_max": loss,
                "cpu0_median": med([r["cpu0"] for r in v]), "cpu1_median": med([r["cpu1"] for r in v]),
                "max_batch": max([g.get("max_batch", 0) for g in gens]) if gens else None,
                "notes": notes, "reps": len(v),
            })
        # Machine-wide CPU per packet is a small difference of two large numbers: it means
        # nothing when other work kept the machine busy (the generator+sink run alone should
        # leave most of the two CPUs idle) or when it comes out negative. Decided per rate.
        # The gateway-CPU figure does not count others' processes; it is only flagged when
        # a median comes out <= 0 (gw_cpu_invalid).
        ncpu = os.cpu_count() or 2
        self.cpu_invalid, self.gw_cpu_invalid = {}, {}
        for rate in sorted({r["rate_target"] for r in out}):
            rows = [r for r in out if r["rate_target"] == rate]
            b = next((r for r in rows if r["mode"] == "base"), None)
            if b and b["busy_cpus_median"] is not None and b["busy_cpus_median"] > 0.8 * ncpu:
                self.cpu_invalid[rate] = (f"at {rate} pps the generator+sink-only run already kept {b['busy_cpus_median']:.2f} "
                                          f"of {ncpu} CPUs busy (other work on the machine): machine-wide CPU per packet "
                                          "not measurable")
            elif any((r["cpu_ns_per_packet_median"] or 0) <= 0 for r in rows if r["mode"] != "base"):
                self.cpu_invalid[rate] = (f"at {rate} pps a machine-wide CPU-per-packet figure came out <= 0 (other work "
                                          "on the machine varied more than the gateway's cost)")
            bad = [SHORT.get(r["mode"], r["mode"]) for r in rows if r["mode"] != "base"
                   and r["gw_cpu_ns_per_packet_median"] is not None and r["gw_cpu_ns_per_packet_median"] <= 0]
            if bad:
                self.gw_cpu_invalid[rate] = f"at {rate} pps the gateway-CPU figure came out <= 0 for {', '.join(bad)}"
            for r in rows:
                if r["mode"] == "base":
                    continue
                if rate in self.cpu_invalid:
                    r["notes"].insert(0, "machine-wide CPU/packet invalid (see below)")
                if r["gw_cpu_ns_per_packet_median"] is not None and r["gw_cpu_ns_per_packet_median"] <= 0:
                    r["notes"].insert(0, "gateway CPU/packet <= 0: not valid")
                elif any(x <= 0 for x in r["gw_cpu_ns_per_packet_all"]):
                    r["notes"].insert(0, f"gateway CPU/packet <= 0 in {sum(x <= 0 for x in r['gw_cpu_ns_per_packet_all'])} "
                                         "repetition(s): CPU 1's softirq varied more than the gateway's cost")
        self.summary["cpu_invalid"] = {str(k): v for k, v in self.cpu_invalid.items()}
        self.summary["gw_cpu_invalid"] = {str(k): v for k, v in self.gw_cpu_invalid.items()}
        self.summary["paced"] = out
        return out

    def paced_rates(self):
        return sorted({r["rate_target"] for r in self.summary.get("paced", [])})

    def get_paced(self, m, rate):
        return next((r for r in self.summary.get("paced", []) if r["mode"] == m and r["rate_target"] == rate), None)

    def rate_label(self, rate, long=False):
        f = next((r.get("frac") for r in self.summary.get("paced", []) if r["rate_target"] == rate and r.get("frac") is not None), None)
        if f is None:
            return f"{rate} pps"
        return f"{rate} pps ({f:g}% of kernel peak)" if long else f"{rate} pps ({f:g}%)"

    # ---------------------------------------------------------------- figure 4
    def fig_conn(self):
        runs = self.sel("conn")
        out = []
        for m in sorted({r["mode"] for r in runs}, key=mode_order):
            v = [r for r in runs if r["mode"] == m and isinstance(r.get("churn"), dict)]
            if not v:
                continue
            c = [r["churn"] for r in v]
            rates = [x["rate"] for x in c]
            errs = sum(x["errors_connect"] + x["errors_reset"] + x["timeouts"] + x["errors_other"] for x in c)
            cpu0, cpu1 = med([r["cpu0"] for r in v]), med([r["cpu1"] for r in v])
            notes = []
            if cpu0 is not None and cpu1 is not None and cpu0 >= 95 and cpu1 < 85:
                notes.append(f"CPU{self.settings.get('gen_cpu', 0)} (client + nginx) saturated, gateway CPU {cpu1:.0f}%: host-bound")
            if errs:
                notes.append(f"{errs} failed/timed-out connections")
            dist = disturbed(v)
            if dist:
                notes.append(f"others' builds ran during rep {','.join(map(str, dist))}")
            out.append({
                "mode": m, "rate_median": med(rates), "rate_min": min(rates), "rate_max": max(rates), "rate_all": rates,
                "connect_p50_us": med([x["connect_p50_us"] for x in c]), "connect_p99_us": med([x["connect_p99_us"] for x in c]),
                "connect_p999_us": med([x["connect_p999_us"] for x in c]), "request_p99_us": med([x["request_p99_us"] for x in c]),
                "errors": errs, "cpu0_median": cpu0, "cpu1_median": cpu1, "notes": notes, "reps": len(v),
            })
        self.summary["conn"] = out
        return out

    # ---------------------------------------------------------------- figure 5
    def fig_iperf(self):
        runs = [r for r in self.sel("iperf") if r.get("bps") is not None]
        out = []
        keys = sorted({(r["mode"], r["streams"]) for r in runs}, key=lambda k: (mode_order(k[0]), k[1]))
        for m, s in keys:
            v = [r for r in runs if r["mode"] == m and r["streams"] == s]
            g = [r["bps"] / 1e9 for r in v]
            cpu0, cpu1 = med([r["cpu0"] for r in v]), med([r["cpu1"] for r in v])
            notes = []
            if cpu0 is not None and cpu1 is not None and cpu0 >= 95 and cpu1 < 85:
                notes.append(f"CPU{self.settings.get('gen_cpu', 0)} (iperf3 client + server) saturated: host-bound")
            dist = disturbed(v)
            if dist:
                notes.append(f"others' builds ran during rep {','.join(map(str, dist))}")
            out.append({"mode": m, "streams": s, "gbps_median": med(g), "gbps_min": min(g), "gbps_max": max(g), "gbps_all": g,
                        "retransmits": sum(r.get("retransmits") or 0 for r in v), "cpu0_median": cpu0, "cpu1_median": cpu1,
                        "notes": notes, "reps": len(v)})
        self.summary["iperf"] = out
        return out

    # ---------------------------------------------------------------- figure 6
    @staticmethod
    def slab(path):
        d = {}
        try:
            for line in open(path):
                p = line.split()
                if len(p) == 6:
                    d[p[0]] = dict(active=int(p[1]), num=int(p[2]), size=int(p[3]), pps=int(p[4]), slabs=int(p[5]))
        except OSError:
            pass
        return d

    def fig_mem(self):
        out = []
        page = os.sysconf("SC_PAGE_SIZE")
        for r in self.sel("mem"):
            m = r["mode"]
            f0, f1 = r.get("flows_before") or 0, r.get("flows_after")
            created = (f1 - f0) if isinstance(f1, int) else None
            row = {"mode": m, "flows_target": r["flows_target"], "flows_created": created, "delivered": r.get("delivered"),
                   "rate": r.get("rate"), "notes": []}
            if m == "kernel":
                a, b = self.slab(r["slab_before"]), self.slab(r["slab_after"])
                caches = []
                for name, x in b.items():
                    y = a.get(name)
                    if not y:
                        continue
                    dobj = x["active"] - y["active"]
                    if created and (name == "nf_conntrack" or dobj >= 0.5 * created):
                        caches.append({"cache": name, "objects": dobj, "objsize": x["size"],
                                       "bytes_objects": dobj * x["size"],
                                       "bytes_slabs": (x["slabs"] - y["slabs"]) * x["pps"] * page})
                row["caches"] = caches
                if created:
                    row["bytes_per_flow"] = sum(c["bytes_slabs"] for c in caches) / created
                    row["bytes_per_flow_objects"] = sum(c["bytes_objects"] for c in caches) / created
                row["method"] = "slab pages of nf_conntrack and of every cache that grew by >= half as many objects as flows were created"
            else:
                rb, ra = r.get("rss_kb_before"), r.get("rss_kb_after")
                row["rss_kb_before"], row["rss_kb_after"] = rb, ra
                if created and isinstance(rb, int) and isinstance(ra, int):
                    row["bytes_per_flow"] = (ra - rb) * 1024 / created
                row["method"] = "natgw VmRSS growth"
            if created is not None and created < 0.98 * r["flows_target"]:
                row["notes"].append(f"only {created} of {r['flows_target']} flows were created")
            out.append(row)
        self.summary["mem"] = out
        return out

    # ---------------------------------------------------------------- figure 7
    def fig_queues(self):
        rows = {}
        for r in self.sel("pps", figno=7):
            rows.setdefault(r["mode"], []).append(r)
        out = []
        ceil = next((r["pps_median"] for r in self.summary.get("pps", []) if r["mode"] == "ceiling" and r["flows"] == "1k"), None)
        for m in sorted(rows, key=mode_order):
            v = rows[m]
            pps = [r["pps"] for r in v]
            d = med(pps)
            notes = []
            if ceil and d >= 0.9 * ceil:
                notes.append("generator-bound (within 10% of the ceiling)")
            workers = None
            st = v[-1].get("stats")
            if st and os.path.exists(st + ".json"):
                try:
                    j = json.load(open(st + ".json"))
                    j = j.get("data", j)
                    workers = [w["counters"]["rx_packets"] for w in j["workers"]]
                except Exception:
                    workers = None
            out.append({"mode": m, "flows": "1k", "pps_median": d, "pps_min": min(pps), "pps_max": max(pps), "pps_all": pps,
                        "sent_pps_median": med([r["sent_pps"] for r in v]), "cpu0_median": med([r["cpu0"] for r in v]),
                        "cpu1_median": med([r["cpu1"] for r in v]), "worker_rx_packets": workers, "notes": notes, "reps": len(v)})
        self.summary["queues"] = out
        return out

    # ---------------------------------------------------------------- targets
    def target(self, name, ok, detail):
        # ok: True/False, None = not measured, "?" = measured but this run cannot decide
        state = "not measured" if ok is None else "INCONCLUSIVE" if ok == "?" else ("PASS" if ok else "MISS")
        if ok is None and detail.startswith("0k"):
            detail += " (nothing delivered)"
        self.targets.append({"target": name, "result": state, "detail": detail})

    def compute_targets(self):
        n, k = self.get_pps("natgw"), self.get_pps("kernel")
        if n and k and ratio(n["pps_median"], k["pps_median"]) is not None:
            r = ratio(n["pps_median"], k["pps_median"])
            extra = " (natgw generator-bound: the ratio is a lower bound)" if n["generator_bound"] else ""
            ok = r >= 1.3 or ("?" if n["generator_bound"] else False)
            self.target("natgw pps >= 1.3x kernel NAT, 64-byte UDP, 1k flows", ok,
                        f"{kfmt(n['pps_median'])} vs {kfmt(k['pps_median'])} = {r:.2f}x (aim 1.5x){extra}")
        else:
            self.target("natgw pps >= 1.3x kernel NAT, 64-byte UDP, 1k flows", None, "figure 1 not run")
        rates = self.paced_rates()
        for rate in rates:
            name = f"natgw CPU per packet <= kernel NAT's at {self.rate_label(rate, long=True)}"
            pn, pk = self.get_paced("natgw", rate), self.get_paced("kernel", rate)
            a = pn and pn["gw_cpu_ns_per_packet_median"]
            b = pk and pk["gw_cpu_ns_per_packet_median"]
            if not (pn and pk) or a is None or b is None:
                why = ("natgw or kernel NAT missing at this rate" if not (pn and pk) else
                       "no gateway-CPU figure (no base run at this rate, or natgw's CPU time not read, or data from an older run.sh)")
                self.target(name, None, why)
                continue
            mw = ""
            ma, mb = pn["cpu_ns_per_packet_median"], pk["cpu_ns_per_packet_median"]
            if ma is not None and mb is not None:
                mw = (f"; machine-wide {ma:.0f} vs {mb:.0f} ns"
                      + (" (not valid: other work on the machine)" if rate in self.cpu_invalid else ""))
            detail = (f"gateway CPU {a:.0f} ns ({pn['gw_cpu_ns_per_packet_min']:.0f}–{pn['gw_cpu_ns_per_packet_max']:.0f}) "
                      f"vs {b:.0f} ns ({pk['gw_cpu_ns_per_packet_min']:.0f}–{pk['gw_cpu_ns_per_packet_max']:.0f}), "
                      f"median (min–max) of {pn['reps']}/{pk['reps']} runs{mw}")
            ok, wins, pairs = self.paired_verdict(pn.get("gw_cpu_ns_per_packet_by_rep", {}),
                                                  pk.get("gw_cpu_ns_per_packet_by_rep", {}))
            if ok is None:
                ok = a <= b
            else:
                detail += f"; natgw at or below the kernel in {wins} of {pairs} side-by-side repetitions" + (
                    " (within run-to-run noise: no verdict)" if ok == "?" else "")
            if a <= 0 or b <= 0:
                self.target(name, "?", detail + f" — a gateway-CPU median is <= 0, not valid ({self.gw_cpu_invalid.get(rate, '')})")
            else:
                self.target(name, ok, detail)
        if not rates:
            self.target("natgw CPU per packet <= kernel NAT's", None, "figure 2 not run")
        raw = self.get_pps("raw")
        if n and raw and ratio(n["pps_median"], raw["pps_median"]) is not None:
            r = ratio(n["pps_median"], raw["pps_median"])
            both = n["generator_bound"] and raw["generator_bound"]
            extra = " (both generator-bound: this run cannot tell them apart)" if both else ""
            self.target("natgw NAT >= 90% of natgw raw forwarding (accept-all), 1k flows", "?" if both else r >= 0.9,
                        f"{kfmt(n['pps_median'])} vs {kfmt(raw['pps_median'])} = {r * 100:.0f}%{extra}")
        else:
            self.target("natgw NAT >= 90% of natgw raw forwarding (accept-all), 1k flows", None, "not measured")
        fwd = self.get_pps("xdpfwd")
        if raw and fwd and ratio(raw["pps_median"], fwd["pps_median"]) is not None:
            r = ratio(raw["pps_median"], fwd["pps_median"])
            both = raw["generator_bound"] and fwd["generator_bound"]
            self.target("natgw raw forwarding within 10% of a minimal AF_XDP forwarder", "?" if both else r >= 0.9,
                        f"{kfmt(raw['pps_median'])} vs bench/xdpfwd {kfmt(fwd['pps_median'])} = {r * 100:.0f}%"
                        + (" (both generator-bound: this run cannot tell them apart)" if both else ""))
        else:
            note = self.settings.get("xdpfwd_note") or "not measured"
            self.target("natgw raw forwarding within 10% of a minimal AF_XDP forwarder", None, note)
        for rate in rates:
            name = f"natgw p99 latency <= kernel NAT's at {self.rate_label(rate, long=True)}"
            pn, pk = self.get_paced("natgw", rate), self.get_paced("kernel", rate)
            if pn and pk and pn["p99_us"] is not None and pk["p99_us"] is not None:
                extra = ""
                if pn["loss_max"] and pn["loss_max"] > 0.01:
                    extra = f" (natgw lost {pn['loss_max'] * 100:.1f}%)"
                ok, wins, pairs = self.paired_verdict(pn.get("p99_us_by_rep", {}), pk.get("p99_us_by_rep", {}))
                if ok is None:
                    ok = pn["p99_us"] <= pk["p99_us"]
                else:
                    extra += f"; natgw at or below the kernel in {wins} of {pairs} side-by-side repetitions" + (
                        " (within run-to-run noise: no verdict)" if ok == "?" else "")
                self.target(name, ok,
                            f"{pn['p99_us']:.1f} us ({pn['p99_us_min']:.1f}–{pn['p99_us_max']:.1f}) vs "
                            f"{pk['p99_us']:.1f} us ({pk['p99_us_min']:.1f}–{pk['p99_us_max']:.1f}){extra}")
            else:
                self.target(name, None, "natgw or kernel NAT missing at this rate")
        if not rates:
            self.target("natgw p99 latency <= kernel NAT's", None, "figure 3 not run")
        cn = next((r for r in self.summary.get("conn", []) if r["mode"] == "natgw"), None)
        ck = next((r for r in self.summary.get("conn", []) if r["mode"] == "kernel"), None)
        if cn and ck:
            extra = " (host-bound: see figure 4)" if cn["notes"] and "host-bound" in " ".join(cn["notes"]) else ""
            self.target("natgw new TCP connections/s >= kernel NAT's", cn["rate_median"] >= ck["rate_median"],
                        f"{cn['rate_median']:.0f}/s vs {ck['rate_median']:.0f}/s{extra}")
        else:
            self.target("natgw new TCP connections/s >= kernel NAT's", None, "figure 4 not run")
        mn = next((r for r in self.summary.get("mem", []) if r["mode"] == "natgw"), None)
        mk = next((r for r in self.summary.get("mem", []) if r["mode"] == "kernel"), None)
        if mn and mk and mn.get("bytes_per_flow") is not None and mk.get("bytes_per_flow"):
            r = mn["bytes_per_flow"] / mk["bytes_per_flow"]
            self.target("natgw memory per flow <= 50% of the kernel's", r <= 0.5,
                        f"{mn['bytes_per_flow']:.0f} B vs {mk['bytes_per_flow']:.0f} B = {r * 100:.0f}% "
                        f"({mn['flows_created']} / {mk['flows_created']} flows)")
        else:
            self.target("natgw memory per flow <= 50% of the kernel's", None, "figure 6 not run")

    # ---------------------------------------------------------------- environment
    def environment(self):
        root = os.getcwd()
        commit = sh("git rev-parse HEAD")
        dirty = sh("git status --porcelain --untracked-files=no -- src bpf Cargo.toml Cargo.lock build.rs bench | awk '{print $2}' | tr '\\n' ' '").strip()
        cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
        env = {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit, "commit_short": commit[:7], "working_tree_differs_in": dirty,
            "kernel": platform.release(), "cpu_model": cpu, "cpus": os.cpu_count(),
            "memory": sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo"),
            "hypervisor": sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'"),
            "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
            "versions": {
                "natgw": sh(f"{self.natgw} --version", "?") if self.natgw else "?",
                "rustc": sh("rustc --version"), "trafgen": sh("trafgen -v | head -1"),
                "nginx": sh("nginx -v 2>&1"), "iperf3": sh("iperf3 --version | head -1"),
                "nft": sh("nft --version"), "conntrack": sh("conntrack --version"),
                "gnuplot": sh("gnuplot --version"), "cc": sh("cc --version | head -1"),
                "ethtool": sh("ethtool --version"), "python3": platform.python_version(),
                "xdpfwd": "bench/xdpfwd (xsk-rs 0.11, libbpf-sys 1.5)" if self.xdpfwd else "not built",
            },
            "loadavg_start": self.meta("loadavg_start"), "loadavg_end": self.meta("loadavg_end"),
            "others_at_start": "; ".join(self.meta("others_at_start").splitlines()),
            "others_at_end": "; ".join(self.meta("others_at_end").splitlines()),
            "elapsed_s": int(self.meta("elapsed_s", "0") or 0),
            "conntrack_saved": self.meta("conntrack_saved"), "conntrack_set": self.meta("conntrack_set"),
            "offloads_lan0": self.meta("offloads_lan0"),
            "paced_rate_source": self.meta("paced_rate_source"),
            "natgw_build": self.meta("natgw_build"),
        }
        del root
        self.env = env
        return env

    # ---------------------------------------------------------------- plots
    def plots(self):
        if not shutil.which("gnuplot"):
            self.notes.append("gnuplot missing: no plots")
            return []
        made = []
        d = os.path.join(self.work, "plots")
        os.makedirs(d, exist_ok=True)
        common = ('set terminal svg size 820,440 dynamic noenhanced font "sans,12" background "white"\n'
                  'set grid ytics lc rgb "#dddddd"\nset border 3\nset tics nomirror\nset key top right\n')
        title_sfx = " (--quick: 1 repetition)" if self.quick else ""

        def run(name, script):
            path = f"{self.out}-{name}.svg"
            p = subprocess.run(["gnuplot"], input=common + f'set output "{path}"\n' + script, text=True, capture_output=True)
            if p.returncode == 0 and os.path.exists(path):
                made.append(path)
            else:
                self.notes.append(f"plot {name} failed: {p.stderr.strip()[:200]}")

        # pps vs flows
        pps = self.summary.get("pps", [])
        modes = [m for m in ORDER if any(r["mode"] == m and r["flows"] != "1k" for r in pps)]
        if modes:
            dat = os.path.join(d, "pps_flows.dat")
            with open(dat, "w") as f:
                for m in modes:
                    f.write(f'# {m}\n')
                    for fl in FLOW_ORDER:
                        r = next((x for x in pps if x["mode"] == m and x["flows"] == fl), None)
                        if r:
                            f.write(f'{r["nflows"]} {r["pps_median"] / 1e3} {r["pps_min"] / 1e3} {r["pps_max"] / 1e3}\n')
                    f.write("\n\n")
            plots = ", ".join(f'"{dat}" index {i} using 1:2:3:4 with yerrorlines lw 2 pt 7 title "{SHORT[m]}"' for i, m in enumerate(modes))
            run("pps-flows", f'set title "64-byte UDP delivered, by number of flows (median, min-max){title_sfx}"\n'
                f'set logscale x\nset xlabel "flows"\nset ylabel "kpps"\nset yrange [0:*]\nset xrange [0.5:3e6]\n'
                f'set xtics ("1" 1, "1k" 1024, "100k" 99840, "1M" 1003520)\nplot {plots}\n')
        one = [r for r in pps if r["flows"] == "1k"]
        if one:
            dat = os.path.join(d, "pps_1k.dat")
            with open(dat, "w") as f:
                for r in sorted(one, key=lambda r: mode_order(r["mode"])):
                    f.write(f'"{SHORT[r["mode"]]}" {r["pps_median"] / 1e3} {r["pps_min"] / 1e3} {r["pps_max"] / 1e3}\n')
            run("pps-1k", f'set title "64-byte UDP, 1k flows: delivered pps (median, min-max){title_sfx}"\n'
                'set style data histogram\nset style histogram errorbars gap 1 lw 1\nset style fill solid 0.6 border -1\n'
                'set ylabel "kpps"\nset yrange [0:*]\nset xtics rotate by -25\nset key off\n'
                f'plot "{dat}" using 2:3:4:xtic(1) lc rgb "#4477aa"\n')
        # figures 2 + 3: one bar group per paced rate (gnuplot newhistogram, one data block each)
        paced = [r for r in self.summary.get("paced", []) if r["mode"] != "base"]
        rates = [x for x in self.paced_rates() if any(r["rate_target"] == x for r in paced)]
        if paced and rates:
            dat = os.path.join(d, "latency.dat")
            parts = []
            with open(dat, "w") as f:
                for i, rate in enumerate(rates):
                    f.write(f"# {rate} pps\n")
                    for r in (r for r in paced if r["rate_target"] == rate):
                        f.write(f'"{SHORT[r["mode"]]}" {r["p50_us"] or 0} {r["p99_us"] or 0} {r["p999_us"] or 0}\n')
                    f.write("\n\n")
                    t = (lambda x: f'title "{x}"') if i == 0 else (lambda x: "notitle")
                    parts.append(f'newhistogram "{self.rate_label(rate)}", "{dat}" index {i} using 2:xtic(1) lt 1 {t("p50")}, '
                                 f'"" index {i} using 3 lt 2 {t("p99")}, "" index {i} using 4 lt 3 {t("p99.9")}')
            run("latency", f'set title "Latency by paced rate, 1024 flows (median of runs){title_sfx}"\n'
                'set style data histogram\nset style histogram clustered gap 1\nset style fill solid 0.7 border -1\n'
                'set logscale y\nset ylabel "microseconds"\nset key top left\nset xtics rotate by -25\n'
                f'plot {", ".join(parts)}\n')
            cp = [r for r in paced if r["gw_cpu_ns_per_packet_median"] is not None and r["gw_cpu_ns_per_packet_median"] > 0]
            crates = [x for x in rates if any(r["rate_target"] == x for r in cp)]
            if cp:
                dat = os.path.join(d, "cpu.dat")
                parts = []
                with open(dat, "w") as f:
                    for i, rate in enumerate(crates):
                        f.write(f"# {rate} pps\n")
                        for r in (r for r in cp if r["rate_target"] == rate):
                            f.write(f'"{SHORT[r["mode"]]}" {r["gw_cpu_ns_per_packet_median"]} '
                                    f'{r["gw_cpu_ns_per_packet_min"]} {r["gw_cpu_ns_per_packet_max"]}\n')
                        f.write("\n\n")
                        parts.append(f'newhistogram "{self.rate_label(rate)}", "{dat}" index {i} using 2:3:4:xtic(1) lc rgb "#cc6677" notitle')
                run("cpu", f'set title "Gateway CPU per packet by paced rate (median, min-max){title_sfx}"\n'
                    'set style data histogram\nset style histogram errorbars gap 1 lw 1\nset style fill solid 0.6 border -1\n'
                    'set ylabel "CPU ns per packet"\nset yrange [0:*]\nset key off\nset xtics rotate by -25\n'
                    f'plot {", ".join(parts)}\n')
        conn = self.summary.get("conn", [])
        if conn:
            dat = os.path.join(d, "conn.dat")
            with open(dat, "w") as f:
                for r in conn:
                    f.write(f'"{SHORT[r["mode"]]}" {r["rate_median"]} {r["rate_min"]} {r["rate_max"]}\n')
            run("conn", f'set title "New TCP connections per second to nginx (median, min-max){title_sfx}"\n'
                'set style data histogram\nset style histogram errorbars gap 1 lw 1\nset style fill solid 0.6 border -1\n'
                'set ylabel "connections/s"\nset yrange [0:*]\nset key off\n'
                f'plot "{dat}" using 2:3:4:xtic(1) lc rgb "#228833"\n')
        ip = self.summary.get("iperf", [])
        if ip:
            dat = os.path.join(d, "iperf.dat")
            ms = sorted({r["mode"] for r in ip}, key=mode_order)
            with open(dat, "w") as f:
                for m in ms:
                    a = next((r for r in ip if r["mode"] == m and r["streams"] == 1), None)
                    b = next((r for r in ip if r["mode"] == m and r["streams"] == 4), None)
                    f.write(f'"{SHORT[m]}" {a["gbps_median"] if a else 0} {b["gbps_median"] if b else 0}\n')
            run("iperf", f'set title "iperf3 TCP throughput (median){title_sfx}"\n'
                'set style data histogram\nset style histogram clustered gap 1\nset style fill solid 0.7 border -1\n'
                'set ylabel "Gbit/s"\nset yrange [0:*]\nset key top right\n'
                f'plot "{dat}" using 2:xtic(1) title "1 stream", "" using 3 title "4 streams"\n')
        return made

    # ---------------------------------------------------------------- output
    def write(self):
        for old in glob.glob(self.out + ".json") + glob.glob(self.out + ".md") + glob.glob(self.out + "-*.svg"):
            os.remove(old)
        self.fig_pps()
        self.fig_queues()
        self.fig_paced()
        self.fig_conn()
        self.fig_iperf()
        self.fig_mem()
        self.compute_targets()
        env = self.environment()
        plots = self.plots()
        runs = []
        for r in self.runs:
            r = dict(r)
            for key in ("slab_before", "slab_after", "stats"):
                r.pop(key, None)
            runs.append(r)
        doc = {"what": "natgw benchmark harness (bench/run.sh), issue 4", "environment": env, "settings": self.settings,
               "targets": self.targets, "figures": self.summary, "plots": [os.path.basename(p) for p in plots],
               "errors": self.errors(), "notes": self.notes, "runs": runs}
        with open(self.out + ".json", "w") as f:
            json.dump(doc, f, indent=1)
        md = self.markdown(env, plots)
        with open(self.out + ".md", "w") as f:
            f.write(md)
        self.print_summary(plots)

    def pps_rows(self, rows, md=True):
        out = []
        for r in rows:
            b = (lambda s: f"**{s}**") if md else (lambda s: s)
            out.append([SHORT[r["mode"]], r.get("flows", "1k"), b(kfmt(r["pps_median"])),
                        f"{kfmt(r['pps_min'])}–{kfmt(r['pps_max'])}", kfmt(r.get("sent_pps_median")),
                        ffmt(r["loss"] * 100 if r.get("loss") is not None else None, 1, "%"),
                        f"{ffmt(r.get('cpu0_median'), 0)}% / {ffmt(r.get('cpu1_median'), 0)}%",
                        r.get("flows_seen") if r.get("flows_seen") is not None else "-", "; ".join(r["notes"])])
        return out

    def markdown(self, env, plots):
        s = self.settings
        q = self.quick
        L = []
        a = L.append
        a("# natgw beside the Linux kernel: benchmark report")
        a("")
        a(f"Produced by `{s.get('cmdline', './bench/run.sh')}` (as root) on {env['date_utc']}; every figure below is from "
          "this one run and is regenerated, not edited, by the next run. Raw values: "
          f"[`{os.path.basename(self.out)}.json`]({os.path.basename(self.out)}.json).")
        busy = [r for r in self.runs if r.get("disturbed")]
        if busy:
            a("")
            a(f"**The machine was not quiet:** other builds, tests or benchmarks ran during {len(busy)} of "
              f"{len(self.runs)} measurements (marked in the notes; e.g. `{busy[0]['disturbed'][:80]}`). "
              "Those figures measure the contention as much as the gateways.")
        if q:
            a("")
            a("**`--quick` run:** one repetition per case, "
              f"{s.get('dur_s')} s per flood measurement, fewer gateways in figures 2–5, "
              f"{s.get('mem_flows')} flows in figure 6. The figures are indicative only; ranges below are a single value.")
        a("")
        a(md_table(["", ""], [
            ["commit", f"{env['commit_short']}" + (f" (working tree differs in: {env['working_tree_differs_in']})" if env["working_tree_differs_in"] else "")],
            ["natgw binary", env["natgw_build"]],
            ["kernel", env["kernel"]],
            ["CPU", f"{env['cpu_model']}, {env['cpus']} vCPUs ({env['hypervisor'] or 'bare metal?'}), {env['memory']}"],
            ["OS", env["os"]],
            ["machine load", f"loadavg {env['loadavg_start']} at start, {env['loadavg_end']} at end"
             + (f"; others' builds at start: {env['others_at_start']}" if env["others_at_start"] else "")
             + (f"; at end: {env['others_at_end']}" if env["others_at_end"] else "")],
            ["run time", f"{env['elapsed_s']} s"],
            ["repetitions", f"{s.get('reps')} per case, cases interleaved per repetition; floods {s.get('dur_s')} s after {s.get('warm_s')} s warm-up"
             + (f"; figures 2+3: {s.get('paced_reps')} per rate and gateway, {s.get('paced_dur_s')} s each" if "paced_reps" in s else "")],
            ["CPU placement", f"generators, clients, nginx, iperf3 and the latency sink on CPU {s.get('gen_cpu')}; "
             f"gateway on CPU {s.get('gw_cpu')} (RPS on lan0/wan0 for the kernel, `taskset` + `afxdp.cpus` for natgw, `taskset` for xdpfwd; natgw TUN, pinned by `taskset`, moves lan0/wan0's RPS to the CPU it does not run on, CPU 0)"],
            ["offloads", f"`ethtool -K {s.get('offloads')}` on every veth end (gateway lan0 now: {env['offloads_lan0'].replace(chr(10), ', ')})"],
            ["conntrack limits", f"kernel nf_conntrack_max and buckets `{env['conntrack_set']}` during the run (were `{env['conntrack_saved']}`, put back); natgw `max_flows = {s.get('ct_max')}`"],
            ["tool versions", "; ".join(f"{k}: {v}" for k, v in env["versions"].items())],
        ]))
        a("")
        a("## Targets")
        a("")
        a("```")
        for t in self.targets:
            a(f"{t['result']:<12} {t['target']}: {t['detail']}")
        a("```")
        a("")
        if q:
            a("(--quick: one repetition, not a verdict.)")
            a("")
        a("The CPU-per-packet and p99 verdicts at the paced rates compare natgw and the kernel NAT "
          "repetition by repetition (they run side by side, interleaved): PASS when natgw is at or below "
          "the kernel in all but at most a fifth of the repetitions (4 of 5), MISS when it is above in as "
          "many, INCONCLUSIVE when the repetitions split (the difference is within run-to-run noise, and a "
          "comparison of medians would flip from run to run). The medians and ranges are shown beside.")
        a("")
        # figure 1
        pps = self.summary.get("pps", [])
        a("## 1. 64-byte UDP through the gateway, by number of flows")
        a("")
        a("trafgen (netsniff-ng) on CPU 0 at full speed, 60-byte frames (64 with FCS) with valid checksums, "
          "10.0.0.10 → 203.0.113.100, flows spread over source and destination ports "
          "(1; 1,024; 99,840; 1,003,520 flows). *Delivered* = frames counted by an nftables netdev ingress rule "
          "on the server's veth (translated source 203.0.113.1 for NAT gateways) per second; *sent* = the client "
          "veth's tx_packets + tx_dropped. For ≥ 100k flows the stateful gateways first get one full cycle of "
          "the flows (trafgen -n) so the measurement sees a table holding all of them. The ceiling sends the same "
          "frames over the direct client–server veth into the same kind of drop rule (RPS to CPU 1 as for the "
          "gateway), with no gateway.")
        a("")
        if pps:
            a(md_table(["gateway", "flows", "delivered pps (median)", "min–max", "sent pps", "loss", "CPU0 / CPU1 busy", "flows held", "note"],
                       self.pps_rows(pps)))
            a("")
            rs = self.summary.get("pps_ratio_natgw_kernel", {})
            if rs:
                a("natgw AF_XDP / kernel NAT: " + ", ".join(f"{f} flows **{v:.2f}×**" for f, v in rs.items() if v) + ".")
                a("")
            ver = [(r["mode"], r["verify"]) for r in pps if r.get("verify")]
            if ver:
                a("Frames checked at the server (tcpdump -vv, 20 frames, first repetition, 1k flows): "
                  + "; ".join(f"{SHORT[m]}: {v}" for m, v in ver) + ".")
                a("")
        else:
            a("Not run.")
            a("")
        for p in plots:
            if p.endswith(("-pps-flows.svg", "-pps-1k.svg")):
                a(f"![{os.path.basename(p)}]({os.path.basename(p)})")
                a("")
        # figures 2 + 3
        paced = self.summary.get("paced", [])
        a("## 2. CPU per packet and 3. latency, at fixed rates")
        a("")
        if paced:
            rates = self.paced_rates()
            gcpu, ncpu = s.get("gw_cpu", 1), s.get("gen_cpu", 0)
            a(f"`bench/udpgen.c` sends {s.get('paced_flows')} flows of 60-byte UDP frames at fixed rates: "
              f"{', '.join(self.rate_label(x) for x in rates)} ({self.env.get('paced_rate_source') or ''}); "
              f"{s.get('paced_reps', s.get('reps'))} repetition(s) of {s.get('paced_dur_s')} s after {s.get('warm_s')} s "
              "warm-up, interleaved (for each repetition, each rate, each gateway). It sleeps until each frame is due "
              "(timer slack 1 ns) and sends what is due in one sendmmsg, so it never spins. Each frame carries its "
              "CLOCK_REALTIME send time; the sink (a UDP socket on the server with SO_TIMESTAMPNS) takes the kernel's "
              "receive time stamp, set when the frame enters the server's namespace, so the sink's own scheduling is not "
              "counted. Percentiles are exact, over every frame sent after the warm-up.")
            a("")
            knobs = []
            if any(r["mode"] == "natgwc" for r in paced) and s.get("natgw_coalesce_us") is not None:
                knobs.append(f"*natgw coalescing* runs with `[afxdp] coalesce_us = {s.get('natgw_coalesce_us')}`")
            if any(r["mode"] == "natgwrt" for r in paced) and s.get("natgw_rt_priority") is not None:
                knobs.append(f"*natgw real-time* with `[afxdp] rt_priority = {s.get('natgw_rt_priority')}`")
            if knobs:
                a("; ".join(knobs) + "; the other natgw rows with neither.")
                a("")
            a("CPU per packet, two measures, both = (CPU time per second of the gateway run − the same for the "
              "generator+sink-only run (*base*, over the direct veth) of the same repetition and rate) ÷ delivered "
              "packets per second:")
            a("")
            precise = all(r.get("precise") for r in paced)
            if precise:
                a(f"- ***Gateway CPU*** (the headline figure and the target): the work time of the gateway's CPU {gcpu}, "
                  "that is wall time − its idle time (idle + iowait of /proc/stat), the same measure for every gateway. "
                  f"The gateway's work is pinned to CPU {gcpu}: natgw's threads by `taskset`, the kernel's forwarding by RPS "
                  "on lan0/wan0 (and the base's delivery to the sink by RPS on the direct link). Why not the busy fields: "
                  "this kernel accounts busy time by tick (CONFIG_TICK_CPU_ACCOUNTING, no IRQ_TIME_ACCOUNTING), and with "
                  "NO_HZ_IDLE a softirq that runs out of idle, which is how the kernel forwards at paced rates (an RPS "
                  "IPI wakes the idle CPU), is almost never seen by a tick (on 2026-12-03, at 25% of the peak, the kernel "
                  "NAT's forwarding showed as ~0.05 CPU of irq + softirq ticks where an ftrace of softirq_entry/exit on "
                  "that CPU summed ~0.35 CPU: perf/profile-misses.md; this run's tick figure is in the table). The idle time is not sampled: it runs from idle entry to exit, and "
                  "an interrupt, with the softirq at its end, stops it (tick_nohz_irq_enter). So work time counts the "
                  "kernel's softirq and natgw's threads alike. It also counts others' processes on that CPU (runs where "
                  "others' builds ran are marked) and the time the hypervisor took the CPU away while it worked (steal; "
                  f"the median steal of CPU {gcpu} is shown).")
                a("- ***Machine-wide***: the work time of all CPUs the same way. It also counts the work natgw leaves on "
                  f"the generator's CPU {ncpu} (the lan0 XDP program and the copy into the UMEM run in the sender's softirq; "
                  f"natgw TUN moves lan0/wan0's RPS to CPU {ncpu}), and everything else that ran on the shared machine.")
                a(f"- Cross-check columns: *CPU {gcpu} by ticks* is the tick-based busy time (user + nice + system + irq + "
                  f"softirq of /proc/stat) of CPU {gcpu} over the base, the measure earlier reports used; *natgw threads* "
                  "is the run time of natgw's threads (/proc/PID/task/*/schedstat, exact, without steal) per packet, not "
                  "over the base; it includes the receiving side's softirq that natgw's AF_XDP TX kick runs inline.")
            else:
                a("- ***Gateway CPU*** (the headline figure and the target): irq + softirq time of the gateway's CPU "
                  f"{gcpu} from /proc/stat, plus, for the natgw gateways, the natgw process's own utime + stime "
                  "(/proc/PID/stat, all its threads), but for natgw never more than CPU "
                  f"{gcpu}'s whole busy time. The gateway's work is pinned to CPU "
                  f"{gcpu}: natgw's threads by `taskset`, the kernel's forwarding by RPS on lan0/wan0 (and the base's "
                  f"delivery to the sink by RPS on the direct link). This kernel accounts CPU time by tick "
                  "(CONFIG_TICK_CPU_ACCOUNTING, no IRQ_TIME_ACCOUNTING), and a tick that lands in softirq while a natgw "
                  "thread is current is charged both to the CPU's softirq and to the thread's stime "
                  "(account_system_index_time), so the plain sum counts that softirq twice; natgw's AF_XDP TX kick runs the "
                  "receiving side's softirq inline (perf/profile-misses.md), so this is not small. Everything in the sum "
                  f"lies within CPU {gcpu}'s busy time, which also holds others' processes there, so the smaller of the two "
                  "is an upper bound of natgw's true figure (the raw sum is `gw_cpu_sum_ns_per_s` in the JSON). For the "
                  f"kernel gateways it is CPU {gcpu}'s irq + softirq alone: other users' processes are not counted.")
                a(f"- ***Machine-wide***: busy time (user + nice + system + irq + softirq) of all CPUs from /proc/stat. "
                  "Complete, but it counts everything else that ran on the shared machine, so it is noisy.")
                a(f"- Cross-check columns: *CPU {gcpu} busy* is the whole busy time of CPU {gcpu} (others' processes "
                  f"there included) the same way. One thing the gateway-CPU figure leaves out for natgw, recorded per run: "
                  f"work natgw leaves on the generator's CPU {ncpu} is not counted: "
                  f"the lan0 XDP program and the copy into the UMEM run in the sender's softirq, and natgw TUN moves lan0/wan0's "
                  f"RPS to CPU {ncpu}; the JSON has it as `gen_softirq_ns_per_packet` (CPU {ncpu} irq + softirq over the base). "
                  "The machine-wide figure counts it.")
            a("")
            for rate in rates:
                rr = [r for r in paced if r["rate_target"] == rate]
                a(f"### {self.rate_label(rate, long=True)}")
                a("")
                inv = rate in self.cpu_invalid
                rows = []
                for r in rr:
                    isb = r["mode"] == "base"
                    g, c = r["gw_cpu_ns_per_packet_median"], r["cpu_ns_per_packet_median"]
                    rows.append([SHORT[r["mode"]], kfmt(r["rx_pps_median"]),
                                 "-" if isb else (f"({ffmt(g, 0)})" if g is not None and g <= 0 else f"**{ffmt(g, 0)}**"),
                                 "-" if isb else f"{ffmt(r['gw_cpu_ns_per_packet_min'], 0)}–{ffmt(r['gw_cpu_ns_per_packet_max'], 0)}",
                                 "-" if isb else (f"({ffmt(c, 0)})" if inv else ffmt(c, 0)),
                                 "-" if isb else f"{ffmt(r['cpu_ns_per_packet_min'], 0)}–{ffmt(r['cpu_ns_per_packet_max'], 0)}",
                                 "-" if isb else ffmt(r["cpu1_busy_ns_per_packet_median"], 0),
                                 ffmt(r.get("natgw_run_ns_per_packet_median"), 0),
                                 f"{ffmt(r['gw_cpus_median'], 2)} / {ffmt(r['busy_cpus_median'], 2)}",
                                 ffmt(r.get("steal1_median"), 0, "%"),
                                 ffmt(r["p50_us"], 1), f"**{ffmt(r['p99_us'], 1)}**", f"{ffmt(r['p99_us_min'], 1)}–{ffmt(r['p99_us_max'], 1)}",
                                 ffmt(r["p999_us"], 1), ffmt(r["max_us_max"], 0), ffmt((r["loss_max"] or 0) * 100, 2, "%"),
                                 r["samples"], "; ".join(r["notes"])])
                a(md_table(["gateway", "delivered pps", "gateway CPU ns/packet (median)", "min–max",
                            "machine-wide ns/packet (median)", "min–max",
                            f"CPU {gcpu} by ticks ns/packet" if precise else f"CPU {gcpu} busy ns/packet",
                            "natgw threads ns/packet", "gateway / machine CPUs working" if precise else "gateway / machine CPUs busy",
                            f"CPU {gcpu} steal", "p50 µs", "p99 µs", "p99 min–max", "p99.9 µs", "max µs",
                            "lost (worst run)", "samples", "note"], rows))
                a("")
                if inv:
                    a(f"**Machine-wide CPU per packet is not valid here:** {self.cpu_invalid[rate]}.")
                    a("")
                if rate in self.gw_cpu_invalid:
                    a(f"**Gateway CPU per packet is not valid here:** {self.gw_cpu_invalid[rate]}.")
                    a("")
                pn, pk = self.get_paced("natgw", rate), self.get_paced("kernel", rate)
                if pn and pk:
                    parts = []
                    gn, gk = pn["gw_cpu_ns_per_packet_median"], pk["gw_cpu_ns_per_packet_median"]
                    if gn and gk and gn > 0 and gk > 0 and rate not in self.gw_cpu_invalid:
                        parts.append(f"gateway CPU per packet **{gn / gk:.2f}×**")
                    cn, ck = pn["cpu_ns_per_packet_median"], pk["cpu_ns_per_packet_median"]
                    if cn and ck and not inv:
                        parts.append(f"machine-wide CPU per packet {cn / ck:.2f}×")
                    if pn["p99_us"] and pk["p99_us"]:
                        parts.append(f"p99 latency **{pn['p99_us'] / pk['p99_us']:.2f}×**")
                    if parts:
                        a("natgw / kernel: " + ", ".join(parts) + ".")
                        a("")
                pb = self.get_paced("natgwb", rate)
                if pn and pb:
                    # A/B of two builds (NATGW_B): per repetition, side by side.
                    ga, gb = pn.get("gw_cpu_ns_per_packet_by_rep", {}), pb.get("gw_cpu_ns_per_packet_by_rep", {})
                    reps = sorted(set(ga) & set(gb))
                    rs = [gb[r] / ga[r] for r in reps if ga[r] > 0]
                    if rs:
                        lower = sum(1 for r in reps if gb[r] <= ga[r])
                        pa99, pb99 = pn.get("p99_us_by_rep", {}), pb.get("p99_us_by_rep", {})
                        r99 = [pb99[r] / pa99[r] for r in sorted(set(pa99) & set(pb99)) if pa99[r] > 0]
                        a(f"B build (NATGW_B) / natgw, per repetition: gateway CPU "
                          f"{', '.join(f'{x:.2f}' for x in rs)} (median {med(rs):.2f}; B lower in {lower} of {len(reps)})"
                          + (f"; p99 {', '.join(f'{x:.2f}' for x in r99)} (median {med(r99):.2f})" if r99 else "") + ".")
                        a("")
            a("Run-to-run spread (CPU ns/packet of each repetition, in order; spread = (max − min) ÷ median):")
            a("")
            srows = []
            for r in paced:
                if r["mode"] == "base":
                    continue
                def spread(x):
                    m = med(x)
                    return f"{(max(x) - min(x)) / abs(m) * 100:.0f}%" if x and m else "-"
                srows.append([SHORT[r["mode"]], self.rate_label(r["rate_target"]),
                              ", ".join(f"{x:.0f}" for x in r["gw_cpu_ns_per_packet_all"]) or "-",
                              f"{ffmt(r['gw_cpu_ns_per_packet_min'], 0)}–{ffmt(r['gw_cpu_ns_per_packet_max'], 0)}",
                              spread(r["gw_cpu_ns_per_packet_all"]),
                              ", ".join(f"{x:.0f}" for x in r["cpu_ns_per_packet_all"]) or "-",
                              spread(r["cpu_ns_per_packet_all"])])
            a(md_table(["gateway", "rate", "gateway CPU per repetition", "min–max", "spread",
                        "machine-wide per repetition", "spread"], srows))
            a("")
        else:
            a("Not run.")
            a("")
        for p in plots:
            if p.endswith(("-cpu.svg", "-latency.svg")):
                a(f"![{os.path.basename(p)}]({os.path.basename(p)})")
                a("")
        # figure 4
        conn = self.summary.get("conn", [])
        a("## 4. New TCP connections per second")
        a("")
        if conn:
            a(f"`bench/tcpchurn.c` on CPU 0 keeps {s.get('conn_concurrency')} connections in flight to nginx "
              "(one worker, CPU 0, `return 200`) through the gateway: connect, `GET /` with `Connection: close`, read to "
              "the server's close, next. Connect time = non-blocking connect() until writable (handshake through the "
              f"gateway). {s.get('conn_dur_s')} s after 1 s warm-up per run; client port range 1024–65535; each run "
              "connects to its own server address (203.0.113.101–140), so no run meets TIME_WAIT state left by an "
              "earlier one. A connect time near 1 s or 3 s is a retransmitted SYN.")
            a("")
            rows = [[SHORT[r["mode"]], f"**{r['rate_median']:.0f}**", f"{r['rate_min']:.0f}–{r['rate_max']:.0f}",
                     ffmt(r["connect_p50_us"], 0), f"**{ffmt(r['connect_p99_us'], 0)}**", ffmt(r["connect_p999_us"], 0),
                     ffmt(r["request_p99_us"], 0), r["errors"],
                     f"{ffmt(r['cpu0_median'], 0)}% / {ffmt(r['cpu1_median'], 0)}%", "; ".join(r["notes"])] for r in conn]
            a(md_table(["gateway", "conn/s (median)", "min–max", "connect p50 µs", "connect p99 µs", "connect p99.9 µs",
                        "request p99 µs", "errors", "CPU0 / CPU1", "note"], rows))
            a("")
            lb = next((r for r in conn if r["mode"] == "lb"), None)
            dn = next((r for r in conn if r["mode"] == "lbdnat"), None)
            if lb and dn and dn["rate_median"]:
                a(f"Scheduler cost (issue 5): the same churn to a virtual service (`rr` over two real servers) "
                  f"gave {lb['rate_median']:.0f} conn/s against {dn['rate_median']:.0f} through a plain DNAT rule "
                  f"(ratio {lb['rate_median'] / dn['rate_median']:.2f}; connect p99 {ffmt(lb['connect_p99_us'], 0)} "
                  f"vs {ffmt(dn['connect_p99_us'], 0)} µs). Both also masquerade; the client connects to "
                  "10.0.0.200–239 on the gateway's inside interface.")
                a("")
        else:
            a("Not run.")
            a("")
        for p in plots:
            if p.endswith("-conn.svg"):
                a(f"![{os.path.basename(p)}]({os.path.basename(p)})")
                a("")
        # figure 5
        ip = self.summary.get("iperf", [])
        a("## 5. TCP bulk throughput (iperf3)")
        a("")
        if ip:
            a(f"iperf3 client (CPU 0) → server (CPU 0) through the gateway, {s.get('iperf_dur_s')} s after 1 s omitted, "
              "1 and 4 streams; offloads off (so no TSO/GRO: every segment is a packet), MTU 1500.")
            a("")
            rows = [[SHORT[r["mode"]], r["streams"], f"**{r['gbps_median']:.2f}**", f"{r['gbps_min']:.2f}–{r['gbps_max']:.2f}",
                     r["retransmits"], f"{ffmt(r['cpu0_median'], 0)}% / {ffmt(r['cpu1_median'], 0)}%", "; ".join(r["notes"])] for r in ip]
            a(md_table(["gateway", "streams", "Gbit/s (median)", "min–max", "retransmits (all runs)", "CPU0 / CPU1", "note"], rows))
            a("")
        else:
            a("Not run.")
            a("")
        for p in plots:
            if p.endswith("-iperf.svg"):
                a(f"![{os.path.basename(p)}]({os.path.basename(p)})")
                a("")
        # figure 6
        mem = self.summary.get("mem", [])
        a("## 6. Memory per flow")
        a("")
        if mem:
            a(f"`bench/udpgen.c` sends {s.get('mem_flows')} distinct UDP flows once each at {s.get('mem_rate')} pps "
              "(10.0.0.10, source ports 1024–65535 × destination ports 9984–…). Kernel: growth of the slab pages "
              "(from /proc/slabinfo, host-wide) of nf_conntrack and of every cache that grew by at least half as many "
              "objects as flows were created (the NAT extension's kmalloc cache); the conntrack hash table is sized "
              "before the run and not counted. natgw: growth of the process's VmRSS. Flows created = the gateway's "
              "own count (nf_conntrack_count, `natgw flows --count`) after minus before.")
            a("")
            rows = []
            for r in mem:
                det = ""
                if r["mode"] == "kernel":
                    det = ", ".join(f"{c['cache']} +{c['objects']} × {c['objsize']} B" for c in r.get("caches", []))
                else:
                    det = f"VmRSS {r.get('rss_kb_before')} → {r.get('rss_kb_after')} kB"
                rows.append([SHORT[r["mode"]], r["flows_created"], f"**{ffmt(r.get('bytes_per_flow'), 0)}**",
                             ffmt(r.get("bytes_per_flow_objects"), 0) if r["mode"] == "kernel" else "-", det, "; ".join(r["notes"])])
            a(md_table(["gateway", "flows created", "bytes per flow", "bytes per flow (objects only)", "detail", "note"], rows))
            a("")
        else:
            a("Not run.")
            a("")
        # figure 7
        qs = self.summary.get("queues", [])
        a("## 7. natgw with one vs two queues")
        a("")
        if qs:
            a("The gateway path's veths (both ends of client–gateway and gateway–server) switched with "
              "`ethtool -L rx N tx N` between 1 and 2 channels; natgw with `[afxdp] queues = 0` (all) and "
              "`cpus = [1, 0]`: worker 0 on CPU 1, worker 1 on CPU 0, next to the generator. A packet socket "
              "sends on TX queue (sending CPU mod queues), whatever the flow, and veth delivers TX queue *n* to "
              "RX queue *n*; so the two-queue modes run one trafgen process on each CPU (`-P 2`), the one-queue "
              "mode one on CPU 0. Same 64-byte flood as figure 1. Mode natgw2qrt (when run) puts both workers "
              "on CPU 1 at real-time priority (`cpus = [1, 1]`, `rt_priority`): they must take turns, and the "
              "trafgen on CPU 1 gets only what real-time threads leave to ordinary ones, so its queue carries less.")
            a("")
            a(md_table(["gateway", "delivered pps (median)", "min–max", "sent pps", "CPU0 / CPU1", "per-worker rx packets (last run)", "note"],
                       [[SHORT[r["mode"]], f"**{kfmt(r['pps_median'])}**", f"{kfmt(r['pps_min'])}–{kfmt(r['pps_max'])}",
                         kfmt(r["sent_pps_median"]), f"{ffmt(r['cpu0_median'], 0)}% / {ffmt(r['cpu1_median'], 0)}%",
                         r["worker_rx_packets"] if r["worker_rx_packets"] else "-", "; ".join(r["notes"])] for r in qs]))
            a("")
            one = next((r for r in qs if r["mode"] == "natgw"), None)
            two = next((r for r in qs if r["mode"] == "natgw2q"), None)
            if one and two:
                a(f"2 queues / 1 queue = **{two['pps_median'] / one['pps_median']:.2f}×**. With two vCPUs the second "
                  "worker shares CPU 0 with the generator, so this shows the mechanism works, not how it scales.")
                a("")
        else:
            a("Not run.")
            a("")
        # differences
        a("## What differed between the gateways")
        a("")
        a("- Same topology, frames, generator, sink, offloads and CPU placement for all. The kernel paths "
          "get their receive work on CPU 1 through RPS; natgw and xdpfwd are pinned to CPU 1.\n"
          "- **Where the work runs.** natgw and xdpfwd attach native XDP on veth (natgw's default `mode = \"auto\"`): "
          "the lan0 XDP program and the copy into the AF_XDP UMEM run in the *sender's* softirq, i.e. on CPU 0 next "
          "to the generator, before RPS. The kernel paths do all their forwarding on CPU 1. So in the floods natgw "
          "gets part of CPU 0 the kernel does not use; figure 2's machine-wide measure counts CPU on both CPUs, so it "
          "is fair there, while its gateway-CPU measure (CPU 1 and natgw's own time) leaves that part out.\n"
          "- **Closed vs open loop.** trafgen's TX ring (256 frames) gets a slot back only when the skb is freed. "
          "For the kernel paths that happens after forwarding, so trafgen slows to the kernel's pace and the kernel "
          "never drops; natgw's AF_XDP receive frees the skb once copied, so the generator runs ahead and loss shows "
          "natgw's overload.\n"
          "- **State.** The kernel's conntrack table is flushed (`conntrack -F`) before each kernel run; natgw starts "
          "as a fresh process each run. Both may hold up to "
          f"{s.get('ct_max')} flows; the kernel's hash has {s.get('ct_buckets')} buckets, natgw's index grows by itself.\n"
          "- **TUN** adds two kernel routing passes (into and out of the TUN device) and a syscall per packet each way. "
          "natgw TUN moves the kernel's receive work for lan0/wan0 (RPS) off its own CPU at start, so the IP input and "
          "the hand-over into the TUN device run on CPU 0 next to the generator (as natgw AF_XDP's XDP copy does), and "
          "CPU 1 keeps natgw and the kernel's forwarding of what it writes back. Without that move a flood's receive "
          "work, most of it for packets then dropped at the full TUN queue, starves the worker (perf/tun.md).\n"
          "- **xdpfwd** (bench/xdpfwd) rewrites MACs and decrements TTL only: no parsing beyond that, no flow state, "
          "no ARP (static next-hop MACs), one queue.\n"
          "- **raw** is natgw with one `action = \"accept\"` rule: flows are still tracked, nothing is translated.\n"
          "- The sink's nftables ingress rule (and in figures 2–5 the server's stack) runs on whichever CPU "
          "transmitted into the server's veth — CPU 1 for every gateway.")
        a("")
        a("## Caveats")
        a("")
        a("- A shared 2-vCPU VM: see `/work/shared/docs/MACHINE-NOTES.md` (up to 45% drift between batches). Compare "
          "figures within this report only and distrust differences under ~15%. Runs during which others' builds or "
          "benchmarks were seen are marked in the notes.\n"
          "- natgw's workers are ordinary threads: when other processes run on CPU 1 the scheduler shares the CPU "
          "with them, while the kernel's forwarding runs in softirq and preempts them. Figures taken while others' "
          "work ran (marked) therefore penalise natgw more than the kernel, most visibly in latency and connection "
          "times.\n"
          "- veth, not a NIC: AF_XDP is copy mode (one skb allocated and copied per transmitted frame).\n"
          "- A figure within 10% of the generator's ceiling at the same flow count is flagged generator-bound: "
          "it shows the generator's limit, not the gateway's.\n"
          + ("- CPU per packet is work time (wall − idle, figure 2) on a VM whose host takes CPU time away (steal, "
             "shown per row): steal while a CPU works counts as work for every gateway alike, so compare gateways "
             "repetition by repetition (the verdicts do) and read the spread. The gateway-CPU measure leaves out "
             "natgw's work on CPU 0 (the machine-wide one counts it).\n"
             if paced and all(r.get("precise") for r in paced) else
             "- CPU per packet depends on /proc/stat tick accounting (10 ms ticks) over a few seconds on a VM. The "
             "machine-wide measure includes other processes' CPU time; treat its differences under ~100 ns as noise and "
             "compare its run-to-run spread with the gateway-CPU measure's (figure 2). The gateway-CPU measure counts "
             "softirq run in natgw's context twice and leaves out natgw's work on CPU 0 (figure 2 explains both).\n")
          + "- Latency includes the client veth's transmit and the gateway; the generator sends in small bursts "
          "(what came due during one sleep: at most "
          f"{max([r.get('max_batch') or 0 for r in paced], default=0)} frames in one sendmmsg), which shows in p99.9.\n"
          "- Figure 6 reads host-wide slab counters; others' activity in the same seconds adds noise (small against "
          "hundreds of MB).")
        if self.notes:
            a("- Report notes: " + "; ".join(self.notes))
        a("")
        errs = self.errors()
        if errs:
            a("## Failed measurements")
            a("")
            for e in errs:
                a(f"- {e.get('fig')} {e.get('mode')} rep {e.get('rep', '-')}: {e['error']}")
            a("")
        # appendix
        a("## Appendix: configurations")
        a("")
        a("natgw (AF_XDP and, with `backend = \"tun\"`, TUN):")
        a("```toml")
        a(self.meta("natgw_config"))
        a("```")
        a("natgw raw forwarding differs only in its rules:")
        a("```toml")
        raw = self.meta("natgw_raw_config")
        a(raw[raw.find("# Raw forwarding"):] if "# Raw forwarding" in raw else raw)
        a("```")
        a("natgw with two queues: `[afxdp] queues = 0`, `cpus = [1, 0]`, process `taskset -c 1,0`.")
        a("")
        a("Kernel NAT (`nft -f` in the gateway namespace, `net.ipv4.ip_forward = 1`):")
        a("```")
        a(self.meta("kernel_ruleset"))
        a("```")
        stats = sorted(glob.glob(os.path.join(self.work, "stats-fig*-*.txt")))
        if stats:
            a("")
            a("## Appendix: `natgw stats` after the last 1k-flow run of each natgw gateway")
            for p in stats:
                a("")
                a(f"`{os.path.basename(p)[6:-4]}`:")
                a("```")
                a(read(p))
                a("```")
        a("")
        a("## Raw values")
        a("")
        a("```")
        for r in pps:
            a(f"fig1 {r['mode']:<8} {r['flows']:>5} flows: pps {r['pps_all']}")
        for r in qs:
            a(f"fig7 {r['mode']:<8} pps {r['pps_all']}")
        for r in paced:
            if r["mode"] == "base":
                continue
            a(f"fig2 {r['mode']:<8} {r['rate_target']:>7} pps: gateway CPU ns/packet {[round(x) for x in r['gw_cpu_ns_per_packet_all']]}"
              f", machine-wide {[round(x) for x in r['cpu_ns_per_packet_all']]}, CPU 1 busy {[round(x) for x in r['cpu1_busy_ns_per_packet_all']]}"
              f", CPU 0 irq+softirq {[round(x) for x in r['gen_softirq_ns_per_packet_all']]}")
            a(f"fig3 {r['mode']:<8} {r['rate_target']:>7} pps: p99 us {[round(x, 1) for x in r['p99_us_all']]}")
        for r in conn:
            a(f"fig4 {r['mode']:<8} conn/s {[round(x) for x in r['rate_all']]}")
        for r in ip:
            a(f"fig5 {r['mode']:<8} {r['streams']} stream(s) Gbit/s {[round(x, 2) for x in r['gbps_all']]}")
        a("```")
        a("")
        return "\n".join(L)

    def print_summary(self, plots):
        env = self.env
        p = print
        p()
        p(f"natgw benchmark, {env['date_utc']}, commit {env['commit_short']}, {env['kernel']}, {env['cpu_model']}"
          + ("  [--quick: 1 repetition, indicative only]" if self.quick else ""))
        pps = self.summary.get("pps", [])
        if pps:
            p("\n1. 64-byte UDP, delivered pps")
            p(text_table(["gateway", "flows", "pps", "min-max", "sent", "loss", "CPU0/CPU1", "flows held", "note"],
                         self.pps_rows(pps, md=False)))
        qs = self.summary.get("queues", [])
        if qs:
            p("\n7. natgw queues")
            p(text_table(["gateway", "pps", "min-max", "note"],
                         [[SHORT[r["mode"]], kfmt(r["pps_median"]), f"{kfmt(r['pps_min'])}-{kfmt(r['pps_max'])}", "; ".join(r["notes"])] for r in qs]))
        paced = self.summary.get("paced", [])
        for rate in self.paced_rates():
            rr = [r for r in paced if r["rate_target"] == rate]
            inv = rate in self.cpu_invalid
            p(f"\n2+3. paced {self.rate_label(rate, long=True)}: CPU per packet (gateway CPU, machine-wide) and latency")
            p(text_table(["gateway", "rx pps", "gw CPU ns/pkt", "min-max", "machine ns/pkt", "min-max", "p50 us", "p99 us",
                          "p99.9 us", "lost", "note"],
                         [[SHORT[r["mode"]], kfmt(r["rx_pps_median"])]
                          + (["-", "-", "-", "-"] if r["mode"] == "base" else
                             [ffmt(r["gw_cpu_ns_per_packet_median"], 0),
                              f"{ffmt(r['gw_cpu_ns_per_packet_min'], 0)}-{ffmt(r['gw_cpu_ns_per_packet_max'], 0)}",
                              f"({ffmt(r['cpu_ns_per_packet_median'], 0)})" if inv else ffmt(r["cpu_ns_per_packet_median"], 0),
                              f"{ffmt(r['cpu_ns_per_packet_min'], 0)}-{ffmt(r['cpu_ns_per_packet_max'], 0)}"])
                          + [ffmt(r["p50_us"], 1), ffmt(r["p99_us"], 1), ffmt(r["p999_us"], 1),
                             ffmt((r["loss_max"] or 0) * 100, 2, "%"), "; ".join(r["notes"])] for r in rr]))
            if inv:
                p(f"(machine-wide CPU per packet in parentheses: invalid, {self.cpu_invalid[rate]})")
            if rate in self.gw_cpu_invalid:
                p(f"(gateway CPU per packet invalid: {self.gw_cpu_invalid[rate]})")
        conn = self.summary.get("conn", [])
        if conn:
            p("\n4. new TCP connections/s")
            p(text_table(["gateway", "conn/s", "min-max", "connect p99 us", "errors", "CPU0/CPU1", "note"],
                         [[SHORT[r["mode"]], f"{r['rate_median']:.0f}", f"{r['rate_min']:.0f}-{r['rate_max']:.0f}",
                           ffmt(r["connect_p99_us"], 0), r["errors"], f"{ffmt(r['cpu0_median'], 0)}%/{ffmt(r['cpu1_median'], 0)}%",
                           "; ".join(r["notes"])] for r in conn]))
        ip = self.summary.get("iperf", [])
        if ip:
            p("\n5. iperf3 TCP")
            p(text_table(["gateway", "streams", "Gbit/s", "min-max", "CPU0/CPU1", "note"],
                         [[SHORT[r["mode"]], r["streams"], f"{r['gbps_median']:.2f}", f"{r['gbps_min']:.2f}-{r['gbps_max']:.2f}",
                           f"{ffmt(r['cpu0_median'], 0)}%/{ffmt(r['cpu1_median'], 0)}%", "; ".join(r["notes"])] for r in ip]))
        mem = self.summary.get("mem", [])
        if mem:
            p("\n6. memory per flow")
            p(text_table(["gateway", "flows created", "bytes/flow", "note"],
                         [[SHORT[r["mode"]], r["flows_created"], ffmt(r.get("bytes_per_flow"), 0), "; ".join(r["notes"])] for r in mem]))
        p("\nTargets" + (" (--quick: not a verdict)" if self.quick else ""))
        for t in self.targets:
            p(f"  {t['result']:<12} {t['target']}: {t['detail']}")
        errs = self.errors()
        if errs:
            p(f"\n{len(errs)} measurement(s) failed: " + "; ".join(f"{e.get('fig')} {e.get('mode')}: {e['error']}" for e in errs))
        p(f"\nwritten: {self.out}.md, {self.out}.json" + "".join(f", {x}" for x in plots))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", default="perf/bench-latest")
    ap.add_argument("--natgw", default="")
    ap.add_argument("--xdpfwd", default="")
    a = ap.parse_args()
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    Report(a.work, a.out, a.natgw, a.xdpfwd).write()


if __name__ == "__main__":
    sys.exit(main())
