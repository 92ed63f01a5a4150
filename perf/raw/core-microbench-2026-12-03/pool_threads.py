import re,sys,statistics as st
cur=None; data={}
for line in open(sys.argv[1]):
    m=re.match(r"=== (\w+) round",line)
    if m: cur=m.group(1); continue
    m=re.match(r"threads/(\S+)\s+rep \d+: 1 thread\s+([\d.]+) M/s, 2 threads\s+([\d.]+) M/s, x([\d.]+) \(control x([\d.]+)/x([\d.]+)(, clean)?",line)
    if m:
        name=m.group(1); a=float(m.group(2)); b=float(m.group(3)); clean=bool(m.group(7))
        data.setdefault((name,cur),[]).append((a,b,b/a,clean))
for (name,v),xs in sorted(data.items()):
    cl=[x for x in xs if x[3]]
    def s(ys):
        if not ys: return "none"
        r=[y[2] for y in ys]
        return f"n={len(ys)} 1T {st.median([y[0] for y in ys]):.2f} M/s 2T {st.median([y[1] for y in ys]):.2f} M/s ratio x{st.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
    print(f"{name:28} {v:4} clean: {s(cl)} | all: {s(xs)}")
