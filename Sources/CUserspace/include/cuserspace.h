#ifndef SWITCHYARD_CUSERSPACE_H
#define SWITCHYARD_CUSERSPACE_H
// The syscalls the userspace proxy's data path needs, wrapped where Swift cannot
// call them directly (packed epoll_event, cmsg macros, _GNU_SOURCE-only calls).
// Addresses are IPv4 in host byte order, ports in host byte order; errors are
// returned as -errno.
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

/// Moves this thread into the network namespace at `path` (setns(2), CLONE_NEWNET).
int cus_setns_net(const char *path);

/// Ignores SIGPIPE for the process: splice(2) into a closed socket raises it otherwise.
void cus_ignore_sigpipe(void);

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

/// eventfd(2) to wake a loop from another thread.
int cus_eventfd(void);
void cus_eventfd_signal(int fd);
void cus_eventfd_drain(int fd);

/// pipe2(O_NONBLOCK|O_CLOEXEC), grown to `size` bytes when it is not 0 (F_SETPIPE_SZ; best effort).
int cus_pipe(int fds[2], int size);
/// splice(2) with SPLICE_F_MOVE|SPLICE_F_NONBLOCK: >0 bytes, 0 end of file, -errno.
ssize_t cus_splice(int in, int out, size_t len);
/// Bytes waiting in a pipe or socket receive queue (FIONREAD).
int cus_pending(int fd);

/// A non-blocking TCP listener on addr:port (port 0: the kernel picks); the bound port in *bound.
int cus_tcp_listen(uint32_t addr, uint16_t port, int backlog, uint16_t *bound);
/// A non-blocking UDP socket on addr:port with IP_PKTINFO on; the bound port in *bound.
int cus_udp_bind(uint32_t addr, uint16_t port, uint16_t *bound);
/// accept4(2), non-blocking; the peer in *addr/*port.
int cus_accept(int lfd, uint32_t *addr, uint16_t *port);
/// A non-blocking TCP connect: the socket, with *in_progress set while it completes.
int cus_tcp_connect(uint32_t addr, uint16_t port, int *in_progress);
/// A connected non-blocking UDP socket.
int cus_udp_connect(uint32_t addr, uint16_t port);
/// SO_ERROR: 0 or the pending error.
int cus_socket_error(int fd);
int cus_shutdown_write(int fd);
/// Closes with SO_LINGER 0, so the peer sees a reset.
void cus_close_reset(int fd);

/// Starts `argv` (argv[0] an absolute path, NULL-terminated) as a daemon: its own session, not
/// the caller's child (a double fork: init reaps it), stdin /dev/null, stdout and stderr
/// appended to `log`, no other descriptor inherited, default signal handling and an empty signal
/// mask. Returns the daemon's pid, or -errno.
int cus_spawn_detached(char *const argv[], const char *log);

/// Starts `path` (absolute) with `argv` and `envp` (NULL-terminated) as a child through
/// posix_spawn(3): stdin, stdout and stderr from the three descriptors, every other descriptor
/// closed, every signal at its default and none blocked (whatever the calling thread blocks).
/// Uses no loopback socket, no run loop and no thread. Returns the child's pid, or -errno.
int cus_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err);
/// pipe2(O_CLOEXEC): both ends closed in every child started after.
int cus_pipe_cloexec(int fds[2]);
/// poll(2) on up to two descriptors for input; *revents gets each one's returned events (0: none).
/// Returns poll's result or -errno.
int cus_poll_in(const int *fds, int count, short *revents, int timeout_ms);

/// recvmsg(2) with IP_PKTINFO: the sender in *addr/*port, the local address it was sent to in *local.
ssize_t cus_recv_from(int fd, void *buf, size_t len, uint32_t *addr, uint16_t *port, uint32_t *local);
/// sendmsg(2) to addr:port with the source address `local` (IP_PKTINFO).
ssize_t cus_send_to(int fd, const void *buf, size_t len, uint32_t addr, uint16_t port, uint32_t local);
ssize_t cus_recv(int fd, void *buf, size_t len);
ssize_t cus_send(int fd, const void *buf, size_t len);
/// malloc_trim(0): hands the C heap's free pages back to the kernel; 1 if any were.
int cus_heap_trim(void);
/// Drops this process's mappings of clean file-backed pages (code, read-only data); returns the kB released.
long cus_unmap_clean_file_pages(void);
#endif
