/* bench/udpgen.c: a paced UDP frame generator and a latency sink for
 * bench/run.sh (built there with `cc -O2`).
 *
 *   udpgen send --if IF --src-mac MAC --dst-mac MAC --src IP --dst IP
 *               [--sport 1024] [--dport 7000] [--flows 1024] [--rate PPS]
 *               [--warm S] [--duration S] [--count N] [--burst B]
 *   udpgen sink --port P [--max S]
 *
 * send: 60-byte frames (64 with the FCS) written to IF through an AF_PACKET
 * socket (through the qdisc, like `trafgen -Q`), full IPv4 and UDP
 * checksums, at a fixed rate: the sender sleeps (clock_nanosleep, timer
 * slack 1 ns) until the next frame is due and then sends every frame that
 * is due in one sendmmsg (so at 150 kpps a few frames per wake-up; with
 * --burst B it waits until B frames are due, for fewer wake-ups). It never
 * spins, so its CPU time is what sending costs, not what waiting costs.
 * Flow i (i = seq mod flows) has source port sport + i mod 64512 and
 * destination port dport + i / 64512. The 18-byte payload carries
 * magic 0x4e47, flags (bit 0: sent after the warm-up), a sequence number
 * and the CLOCK_REALTIME send time in ns. Prints one JSON object at the end.
 *
 * sink: a UDP socket on port P with SO_TIMESTAMPNS; latency = kernel receive
 * time stamp (taken when the frame enters the server's namespace) - send
 * time stamp. Exact percentiles over every frame sent after the warm-up.
 * Stops on SIGINT/SIGTERM (or after --max seconds) and prints JSON.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4e47
#define FRAME 60
#define BATCH 64

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

static uint64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void parse_mac(const char *s, uint8_t *m)
{
    if (sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) {
        fprintf(stderr, "udpgen: bad MAC %s\n", s);
        exit(2);
    }
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)p[i] << 8 | p[i + 1];
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static int do_send(int argc, char **argv)
{
    const char *ifname = NULL, *smac = NULL, *dmac = NULL, *sip = NULL, *dip = NULL;
    long sport = 1024, dport = 7000, flows = 1024;
    double rate = 100000, warm = 1, dur = 5;
    long long count = 0;
    long burst = 1;
    static struct option o[] = {
        {"if", 1, 0, 'i'}, {"src-mac", 1, 0, 'm'}, {"dst-mac", 1, 0, 'M'}, {"src", 1, 0, 's'},
        {"dst", 1, 0, 'd'}, {"sport", 1, 0, 'p'}, {"dport", 1, 0, 'P'}, {"flows", 1, 0, 'f'},
        {"rate", 1, 0, 'r'}, {"warm", 1, 0, 'w'}, {"duration", 1, 0, 't'}, {"count", 1, 0, 'n'},
        {"burst", 1, 0, 'b'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", o, NULL)) != -1) {
        switch (c) {
        case 'i': ifname = optarg; break;
        case 'm': smac = optarg; break;
        case 'M': dmac = optarg; break;
        case 's': sip = optarg; break;
        case 'd': dip = optarg; break;
        case 'p': sport = atol(optarg); break;
        case 'P': dport = atol(optarg); break;
        case 'f': flows = atol(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 't': dur = atof(optarg); break;
        case 'n': count = atoll(optarg); break;
        case 'b': burst = atol(optarg); break;
        default: return 2;
        }
    }
    if (burst < 1 || burst > BATCH)
        burst = 1;
    if (!ifname || !smac || !dmac || !sip || !dip || flows < 1 || rate <= 0) {
        fprintf(stderr, "udpgen send: --if --src-mac --dst-mac --src --dst are required\n");
        return 2;
    }
    uint8_t tmpl[FRAME] = {0};
    parse_mac(dmac, tmpl);
    parse_mac(smac, tmpl + 6);
    put16(tmpl + 12, ETH_P_IP);
    uint8_t *ip = tmpl + 14, *udp = tmpl + 34, *pl = tmpl + 42;
    ip[0] = 0x45;
    put16(ip + 2, FRAME - 14);
    put16(ip + 6, 0x4000); /* DF */
    ip[8] = 64;
    ip[9] = 17;
    if (inet_pton(AF_INET, sip, ip + 12) != 1 || inet_pton(AF_INET, dip, ip + 16) != 1) {
        fprintf(stderr, "udpgen: bad address\n");
        return 2;
    }
    put16(ip + 10, fold(sum16(ip, 20, 0)));
    put16(udp + 4, FRAME - 34);
    /* Pseudo-header sum: addresses, protocol, UDP length. */
    uint32_t pseudo = sum16(ip + 12, 8, 0) + 17 + (FRAME - 34);

    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0)
        die("socket(AF_PACKET)");
    int sb = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sb, sizeof sb);
    struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(ifname)};
    if (!ll.sll_ifindex)
        die(ifname);
    if (bind(fd, (struct sockaddr *)&ll, sizeof ll) < 0)
        die("bind");
    ll.sll_halen = 6;
    memcpy(ll.sll_addr, tmpl, 6);

    prctl(PR_SET_TIMERSLACK, 1UL);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);

    static uint8_t frames[BATCH][FRAME];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = frames[i];
        iov[i].iov_len = FRAME;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &ll;
        msgs[i].msg_hdr.msg_namelen = sizeof ll;
    }

    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    uint64_t t_measure = t0 + (uint64_t)(warm * 1e9);
    uint64_t t_end = t0 + (uint64_t)((warm + dur) * 1e9);
    long long sent = 0, sent_measured = 0, wakeups = 0, errors = 0, max_batch = 0;
    double ns_per = 1e9 / rate;
    uint64_t t_first_measured = 0, t_last = t0;
    while (!stop) {
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        if (count ? sent >= count : now >= t_end)
            break;
        long long due = (long long)((double)(now - t0) / ns_per) + 1;
        if (count && due > count)
            due = count;
        long long n = due - sent;
        if (n <= 0 || (n < burst && !(count && sent + n >= count))) {
            uint64_t next = t0 + (uint64_t)((double)(sent + burst - 1) * ns_per);
            struct timespec ts = {.tv_sec = next / 1000000000ull, .tv_nsec = next % 1000000000ull};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            wakeups++;
            continue;
        }
        if (n > BATCH)
            n = BATCH;
        if (n > max_batch)
            max_batch = n;
        int measured = now >= t_measure;
        if (measured && !t_first_measured)
            t_first_measured = now;
        uint64_t wall = now_ns(CLOCK_REALTIME);
        for (int k = 0; k < n; k++) {
            uint8_t *f = frames[k];
            memcpy(f, tmpl, FRAME);
            long long seq = sent + k;
            long i = (long)(seq % flows);
            uint16_t sp = (uint16_t)(sport + i % 64512), dp = (uint16_t)(dport + i / 64512);
            put16(f + 34, sp);
            put16(f + 36, dp);
            uint8_t *p = f + 42;
            put16(p, MAGIC);
            put16(p + 2, measured ? 1 : 0);
            put32(p + 4, (uint32_t)seq);
            put64(p + 8, wall);
            uint16_t cs = fold(sum16(f + 34, FRAME - 34, pseudo));
            put16(f + 40, cs ? cs : 0xffff);
        }
        int r = sendmmsg(fd, msgs, (unsigned)n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            errors++;
            if (errno == ENOBUFS || errno == EAGAIN) {
                usleep(50);
                continue;
            }
            die("sendmmsg");
        }
        sent += r;
        if (measured)
            sent_measured += r;
        t_last = now;
    }
    (void)pl;
    double el = (double)(t_last - t0) / 1e9;
    double mel = t_first_measured ? (double)(t_last - t_first_measured) / 1e9 : 0;
    printf("{\"sent\": %lld, \"sent_measured\": %lld, \"elapsed_s\": %.3f, \"measured_s\": %.3f, "
           "\"rate_target\": %.0f, \"rate_measured\": %.0f, \"wakeups\": %lld, \"max_batch\": %lld, "
           "\"send_errors\": %lld}\n",
           sent, sent_measured, el, mel, rate, mel > 0 ? sent_measured / mel : 0.0, wakeups, max_batch,
           errors);
    return 0;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int do_sink(int argc, char **argv)
{
    int port = 7000;
    double maxs = 600;
    static struct option o[] = {{"port", 1, 0, 'p'}, {"max", 1, 0, 'x'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", o, NULL)) != -1) {
        switch (c) {
        case 'p': port = atoi(optarg); break;
        case 'x': maxs = atof(optarg); break;
        default: return 2;
        }
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    int one = 1, rb = 64 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rb, sizeof rb);
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0)
        die("SO_TIMESTAMPNS");
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);
    fprintf(stderr, "udpgen sink: listening on %d\n", port);

    static uint8_t bufs[BATCH][256];
    static char ctl[BATCH][256];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    size_t cap = 1 << 20, n = 0;
    int64_t *lat = malloc(cap * sizeof *lat);
    long long recv_all = 0, recv_measured = 0, foreign = 0, no_ts = 0, negative = 0;
    uint64_t t_end = now_ns(CLOCK_MONOTONIC) + (uint64_t)(maxs * 1e9);
    while (!stop && now_ns(CLOCK_MONOTONIC) < t_end) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = ctl[i];
            msgs[i].msg_hdr.msg_controllen = sizeof ctl[i];
        }
        int r = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            die("recvmmsg");
        }
        uint64_t fallback = now_ns(CLOCK_REALTIME);
        for (int i = 0; i < r; i++) {
            recv_all++;
            const uint8_t *p = bufs[i];
            if (msgs[i].msg_len < 16 || get16(p) != MAGIC) {
                foreign++;
                continue;
            }
            if (!(get16(p + 2) & 1))
                continue;
            recv_measured++;
            uint64_t rx = 0;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm; cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm))
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    rx = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
                }
            if (!rx) {
                rx = fallback;
                no_ts++;
            }
            int64_t l = (int64_t)(rx - get64(p + 8));
            if (l < 0)
                negative++;
            if (n == cap) {
                cap *= 2;
                lat = realloc(lat, cap * sizeof *lat);
                if (!lat)
                    die("realloc");
            }
            lat[n++] = l;
        }
    }
    qsort(lat, n, sizeof *lat, cmp64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
#define PCT(q) (n ? lat[(size_t)((q) * (double)n + 0.999999) > 0 ? (size_t)((q) * (double)n + 0.999999) - 1 : 0] : 0)
    printf("{\"received\": %lld, \"received_measured\": %lld, \"foreign\": %lld, \"no_kernel_ts\": %lld, "
           "\"negative\": %lld, \"min_ns\": %lld, \"p50_ns\": %lld, \"p90_ns\": %lld, \"p99_ns\": %lld, "
           "\"p999_ns\": %lld, \"max_ns\": %lld, \"mean_ns\": %.0f}\n",
           recv_all, recv_measured, foreign, no_ts, negative, (long long)(n ? lat[0] : 0), (long long)PCT(0.5),
           (long long)PCT(0.9), (long long)PCT(0.99), (long long)PCT(0.999), (long long)(n ? lat[n - 1] : 0),
           n ? sum / (double)n : 0.0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "send"))
        return do_send(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "sink"))
        return do_sink(argc - 1, argv + 1);
    fprintf(stderr, "usage: udpgen send|sink ... (see the comment at the top of bench/udpgen.c)\n");
    return 2;
}
