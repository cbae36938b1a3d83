#ifndef SWITCHYARD_CHOST_H
#define SWITCHYARD_CHOST_H
// What the project's processes ask of their host that Swift cannot call directly
// (posix_spawn's attributes, cmsg macros, _GNU_SOURCE-only calls): processes, memory, sockets.
// Addresses are IPv4 in host byte order, ports in host byte order; errors are returned as -errno.
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

// MARK: processes

/// Starts `path` (absolute) with `argv` and `envp` (NULL-terminated) as a child through
/// posix_spawn(3): stdin, stdout and stderr from the three descriptors, every other descriptor
/// closed, every signal at its default and none blocked (whatever the calling thread blocks).
/// Uses no loopback socket, no run loop and no thread. Returns the child's pid, or -errno.
int ch_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err);
/// Starts `argv` (argv[0] an absolute path, NULL-terminated) as a daemon: its own session, not
/// the caller's child (a double fork: init reaps it), stdin /dev/null, stdout and stderr
/// appended to `log`, no other descriptor inherited, default signal handling and an empty signal
/// mask. Returns the daemon's pid, or -errno.
int ch_spawn_detached(char *const argv[], const char *log);
/// pipe2(O_CLOEXEC): both ends closed in every child started after.
int ch_pipe_cloexec(int fds[2]);
/// poll(2) on up to two descriptors for input; *revents gets each one's returned events (0: none).
/// Returns poll's result or -errno.
int ch_poll_in(const int *fds, int count, short *revents, int timeout_ms);
/// Ignores SIGPIPE for the process: a write or splice(2) into a closed socket raises it otherwise.
void ch_ignore_sigpipe(void);

// MARK: memory

/// malloc_trim(0): hands the C heap's free pages back to the kernel; 1 if any were.
int ch_heap_trim(void);
/// Drops this process's mappings of clean file-backed pages (code, read-only data); returns the kB released.
long ch_unmap_clean_file_pages(void);

// MARK: sockets

/// eventfd(2) to wake a loop from another thread.
int ch_eventfd(void);
void ch_eventfd_signal(int fd);
void ch_eventfd_drain(int fd);
/// A non-blocking TCP listener on addr:port (port 0: the kernel picks); the bound port in *bound.
int ch_tcp_listen(uint32_t addr, uint16_t port, int backlog, uint16_t *bound);
/* A TCP listener on [::]:port that takes IPv4 connections too (IPV6_V6ONLY off); -errno on failure. */
int ch_tcp_listen_dual(uint16_t port, int backlog, uint16_t *bound);
/// A non-blocking UDP socket on addr:port with IP_PKTINFO on; the bound port in *bound.
int ch_udp_bind(uint32_t addr, uint16_t port, uint16_t *bound);
/// accept4(2), non-blocking; the peer in *addr/*port.
int ch_accept(int lfd, uint32_t *addr, uint16_t *port);
/// SO_ERROR: 0 or the pending error.
int ch_socket_error(int fd);
int ch_shutdown_write(int fd);
/// Closes with SO_LINGER 0, so the peer sees a reset.
void ch_close_reset(int fd);
/// recvmsg(2) with IP_PKTINFO: the sender in *addr/*port, the local address it was sent to in *local.
ssize_t ch_recv_from(int fd, void *buf, size_t len, uint32_t *addr, uint16_t *port, uint32_t *local);
/// sendmsg(2) to addr:port with the source address `local` (IP_PKTINFO).
ssize_t ch_send_to(int fd, const void *buf, size_t len, uint32_t addr, uint16_t port, uint32_t local);
/// An address of either family, in host order: IPv4 in the low 32 bits of `lo` (v6 == 0), or
/// IPv6 as its 128 bits, `hi` then `lo` (v6 == 1). Passed by value, so a connection's dial costs no
/// allocation for its address.
typedef struct ch_ip { uint64_t hi; uint64_t lo; int32_t v6; } ch_ip;
/// The calls above for either family (those above are these, for IPv4): `ch_ip_tcp_connect` a
/// non-blocking TCP connect, with *in_progress set while it completes; `ch_ip_udp_connect` a
/// connected non-blocking UDP socket. An IPv6 listener or UDP socket takes IPv6 only
/// (IPV6_V6ONLY), as a proxier per family binds its own; its UDP socket reports the local address
/// (IPV6_RECVPKTINFO). `local` with v6 == -1: no source address given.
int ch_ip_tcp_listen(ch_ip addr, uint16_t port, int backlog, uint16_t *bound);
int ch_ip_udp_bind(ch_ip addr, uint16_t port, uint16_t *bound);
int ch_ip_accept(int lfd, ch_ip *addr, uint16_t *port);
int ch_ip_tcp_connect(ch_ip addr, uint16_t port, int *in_progress);
int ch_ip_udp_connect(ch_ip addr, uint16_t port);
ssize_t ch_ip_recv_from(int fd, void *buf, size_t len, ch_ip *addr, uint16_t *port, ch_ip *local);
ssize_t ch_ip_send_to(int fd, const void *buf, size_t len, ch_ip addr, uint16_t port, ch_ip local);
ssize_t ch_recv(int fd, void *buf, size_t len);
ssize_t ch_send(int fd, const void *buf, size_t len);
#endif
