#!/usr/bin/env python3
"""bench/hitless_gaps.py: receive-side analysis of one bench/hitless.sh run.

    hitless_gaps.py CAPTURE.pcap NAT_SRC --count N --rate R [--event T0 T1]

Reads a pcap written by `tcpdump -w ... --time-stamp-precision=nano` (plain
microsecond pcap works too) on the server. Frames are those of
bench/hitless_gen.py: payload "HL" + a 32-bit sequence number 0..N-1, sent
at R frames per second. Counts the frames whose source is NAT_SRC
(translated) and the others (untranslated), which sequence numbers never
arrived, and the gaps between consecutive translated frames (kernel
receive time stamps). T0/T1 (CLOCK_REALTIME seconds, `date +%s.%N`)
bracket the event.

Prints one JSON object:
  nat, plain        frames captured, translated / not
  unique, dup       distinct sequence numbers among the translated; duplicates
  lost              N - unique
  runs              number of runs of consecutive lost sequence numbers
  longest_run       the longest such run, in frames; longest_run_ms = frames / R
  first, last       time stamps of the first and last translated frame
  rate              nat / (last - first): the offered rate really achieved
  max_gap_ms        longest time between consecutive translated frames
  max_gap_at        its start (time stamp of the last frame before it)
  top_gaps          the five longest: [start, length ms]
  p999_gap_us       99.9th percentile of the inter-arrival times
with --event also:
  event_gap_ms      the longest gap overlapping [T0 - 0.1 s, T1 + 0.5 s]
                    (0.1 s before: frames are sent up to tens of ms after
                    they are due when the generator is held up)
  event_gap_at, event_gap_from_t0_ms
  lost_near_event   lost frames that were due in that window (due time of
                    frame i = start + i / R, start estimated from the
                    received frames as min(t_rx - i / R))
  longest_run_from_t0_ms   when the longest run was due, relative to T0
"""
import argparse
import json
import struct


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data, 0)[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    magic = struct.unpack_from(end + "I", data, 0)[0]
    scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
    if struct.unpack_from(end + "I", data, 20)[0] != 1:
        raise SystemExit(f"{path}: not an Ethernet capture")
    hdr = struct.Struct(end + "IIII")
    seqf = struct.Struct("!I").unpack_from
    out = []
    off, n = 24, len(data)
    while off + 16 <= n:
        sec, frac, caplen, _ = hdr.unpack_from(data, off)
        off += 16
        p = off
        off += caplen
        if off > n:
            break
        # Ethernet + IPv4 (no options) + UDP + "HL" + sequence number
        if caplen < 48 or data[p + 12 : p + 14] != b"\x08\x00" or data[p + 23] != 17:
            continue
        if data[p + 42 : p + 44] != b"HL":
            continue
        out.append((sec + frac * scale, data[p + 26 : p + 30], seqf(data, p + 44)[0]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("nat_src")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--event", nargs=2, type=float)
    a = ap.parse_args()
    nat_src = bytes(int(x) for x in a.nat_src.split("."))
    frames = read(a.pcap)
    nat = [(t, s) for t, src, s in frames if src == nat_src]
    res = {"nat": len(nat), "plain": len(frames) - len(nat)}
    seen = bytearray(a.count)
    dup = 0
    for _, s in nat:
        if s < a.count:
            if seen[s]:
                dup += 1
            seen[s] = 1
    unique = sum(seen)
    # runs of lost sequence numbers
    runs, longest, longest_at = 0, 0, None
    i = 0
    while i < a.count:
        if not seen[i]:
            j = i
            while j < a.count and not seen[j]:
                j += 1
            runs += 1
            if j - i > longest:
                longest, longest_at = j - i, i
            i = j
        else:
            i += 1
    res.update(unique=unique, dup=dup, lost=a.count - unique, runs=runs,
               longest_run=longest, longest_run_ms=round(longest / a.rate * 1e3, 3))
    if len(nat) < 2:
        print(json.dumps(res))
        return
    ts = sorted(t for t, _ in nat)
    gaps = [(ts[k + 1] - ts[k], ts[k]) for k in range(len(ts) - 1)]
    top = sorted(gaps, reverse=True)[:5]
    inter = sorted(g for g, _ in gaps)
    res.update(
        first=ts[0],
        last=ts[-1],
        rate=round(len(ts) / (ts[-1] - ts[0])),
        max_gap_ms=round(top[0][0] * 1e3, 3),
        max_gap_at=top[0][1],
        top_gaps=[[round(s, 6), round(g * 1e3, 3)] for g, s in top],
        p999_gap_us=round(inter[int(len(inter) * 0.999)] * 1e6, 1),
    )
    if a.event:
        t0, t1 = a.event
        lo, hi = t0 - 0.1, t1 + 0.5
        near = [(g, s) for g, s in gaps if s + g >= lo and s <= hi]
        if near:
            g, s = max(near)
            res.update(event_gap_ms=round(g * 1e3, 3), event_gap_at=s,
                       event_gap_from_t0_ms=round((s - t0) * 1e3, 3))
        start = min(t - s / a.rate for t, s in nat)
        k_lo = max(0, int((lo - start) * a.rate))
        k_hi = min(a.count, int((hi - start) * a.rate) + 1)
        res["lost_near_event"] = (k_hi - k_lo) - sum(seen[k_lo:k_hi]) if k_hi > k_lo else 0
        if longest_at is not None:
            res["longest_run_from_t0_ms"] = round((start + longest_at / a.rate - t0) * 1e3, 3)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
