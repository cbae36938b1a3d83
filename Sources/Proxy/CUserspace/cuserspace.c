#define _GNU_SOURCE
#include "cuserspace.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>

int cus_epoll_create(void) { int r = epoll_create1(EPOLL_CLOEXEC); return r < 0 ? -errno : r; }
int cus_epoll_ctl(int ep, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = { .events = events, .data = { .u64 = token } };
    return epoll_ctl(ep, op, fd, &ev) == 0 ? 0 : -errno;
}
int cus_epoll_wait(int ep, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) { tokens[i] = evs[i].data.u64; events[i] = evs[i].events; }
    return n;
}
int cus_epoll_add(void) { return EPOLL_CTL_ADD; }
int cus_epoll_mod(void) { return EPOLL_CTL_MOD; }
int cus_epoll_del(void) { return EPOLL_CTL_DEL; }
uint32_t cus_epollin(void) { return EPOLLIN; }
uint32_t cus_epollout(void) { return EPOLLOUT; }
uint32_t cus_epollerr(void) { return EPOLLERR; }
uint32_t cus_epollhup(void) { return EPOLLHUP; }
uint32_t cus_epollrdhup(void) { return EPOLLRDHUP; }


int cus_pipe(int fds[2], int size) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
    if (size > 0) fcntl(fds[1], F_SETPIPE_SZ, size);
    return 0;
}
ssize_t cus_splice(int in, int out, size_t len) {
    ssize_t n = splice(in, NULL, out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    return n < 0 ? -errno : n;
}
int cus_pending(int fd) { int n = 0; return ioctl(fd, FIONREAD, &n) == 0 ? n : -errno; }
