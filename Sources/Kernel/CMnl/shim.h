#ifndef SWITCHYARD_CMNL_SHIM_H
#define SWITCHYARD_CMNL_SHIM_H
// Socket headers first: <linux/netfilter*.h> clashes with Glibc otherwise.
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_addr.h>
#include <linux/veth.h>
#include <linux/genetlink.h>
#include <linux/if_bridge.h>
#include <linux/ip.h>
#include <linux/ip_vs.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <libmnl/libmnl.h>

// Swift cannot see function-like macros; wrap what the Swift side needs.
static inline size_t cmnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
static inline int cmnl_clone_newnet(void) { return 0x40000000; /* CLONE_NEWNET */ }
static inline int cmnl_setns(int fd, int nstype) { return (int)syscall(SYS_setns, fd, nstype); }
static inline int cmnl_nlmsg_ok(const struct nlmsghdr *nlh, int len) { return mnl_nlmsg_ok(nlh, len); }
#endif
