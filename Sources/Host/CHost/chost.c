#define _GNU_SOURCE
#include "chost.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

void ch_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }
int ch_eventfd(void) { int r = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); return r < 0 ? -errno : r; }
void ch_eventfd_signal(int fd) { uint64_t one = 1; ssize_t r = write(fd, &one, sizeof one); (void)r; }
void ch_eventfd_drain(int fd) { uint64_t v; ssize_t r = read(fd, &v, sizeof v); (void)r; }
static struct sockaddr_in sin_of(uint32_t addr, uint16_t port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(addr);
    sa.sin_port = htons(port);
    return sa;
}
int ch_tcp_listen_dual(uint16_t port, int backlog, uint16_t *bound) {
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_any;
    sa.sin6_port = htons(port);
    socklen_t l = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog < 0 ? 0 : backlog) != 0
        || getsockname(fd, (struct sockaddr *)&sa, &l) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *bound = ntohs(sa.sin6_port);
    return fd;
}
int ch_socket_error(int fd) {
    int e = 0;
    socklen_t l = sizeof e;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0) return errno;
    return e;
}
int ch_shutdown_write(int fd) { return shutdown(fd, SHUT_WR) == 0 ? 0 : -errno; }
void ch_close_reset(int fd) {
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}
/* Either family's sockaddr for addr:port; its length in *len. */
static void ss_of(ch_ip addr, uint16_t port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    if (addr.v6 == 1) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        for (int i = 0; i < 8; i++) {
            s6->sin6_addr.s6_addr[i] = (uint8_t)(addr.hi >> (56 - 8 * i));
            s6->sin6_addr.s6_addr[8 + i] = (uint8_t)(addr.lo >> (56 - 8 * i));
        }
        *len = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        *s4 = sin_of((uint32_t)addr.lo, port);
        *len = sizeof *s4;
    }
}
static ch_ip ip_of_in6(const struct in6_addr *a) {
    ch_ip ip = { 0, 0, 1 };
    for (int i = 0; i < 8; i++) {
        ip.hi = ip.hi << 8 | a->s6_addr[i];
        ip.lo = ip.lo << 8 | a->s6_addr[8 + i];
    }
    return ip;
}
static ch_ip ip_of(const struct sockaddr_storage *ss, uint16_t *port) {
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        *port = ntohs(s6->sin6_port);
        return ip_of_in6(&s6->sin6_addr);
    }
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
    *port = ntohs(s4->sin_port);
    ch_ip ip = { 0, ntohl(s4->sin_addr.s_addr), 0 };
    return ip;
}
/* A bound (and, with backlog >= 0, listening) non-blocking socket of addr's family, or -errno. */
static int ip_bound_socket(int type, ch_ip addr, uint16_t port, int backlog, uint16_t *bound) {
    int fam = addr.v6 == 1 ? AF_INET6 : AF_INET;
    int fd = socket(fam, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fam == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (type == SOCK_DGRAM) setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one);
    } else if (type == SOCK_DGRAM) {
        setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one);
    }
    struct sockaddr_storage ss;
    socklen_t l;
    ss_of(addr, port, &ss, &l);
    if (bind(fd, (struct sockaddr *)&ss, l) != 0 || (backlog >= 0 && listen(fd, backlog) != 0)) {
        int e = errno;
        close(fd);
        return -e;
    }
    l = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &l) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    ip_of(&ss, bound);
    return fd;
}
int ch_ip_tcp_listen(ch_ip addr, uint16_t port, int backlog, uint16_t *bound) {
    return ip_bound_socket(SOCK_STREAM, addr, port, backlog < 0 ? 0 : backlog, bound);
}
int ch_ip_udp_bind(ch_ip addr, uint16_t port, uint16_t *bound) { return ip_bound_socket(SOCK_DGRAM, addr, port, -1, bound); }
int ch_ip_accept(int lfd, ch_ip *addr, uint16_t *port) {
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    int fd = accept4(lfd, (struct sockaddr *)&ss, &l, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
    *addr = ip_of(&ss, port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}
int ch_ip_tcp_connect(ch_ip addr, uint16_t port, int *in_progress) {
    int fd = socket(addr.v6 == 1 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_storage ss;
    socklen_t l;
    ss_of(addr, port, &ss, &l);
    *in_progress = 0;
    if (connect(fd, (struct sockaddr *)&ss, l) != 0) {
        if (errno == EINPROGRESS) { *in_progress = 1; return fd; }
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}
int ch_ip_udp_connect(ch_ip addr, uint16_t port) {
    int fd = socket(addr.v6 == 1 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_storage ss;
    socklen_t l;
    ss_of(addr, port, &ss, &l);
    if (connect(fd, (struct sockaddr *)&ss, l) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}
ssize_t ch_ip_recv_from(int fd, void *buf, size_t len, ch_ip *addr, uint16_t *port, ch_ip *local) {
    struct sockaddr_storage ss;
    char control[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr m = { .msg_name = &ss, .msg_namelen = sizeof ss, .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = control, .msg_controllen = sizeof control };
    ssize_t n = recvmsg(fd, &m, 0);
    if (n < 0) return -errno;
    *addr = ip_of(&ss, port);
    ch_ip none = { 0, 0, -1 };
    *local = none;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            ch_ip l4 = { 0, ntohl(pi.ipi_addr.s_addr), 0 };
            *local = l4;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            *local = ip_of_in6(&pi.ipi6_addr);
        }
    }
    return n;
}
ssize_t ch_ip_send_to(int fd, const void *buf, size_t len, ch_ip addr, uint16_t port, ch_ip local) {
    struct sockaddr_storage ss;
    socklen_t l;
    ss_of(addr, port, &ss, &l);
    char control[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    memset(control, 0, sizeof control);
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr m = { .msg_name = &ss, .msg_namelen = l, .msg_iov = &iov, .msg_iovlen = 1 };
    if (local.v6 == 0 && local.lo != 0) {
        m.msg_control = control;
        m.msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pi;
        memset(&pi, 0, sizeof pi);
        pi.ipi_spec_dst.s_addr = htonl((uint32_t)local.lo);
        memcpy(CMSG_DATA(c), &pi, sizeof pi);
    } else if (local.v6 == 1) {
        m.msg_control = control;
        m.msg_controllen = CMSG_SPACE(sizeof(struct in6_pktinfo));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
        struct in6_pktinfo pi;
        memset(&pi, 0, sizeof pi);
        struct sockaddr_storage ls;
        socklen_t ll;
        ss_of(local, 0, &ls, &ll);
        pi.ipi6_addr = ((struct sockaddr_in6 *)&ls)->sin6_addr;
        memcpy(CMSG_DATA(c), &pi, sizeof pi);
    }
    ssize_t n = sendmsg(fd, &m, 0);
    return n < 0 ? -errno : n;
}
/* The IPv4 calls, for callers that have only IPv4 addresses at hand. */
static ch_ip ip4(uint32_t addr) { ch_ip ip = { 0, addr, 0 }; return ip; }
int ch_tcp_listen(uint32_t addr, uint16_t port, int backlog, uint16_t *bound) { return ch_ip_tcp_listen(ip4(addr), port, backlog, bound); }
int ch_udp_bind(uint32_t addr, uint16_t port, uint16_t *bound) { return ch_ip_udp_bind(ip4(addr), port, bound); }
int ch_accept(int lfd, uint32_t *addr, uint16_t *port) {
    ch_ip a;
    int fd = ch_ip_accept(lfd, &a, port);
    if (fd >= 0) *addr = (uint32_t)a.lo;
    return fd;
}
ssize_t ch_recv_from(int fd, void *buf, size_t len, uint32_t *addr, uint16_t *port, uint32_t *local) {
    ch_ip a, l;
    ssize_t n = ch_ip_recv_from(fd, buf, len, &a, port, &l);
    if (n >= 0) {
        *addr = (uint32_t)a.lo;
        *local = l.v6 == 0 ? (uint32_t)l.lo : 0;
    }
    return n;
}
ssize_t ch_send_to(int fd, const void *buf, size_t len, uint32_t addr, uint16_t port, uint32_t local) {
    return ch_ip_send_to(fd, buf, len, ip4(addr), port, ip4(local));
}
ssize_t ch_recv(int fd, void *buf, size_t len) { ssize_t n = recv(fd, buf, len, 0); return n < 0 ? -errno : n; }
ssize_t ch_send(int fd, const void *buf, size_t len) { ssize_t n = send(fd, buf, len, MSG_NOSIGNAL); return n < 0 ? -errno : n; }
int ch_spawn_detached(char *const argv[], const char *log) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    pid_t child = fork();
    if (child < 0) { int e = errno; close(report[0]); close(report[1]); return -e; }
    if (child == 0) {
        /* Only async-signal-safe calls from here to exec. */
        setsid();
        pid_t daemon = fork();
        if (daemon != 0) {
            int r = daemon < 0 ? -errno : daemon;
            (void)write(report[1], &r, sizeof r);
            _exit(0);
        }
        /* A daemon starts with default signal handling, whatever its starter ignored or blocked. */
        for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in < 0 || out < 0) { int r = -errno; (void)write(report[1], &r, sizeof r); _exit(127); }
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        for (int fd = 3; fd < 65536; fd++) if (fd != report[1]) close(fd);
        execv(argv[0], argv);
        int r = -errno;
        (void)write(report[1], &r, sizeof r);   /* the exec failed: a second report */
        _exit(127);
    }
    close(report[1]);
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    int pid = -ECHILD;
    ssize_t n = read(report[0], &pid, sizeof pid);
    if (n == (ssize_t)sizeof pid && pid > 0) {
        /* A failed exec reports again before the pipe closes (closed on exec otherwise). */
        int failure;
        if (read(report[0], &failure, sizeof failure) == (ssize_t)sizeof failure) pid = failure;
    }
    close(report[0]);
    return pid;
}
int ch_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return -rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return -rc; }
    posix_spawn_file_actions_adddup2(&actions, in, 0);
    posix_spawn_file_actions_adddup2(&actions, out, 1);
    posix_spawn_file_actions_adddup2(&actions, err, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid = -1;
    rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc == 0 ? (int)pid : -rc;
}
int ch_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}
int ch_poll_in(const int *fds, int count, short *revents, int timeout_ms) {
    struct pollfd p[2];
    if (count < 0 || count > 2) return -EINVAL;
    for (int i = 0; i < count; i++) { p[i].fd = fds[i]; p[i].events = POLLIN; p[i].revents = 0; }
    int n = poll(p, (nfds_t)count, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < count; i++) revents[i] = p[i].revents;
    return n;
}
int ch_heap_trim(void) {
    return malloc_trim(0);
}
/* Whether the VmFlags line of an smaps entry has the two-letter flag `flag`. */
static int vm_flag(const char *line, const char *flag) {
    for (const char *p = line + strlen("VmFlags:"); *p; p++) {
        if (p[0] == flag[0] && p[1] == flag[1] && (p[-1] == ' ') && (p[2] == ' ' || p[2] == '\n' || p[2] == 0)) return 1;
    }
    return 0;
}
long ch_unmap_clean_file_pages(void) {
    /* Walks /proc/self/smaps and, for every mapping of a file that is read-only, was never
       writable (no `ac` flag: relocated RELRO data was, and keeps its private copies), and holds
       no private page in memory or in swap, drops the page table entries. The pages stay in the
       page cache; the next touch maps them again (a minor fault). Anything else is skipped:
       MADV_DONTNEED would throw private contents away. Each entry is decided at its VmFlags
       line, its last. */
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f) return -errno;
    char line[8192];
    unsigned long start = 0, end = 0;
    int candidate = 0;
    long rss = 0, anon = -1, swap = -1, released = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[8];
        int pathOffset = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &a, &b, perms, &pathOffset) == 3 && pathOffset > 0) {
            start = a; end = b; rss = 0; anon = -1; swap = -1;
            candidate = perms[1] != 'w' && perms[3] == 'p' && line[pathOffset] == '/';
            continue;
        }
        if (!candidate) continue;
        long kb;
        if (sscanf(line, "Rss: %ld kB", &kb) == 1) rss = kb;
        else if (sscanf(line, "Anonymous: %ld kB", &kb) == 1) anon = kb;
        else if (sscanf(line, "Swap: %ld kB", &kb) == 1) swap = kb;
        else if (strncmp(line, "VmFlags:", 8) == 0) {
            if (rss > 0 && anon == 0 && swap == 0 && !vm_flag(line, "ac") && !vm_flag(line, "wr")
                && madvise((void *)start, end - start, MADV_DONTNEED) == 0) released += rss;
            candidate = 0;
        }
    }
    fclose(f);
    return released;
}
