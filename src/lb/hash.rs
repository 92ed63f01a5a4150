//! Hash-table schedulers: IPVS's 256-bucket tables for `sh` and `dh`, and
//! the Maglev lookup table for `mh`.
//!
//! The hashes are fixed functions of addresses and ports, not seeded: two
//! natgw instances with the same servers (an HA pair, or a process and its
//! successor after a handover) send a client to the same server.

use super::sched::gcd;
use super::service::RealServer;

/// An empty slot (no servers).
pub(super) const NONE: u16 = u16::MAX;

const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;

/// Hashed probes the `mh` fallback tries before walking the table.
const MH_PROBES: u64 = 256;
/// Bits of `weight / gcd` that `mh` keeps (IPVS `IP_VS_MH_TAB_BITS`), so a
/// huge weight cannot make one server's turn swallow the table.
const MH_WEIGHT_BITS: u32 = 6;

// Keys of the Maglev hashes (fixed; see the module docs).
const K_OFFSET: u64 = 0x2545_f491_4f6c_dd1d;
const K_SKIP: u64 = 0x9e6c_63d0_676a_9a99;
const K_CLIENT: u64 = 0xd6e8_feb8_6659_fd93;

/// IPVS `ip_vs_sh_reassign`: in list order, each server takes `weight`
/// consecutive buckets (at least one), cycling until all are filled.
pub(super) fn sh_table(reals: &[RealServer]) -> Box<[u16]> {
    let mut t = vec![NONE; BUCKETS];
    if reals.is_empty() {
        return t.into();
    }
    let (mut p, mut taken) = (0, 0);
    for b in &mut t {
        *b = p as u16;
        taken += 1;
        if taken >= reals[p].weight {
            p = (p + 1) % reals.len();
            taken = 0;
        }
    }
    t.into()
}

/// IPVS `ip_vs_dh_reassign`: buckets go to the servers in turn.
pub(super) fn dh_table(reals: &[RealServer]) -> Box<[u16]> {
    (0..BUCKETS)
        .map(|i| match reals.len() {
            0 => NONE,
            n => (i % n) as u16,
        })
        .collect()
}

/// The server for `addr` (and `port`, 0 when not hashed) in an `sh`/`dh`
/// table. With `fallback`, an unavailable server's clients probe the other
/// buckets from their own hash (`ip_vs_sh_get_fallback`), so they spread
/// over the others and come back when it does.
pub(super) fn bucket_lookup(
    t: &[u16],
    reals: &[RealServer],
    addr: u32,
    port: u16,
    fallback: bool,
) -> Option<usize> {
    let ihash = bucket(addr, port, 0);
    let first = available(t[ihash], reals);
    if first.is_some() || !fallback || t[ihash] == NONE {
        return first;
    }
    (0..BUCKETS as u32)
        .map(|off| t[bucket(addr, port, (off + ihash as u32) % BUCKETS as u32)])
        .find_map(|d| available(d, reals))
}

/// IPVS `ip_vs_sh_hashkey`: Linux `hash_32(port + addr, 8)`, shifted by
/// `offset` for fallback probes.
fn bucket(addr: u32, port: u16, offset: u32) -> usize {
    let h = (port as u32).wrapping_add(addr).wrapping_mul(0x61c8_8647) >> (32 - BUCKET_BITS);
    offset.wrapping_add(h) as usize & (BUCKETS - 1)
}

/// Maglev population (`ip_vs_mh_populate`). Each server with a non-zero
/// last weight gets a permutation of the `m` slots from its own hash
/// (`offset`, `skip`; `m` prime so every skip visits every slot) and, in
/// rounds, takes the next free slot of its permutation `turns` times, with
/// `turns` its weight over the weights' gcd. The table fills completely.
pub(super) fn maglev_table(reals: &[RealServer], m: u32) -> Box<[u16]> {
    let mut table = vec![NONE; m as usize];
    let g = reals.iter().map(|r| r.last_weight()).fold(0, gcd);
    if g == 0 {
        return table.into();
    }
    let top = reals.iter().map(|r| r.last_weight() / g).max().unwrap_or(0);
    let shift = (32 - top.leading_zeros()).saturating_sub(MH_WEIGHT_BITS);

    struct Walk {
        next: u32,
        skip: u32,
        turns: u32,
    }
    let mut walks: Vec<Walk> = reals
        .iter()
        .map(|r| {
            let lw = r.last_weight();
            let id = ((r.addr as u64) << 16) | r.port as u64;
            Walk {
                next: (mix64(K_OFFSET ^ id) % m as u64) as u32,
                skip: (mix64(K_SKIP ^ id) % (m as u64 - 1)) as u32 + 1,
                turns: match (lw / g) >> shift {
                    0 => (lw != 0) as u32,
                    t => t,
                },
            }
        })
        .collect();

    let mut filled = 0;
    loop {
        for (i, w) in walks.iter_mut().enumerate() {
            for _ in 0..w.turns {
                while table[w.next as usize] != NONE {
                    w.next += w.skip;
                    if w.next >= m {
                        w.next -= m;
                    }
                }
                table[w.next as usize] = i as u16;
                filled += 1;
                if filled == m {
                    return table.into();
                }
            }
        }
    }
}

/// The server in the client's Maglev slot. With `fallback`, an unavailable
/// server's clients try further slots from their own hash (as
/// `ip_vs_mh_get_fallback`) and then walk the table, so one is found
/// whenever any server is available.
pub(super) fn maglev_lookup(
    t: &[u16],
    reals: &[RealServer],
    client: u32,
    port: u16,
    fallback: bool,
) -> Option<usize> {
    let m = t.len() as u64;
    let key = ((client as u64) << 16) | port as u64;
    let slot = |off: u64| (mix64(mix64(K_CLIENT ^ key) ^ off) % m) as usize;
    let ihash = slot(0);
    let first = available(t[ihash], reals);
    if first.is_some() || !fallback || t[ihash] == NONE {
        return first;
    }
    if !reals.iter().any(|r| r.last_weight() > 0 && r.eligible()) {
        return None;
    }
    (1..=MH_PROBES)
        .find_map(|off| available(t[slot(off)], reals))
        .or_else(|| (1..t.len()).find_map(|k| available(t[(ihash + k) % t.len()], reals)))
}

fn available(d: u16, reals: &[RealServer]) -> Option<usize> {
    let i = d as usize;
    (d != NONE && reals[i].eligible()).then_some(i)
}

/// splitmix64's finaliser: a fast, well-spread 64-bit mix.
pub(super) fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::super::service::tests::{Rng, VIP, build, rip, spec};
    use super::super::{Change, HashOpts, Health, LbTable, MhOpts, RealSpec, Scheduler};
    use super::*;
    use crate::conntrack::Time;

    fn mh(table_size: u32) -> Scheduler {
        Scheduler::Mh(MhOpts {
            table_size,
            ..MhOpts::default()
        })
    }

    fn sh() -> Scheduler {
        Scheduler::Sh(HashOpts::default())
    }

    fn clients(n: usize) -> Vec<u32> {
        let mut rng = Rng(0x5eed);
        (0..n).map(|_| rng.next() as u32).collect()
    }

    /// Real server address each client gets.
    fn assign(t: &LbTable, cs: &[u32]) -> Vec<Option<u32>> {
        let svc = t.service(&spec(Scheduler::Rr, &[]).key).unwrap();
        cs.iter()
            .map(|&c| svc.schedule(c, 1, Time(0)).map(|i| svc.real(i).addr))
            .collect()
    }

    fn moved(a: &[Option<u32>], b: &[Option<u32>]) -> f64 {
        a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
    }

    #[test]
    fn sh_table_follows_weights_like_ipvs() {
        let svc = build(&spec(sh(), &[2, 1, 0]));
        let t = sh_table(svc.reals());
        assert_eq!(&t[..8], &[0, 0, 1, 2, 0, 0, 1, 2]);
        assert!(sh_table(&[]).iter().all(|&d| d == NONE));
        assert_eq!(&dh_table(svc.reals())[..4], &[0, 1, 2, 0]);
    }

    #[test]
    fn maglev_fills_the_table_in_proportion_to_weights() {
        let svc = build(&spec(mh(65_537), &[1, 2, 3, 0]));
        let t = maglev_table(svc.reals(), 65_537);
        let mut n = [0usize; 4];
        for &d in t.iter() {
            n[d as usize] += 1;
        }
        assert_eq!(n[3], 0);
        for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
            let share = n[i] as f64 / 65_537.0;
            assert!((share - w / 6.0).abs() < 0.01, "server {i}: {share}");
        }
    }

    #[test]
    fn hash_schedulers_keep_a_client_on_one_server() {
        for s in [sh(), mh(65_537), mh(251)] {
            let a = build(&spec(s, &[1, 2, 1, 3]));
            // Same configuration built again, elsewhere: same answers.
            let b = build(&spec(s, &[1, 2, 1, 3]));
            for c in clients(2000) {
                let first = a.schedule(c, 1, Time(0));
                for port in [2, 3, 40000] {
                    assert_eq!(a.schedule(c, port, Time(0)), first, "{s:?}");
                }
                assert_eq!(b.schedule(c, 9, Time(0)), first, "{s:?}");
            }
        }
    }

    #[test]
    fn port_option_spreads_one_client() {
        let s = Scheduler::Mh(MhOpts {
            port: true,
            table_size: 251,
            ..MhOpts::default()
        });
        let svc = build(&spec(s, &[1, 1, 1]));
        let mut seen = [false; 3];
        for p in 0..100 {
            seen[svc.schedule(rip(50), 1000 + p, Time(0)).unwrap().index()] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn dh_hashes_the_destination() {
        let svc = build(&spec(Scheduler::Dh(HashOpts::default()), &[1, 1, 1]));
        let to = |client, dst| {
            let c = super::super::NewConn {
                client,
                client_port: 1,
                dst,
                dst_port: 80,
            };
            svc.schedule_conn(&c, Time(0)).unwrap()
        };
        let one = to(1, VIP);
        assert!(clients(100).iter().all(|&c| to(c, VIP) == one));
        let spread: std::collections::HashSet<_> = clients(100).iter().map(|&d| to(1, d)).collect();
        assert_eq!(spread.len(), 3);
    }

    /// Clients that move when one of `n` equal servers is removed: the max
    /// over which server goes, for `mh` and `sh`.
    fn disruption(s: Scheduler, n: u8, cs: &[u32]) -> f64 {
        let weights = vec![1; n as usize];
        let t = LbTable::build(&[spec(s, &weights)], &LbTable::new(1)).unwrap();
        let before = assign(&t, cs);
        (1..=n)
            .map(|gone| {
                let del = Change::DelReal {
                    service: spec(s, &[]).key,
                    addr: rip(gone),
                    port: 8080,
                };
                moved(&before, &assign(&t.apply(&del).unwrap(), cs))
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn removing_a_server_moves_about_one_nth_with_mh() {
        let cs = clients(100_000);
        for n in [3u8, 5, 10] {
            let m = disruption(mh(65_537), n, &cs);
            let s = disruption(sh(), n, &cs);
            eprintln!(
                "remove 1 of {n}: mh moved {:.2}% of clients, sh {:.2}% (1/N = {:.2}%)",
                m * 100.0,
                s * 100.0,
                100.0 / n as f64
            );
            assert!(
                m <= 1.0 / n as f64 + 0.05,
                "mh moved {m} of clients for n={n}"
            );
            assert!(s > m, "sh {s} vs mh {m}");
        }
    }

    #[test]
    fn mh_drain_and_health_move_only_that_servers_clients() {
        let cs = clients(20_000);
        let key = spec(Scheduler::Rr, &[]).key;
        let t = LbTable::build(&[spec(mh(4093), &[1, 1, 1, 1])], &LbTable::new(1)).unwrap();
        let before = assign(&t, &cs);
        let only_rip2_moved = |after: &[Option<u32>]| {
            before
                .iter()
                .zip(after)
                .all(|(b, a)| b == a || *b == Some(rip(2)))
                && after.iter().all(|a| *a != Some(rip(2)))
        };

        // Drain rip 2: its clients spread, nobody else moves (last weight).
        let drain = |w| Change::EditReal {
            service: key,
            real: RealSpec {
                addr: rip(2),
                port: 8080,
                weight: w,
            },
        };
        let drained = t.apply(&drain(0)).unwrap();
        let after = assign(&drained, &cs);
        assert!(only_rip2_moved(&after));
        let spread: std::collections::HashSet<_> = after.iter().collect();
        assert_eq!(spread.len(), 3);
        // Back to weight 1: everyone is where they were.
        assert_eq!(assign(&drained.apply(&drain(1)).unwrap(), &cs), before);

        // Down, then up again: same, without a new table.
        t.set_health(key, rip(2), 8080, Health::Down).unwrap();
        assert!(only_rip2_moved(&assign(&t, &cs)));
        t.set_health(key, rip(2), 8080, Health::Up).unwrap();
        assert_eq!(assign(&t, &cs), before);
    }

    #[test]
    fn without_fallback_an_unavailable_servers_clients_get_none() {
        for s in [
            Scheduler::Sh(HashOpts {
                fallback: false,
                port: false,
            }),
            Scheduler::Mh(MhOpts {
                fallback: false,
                port: false,
                table_size: 251,
            }),
        ] {
            let svc = build(&spec(s, &[1, 1]));
            svc.reals()[0].state().set_health(Health::Down);
            let got: Vec<_> = clients(200)
                .iter()
                .map(|&c| svc.schedule(c, 1, Time(0)))
                .collect();
            assert!(got.contains(&None), "{s:?}");
            assert!(got.iter().flatten().all(|i| i.index() == 1), "{s:?}");
        }
    }

    #[test]
    fn mh_fallback_finds_a_lone_small_server() {
        // One eligible server holding a single slot among many down ones.
        let mut w = vec![5; 20];
        w.push(1);
        let svc = build(&spec(mh(251), &w));
        for r in &svc.reals()[..20] {
            r.state().set_health(Health::Down);
        }
        for c in clients(500) {
            assert_eq!(svc.schedule(c, 1, Time(0)).unwrap().index(), 20);
        }
    }
}
