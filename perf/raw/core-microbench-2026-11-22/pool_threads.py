import re,sys,statistics as st
rows={}
for f in sys.argv[1:]:
    for l in open(f):
        m=re.match(r'threads/(\S+(?: shards\))?)\s+rep (\d+): 1 thread\s+([\d.]+) M/s, 2 threads\s+([\d.]+) M/s, x([\d.]+) \(control x([\d.]+)/x([\d.]+)(, clean)?',l)
        if m:
            n=m.group(1); rows.setdefault(n,[]).append((float(m.group(3)),float(m.group(4)),float(m.group(5)),bool(m.group(8)),f))
for n,r in rows.items():
    c=[x for x in r if x[3]]
    def s(v):
        if not v: return 'none'
        return f"n={len(v):2d} 1T {st.median([x[0] for x in v]):7.2f} M/s  2T {st.median([x[1] for x in v]):7.2f} M/s  median ratio x{st.median([x[2] for x in v]):.2f} (IQR {st.quantiles([x[2] for x in v],n=4)[0] if len(v)>1 else v[0][2]:.2f}-{st.quantiles([x[2] for x in v],n=4)[2] if len(v)>1 else v[0][2]:.2f})"
    print(f"{n:<32} all:   {s(r)}")
    print(f"{'':<32} clean: {s(c)}")
