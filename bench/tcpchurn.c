/* bench/tcpchurn.c: a TCP connection-churn client for bench/run.sh (built
 * there with `cc -O2`), like `wrk -H 'Connection: close'` but it also
 * measures the connect time.
 *
 *   tcpchurn --dst IP [--port 80] [--conns 64] [--warm S] [--duration S]
 *
 * Keeps --conns connections in flight with one epoll loop. Each connection:
 * non-blocking connect(); connect time = until the socket is writable
 * (handshake done); send "GET / HTTP/1.1 ... Connection: close"; read until
 * the server closes; close; start the next one. Only connections that
 * finish after the warm-up count. A connection that has not finished after
 * 3 s is abandoned and counted as a timeout. Prints one JSON object.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    int state; /* 0 free, 1 connecting, 2 reading */
    uint64_t t_start, t_conn;
    size_t got;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

struct samples {
    int64_t *v;
    size_t n, cap;
};
static void push(struct samples *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v)
            abort();
    }
    s->v[s->n++] = x;
}
static int64_t pct(struct samples *s, double q)
{
    if (!s->n)
        return 0;
    size_t k = (size_t)(q * (double)s->n + 0.999999);
    return s->v[k ? k - 1 : 0];
}

static struct sockaddr_in dst;
static int ep;
static char req[256];
static size_t reqlen;
static long long e_connect, e_reset, e_timeout, e_other;

static void start(struct conn *c, int idx)
{
    for (;;) {
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            e_other++;
            usleep(1000);
            continue;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->t_start = now_ns();
        int r = connect(c->fd, (struct sockaddr *)&dst, sizeof dst);
        if (r < 0 && errno != EINPROGRESS) {
            e_connect++;
            close(c->fd);
            usleep(1000);
            continue;
        }
        break;
    }
    c->state = 1;
    c->got = 0;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void finish(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = 0;
}

int main(int argc, char **argv)
{
    const char *ip = NULL;
    int port = 80, nconn = 64;
    double warm = 1, dur = 5;
    static struct option o[] = {{"dst", 1, 0, 'd'}, {"port", 1, 0, 'p'}, {"conns", 1, 0, 'c'},
                                {"warm", 1, 0, 'w'}, {"duration", 1, 0, 't'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", o, NULL)) != -1) {
        switch (ch) {
        case 'd': ip = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 'w': warm = atof(optarg); break;
        case 't': dur = atof(optarg); break;
        default: return 2;
        }
    }
    if (!ip || nconn < 1) {
        fprintf(stderr, "usage: tcpchurn --dst IP [--port 80] [--conns 64] [--warm S] [--duration S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &dst.sin_addr) != 1)
        return 2;
    reqlen = (size_t)snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", ip);
    ep = epoll_create1(0);
    struct conn *cs = calloc((size_t)nconn, sizeof *cs);
    struct samples conn_t = {0}, req_t = {0};
    long long done = 0, done_all = 0;
    uint64_t t0 = now_ns(), t_measure = t0 + (uint64_t)(warm * 1e9), t_end = t_measure + (uint64_t)(dur * 1e9);
    uint64_t t_first = 0, t_last = 0, last_sweep = t0;
    for (int i = 0; i < nconn; i++)
        start(&cs[i], i);
    struct epoll_event evs[256];
    char buf[4096];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= t_end)
            break;
        if (now - last_sweep > 100000000ull) { /* abandon stuck connections */
            last_sweep = now;
            for (int i = 0; i < nconn; i++)
                if (cs[i].state && now - cs[i].t_start > 3000000000ull) {
                    e_timeout++;
                    finish(&cs[i]);
                    start(&cs[i], i);
                }
        }
        int n = epoll_wait(ep, evs, 256, 50);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            struct conn *c = &cs[i];
            if (!c->state)
                continue;
            uint32_t e = evs[k].events;
            now = now_ns();
            if (c->state == 1) {
                int err = 0;
                socklen_t l = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
                if (err) {
                    if (err == ECONNRESET || err == ECONNREFUSED)
                        e_reset++;
                    else
                        e_connect++;
                    finish(c);
                    start(c, i);
                    continue;
                }
                if (!(e & EPOLLOUT))
                    continue;
                c->t_conn = now;
                if (write(c->fd, req, reqlen) != (ssize_t)reqlen) {
                    e_other++;
                    finish(c);
                    start(c, i);
                    continue;
                }
                c->state = 2;
                struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            /* reading */
            for (;;) {
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r > 0) {
                    c->got += (size_t)r;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (r < 0 || c->got == 0) {
                    e_reset++;
                } else {
                    done_all++;
                    if (c->t_start >= t_measure) {
                        if (!t_first)
                            t_first = c->t_start;
                        done++;
                        t_last = now;
                        push(&conn_t, (int64_t)(c->t_conn - c->t_start));
                        push(&req_t, (int64_t)(now - c->t_start));
                    }
                }
                finish(c);
                start(c, i);
                break;
            }
        }
    }
    qsort(conn_t.v, conn_t.n, sizeof(int64_t), cmp64);
    qsort(req_t.v, req_t.n, sizeof(int64_t), cmp64);
    double el = (double)(t_end - t_measure) / 1e9;
    printf("{\"conns\": %lld, \"conns_all\": %lld, \"duration_s\": %.3f, \"rate\": %.0f, "
           "\"connect_p50_us\": %.1f, \"connect_p99_us\": %.1f, \"connect_p999_us\": %.1f, \"connect_max_us\": %.1f, "
           "\"request_p50_us\": %.1f, \"request_p99_us\": %.1f, \"errors_connect\": %lld, \"errors_reset\": %lld, "
           "\"timeouts\": %lld, \"errors_other\": %lld, \"concurrency\": %d}\n",
           done, done_all, el, done / el, pct(&conn_t, .5) / 1e3, pct(&conn_t, .99) / 1e3, pct(&conn_t, .999) / 1e3,
           conn_t.n ? conn_t.v[conn_t.n - 1] / 1e3 : 0.0, pct(&req_t, .5) / 1e3, pct(&req_t, .99) / 1e3, e_connect,
           e_reset, e_timeout, e_other, nconn);
    (void)t_first;
    (void)t_last;
    return 0;
}
