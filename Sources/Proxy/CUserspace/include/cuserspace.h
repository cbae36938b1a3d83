#ifndef SWITCHYARD_CUSERSPACE_H
#define SWITCHYARD_CUSERSPACE_H
// The userspace proxy's data path: epoll with plain tokens (Swift cannot build the packed
// epoll_event), and zero-copy splicing through pipes. Sockets and processes are CHost's.
// Errors are returned as -errno.
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/// epoll(7), with the event's data as a plain 64-bit token.
int cus_epoll_create(void);
int cus_epoll_ctl(int ep, int op, int fd, uint32_t events, uint64_t token);
int cus_epoll_wait(int ep, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);
int cus_epoll_add(void);
int cus_epoll_mod(void);
int cus_epoll_del(void);
uint32_t cus_epollin(void);
uint32_t cus_epollout(void);
uint32_t cus_epollerr(void);
uint32_t cus_epollhup(void);
uint32_t cus_epollrdhup(void);

/// pipe2(O_NONBLOCK|O_CLOEXEC), grown to `size` bytes when it is not 0 (F_SETPIPE_SZ; best effort).
int cus_pipe(int fds[2], int size);
/// splice(2) with SPLICE_F_MOVE|SPLICE_F_NONBLOCK: >0 bytes, 0 end of file, -errno.
ssize_t cus_splice(int in, int out, size_t len);
/// Bytes waiting in a pipe or socket receive queue (FIONREAD).
int cus_pending(int fd);
#endif
