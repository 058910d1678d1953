// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kdiag trace tcp: connect, accept and close, failed connects with the errno
 * the kernel stored in sk->sk_err, RSTs received and sent, retransmits.
 * Only tracepoints: this must run on kernels without kprobes.
 */
#include "common.h"
#include <bpf/bpf_tracing.h>

#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115
#define EALREADY 114
#define EISCONN 106
#define ECONNABORTED 103

enum event_type {
	EV_CONNECT = 1,
	EV_ACCEPT = 2,
	EV_CLOSE = 3,
	EV_RST_RECV = 4,
	EV_RST_SENT = 5,
	EV_RETRANSMIT = 6,
};

struct event {
	__u64 ts;
	__u64 cgroup_id;
	__u32 netns;
	__u32 pid;
	__u32 tid;
	__s32 err;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 type;
	__u8 oldstate;
	__u8 comm[KDIAG_COMM_LEN];
};

/* owner remembers which process started an active open, keyed by sock. */
struct owner {
	__u32 pid;
	__u32 tid;
	__u8 comm[KDIAG_COMM_LEN];
};

/* pending_connect remembers a connect(2) in flight, keyed by thread id. */
struct pending_connect {
	__u8 sa[28];
	__u8 syn_sent;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending_connect);
} connects SEC(".maps");

const volatile __u8 failures_only = 0;

/* Keeps struct event in BTF so that bpf2go generates its Go type. */
const struct event *unused_event __attribute__((unused));

/* Layout of the syscalls:sys_{enter,exit}_connect tracepoints. */
struct connect_enter_args {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 fd;
	__u64 uservaddr;
	__u64 addrlen;
};

struct connect_exit_args {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

static __always_inline void fill_owner(struct event *e, const void *sk)
{
	__u64 key = (__u64)sk;
	struct owner *o = bpf_map_lookup_elem(&owners, &key);
	if (o) {
		e->pid = o->pid;
		e->tid = o->tid;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	}
}

/* fill_from_sk copies the socket's local and remote addresses and ports. */
static __always_inline void fill_from_sk(struct event *e, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->family = family;
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)e->daddr, sk, __sk_common.skc_v6_daddr);
	}
}

/*
 * fill_reply_from_skb fills the addresses of a reply to the received skb
 * (local = its destination): what tcp_send_reset answers when no socket
 * matched the segment.
 */
static __always_inline void fill_reply_from_skb(struct event *e, const struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct tcphdr tcp = {};
	bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th);
	e->sport = bpf_ntohs(tcp.dest);
	e->dport = bpf_ntohs(tcp.source);
	__u8 version = 0;
	bpf_probe_read_kernel(&version, 1, head + nh);
	if ((version >> 4) == 4) {
		struct iphdr ip = {};
		bpf_probe_read_kernel(&ip, sizeof(ip), head + nh);
		e->family = AF_INET;
		__builtin_memcpy(e->saddr, &ip.daddr, 4);
		__builtin_memcpy(e->daddr, &ip.saddr, 4);
	} else {
		struct ipv6hdr ip6 = {};
		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		e->family = AF_INET6;
		__builtin_memcpy(e->saddr, &ip6.daddr, 16);
		__builtin_memcpy(e->daddr, &ip6.saddr, 16);
	}
}

static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u64 key = (__u64)sk;
	__u8 type = 0;
	__s32 err = 0;

	if (newstate == TCP_SYN_SENT) {
		/* connect(2) runs in the caller's context: remember who it is. */
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		struct owner o = {.pid = pid_tgid >> 32, .tid = (__u32)pid_tgid};
		bpf_get_current_comm(&o.comm, sizeof(o.comm));
		bpf_map_update_elem(&owners, &key, &o, BPF_ANY);
		__u32 tid = (__u32)pid_tgid;
		struct pending_connect *pc = bpf_map_lookup_elem(&connects, &tid);
		if (pc)
			pc->syn_sent = 1;
		return 0;
	}
	if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		type = EV_CONNECT;
	} else if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE) {
		type = EV_CONNECT;
		err = BPF_CORE_READ(sk, sk_err);
		if (!err)
			err = BPF_CORE_READ(sk, sk_err_soft);
		if (!err)
			err = ECONNABORTED;
	} else if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		type = EV_ACCEPT;
	} else if (newstate == TCP_CLOSE && oldstate != TCP_LISTEN && oldstate != TCP_CLOSE) {
		type = EV_CLOSE;
		err = BPF_CORE_READ(sk, sk_err);
	} else {
		return 0;
	}
	if (failures_only && err == 0)
		goto out;

	__u64 cg = sk_cgroup(sk);
	__u32 netns = sk_netns(sk);
	if (!wanted(cg, netns))
		goto out;

	struct event *e = reserve(&events, sizeof(*e));
	if (!e)
		goto out;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_boot_ns();
	e->type = type;
	e->oldstate = oldstate;
	e->err = err;
	e->cgroup_id = cg;
	e->netns = netns;
	fill_from_sk(e, sk);
	fill_owner(e, sk);
	bpf_ringbuf_submit(e, 0);
out:
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&owners, &key);
	return 0;
}

static __always_inline int on_sk_event(const struct sock *sk, __u8 type)
{
	__u64 cg = sk_cgroup(sk);
	__u32 netns = sk_netns(sk);
	if (!wanted(cg, netns))
		return 0;
	struct event *e = reserve(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_boot_ns();
	e->type = type;
	e->oldstate = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->cgroup_id = cg;
	e->netns = netns;
	fill_from_sk(e, sk);
	fill_owner(e, sk);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline int on_send_reset(const struct sock *sk, const struct sk_buff *skb)
{
	/* A request or timewait socket is not a full socket: use the skb. */
	if (sk && BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_NEW_SYN_RECV &&
	    BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_TIME_WAIT)
		return on_sk_event(sk, EV_RST_SENT);
	if (!skb)
		return 0;
	__u32 netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	if (!wanted(0, netns))
		return 0;
	struct event *e = reserve(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_boot_ns();
	e->type = EV_RST_SENT;
	e->oldstate = sk ? BPF_CORE_READ(sk, __sk_common.skc_state) : TCP_LISTEN;
	e->netns = netns;
	fill_reply_from_skb(e, skb);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * Two flavours of each handler. tp_btf programs are preferred: the kernel
 * only skips one when the same program is already running on the CPU,
 * whereas it skips a classic tracepoint program whenever any other tracing
 * program runs there (a softirq interrupting a syscall hook). Either way
 * the skips are counted (recursion misses) and reported.
 */
/*
 * The kernel skips a tp_btf program that is already running on the CPU:
 * inet_sock_set_state fires in process context (connect, close) and again
 * in a softirq that interrupts it (the peer's SYN-ACK, FIN, RST), so a
 * single program would miss some transitions under load. A twin program on
 * the same tracepoint handles exactly the calls that arrive while the
 * primary is running on this CPU (set_state_busy), and counts them in
 * set_state_rescued so user space can tell rescued skips from lost ones.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} set_state_busy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} set_state_rescued SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(btf_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	__u32 *busy = bpf_map_lookup_elem(&set_state_busy, &zero);
	if (busy)
		*busy = 1;
	on_set_state(sk, oldstate, newstate);
	if (busy)
		*busy = 0;
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(btf_set_state_twin, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	__u32 *busy = bpf_map_lookup_elem(&set_state_busy, &zero);
	if (!busy || !*busy)
		return 0; /* the primary handles this call */
	__u64 *rescued = bpf_map_lookup_elem(&set_state_rescued, &zero);
	if (rescued)
		(*rescued)++;
	return on_set_state(sk, oldstate, newstate);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(btf_receive_reset, struct sock *sk)
{
	return on_sk_event(sk, EV_RST_RECV);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(btf_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	return on_send_reset(sk, skb);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(btf_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	return on_sk_event(sk, EV_RETRANSMIT);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tp_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	return on_set_state(ctx->skaddr, ctx->oldstate, ctx->newstate);
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
	return on_sk_event(ctx->skaddr, EV_RST_RECV);
}

SEC("tracepoint/tcp/tcp_send_reset")
int tp_send_reset(struct trace_event_raw_tcp_send_reset *ctx)
{
	return on_send_reset(ctx->skaddr, ctx->skbaddr);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tp_retransmit(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
	return on_sk_event(ctx->skaddr, EV_RETRANSMIT);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int handle_connect_enter(struct connect_enter_args *ctx)
{
	struct pending_connect pc = {};
	if (bpf_probe_read_user(pc.sa, sizeof(pc.sa), (void *)ctx->uservaddr))
		return 0;
	__u16 family = *(__u16 *)pc.sa;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&connects, &tid, &pc, BPF_ANY);
	return 0;
}

/*
 * handle_connect_exit reports a connect(2) that failed before a SYN was ever
 * sent (no route, no local port...). Failures after SYN_SENT are reported
 * by handle_set_state with the socket's addresses.
 */
SEC("tracepoint/syscalls/sys_exit_connect")
int handle_connect_exit(struct connect_exit_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct pending_connect *pc = bpf_map_lookup_elem(&connects, &tid);
	if (!pc)
		return 0;
	__s64 ret = ctx->ret;
	if (pc->syn_sent || ret >= 0 || ret == -EINPROGRESS || ret == -EALREADY || ret == -EISCONN)
		goto out;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	__u64 cg = bpf_get_current_cgroup_id();
	if (!wanted(cg, netns))
		goto out;
	struct event *e = reserve(&events, sizeof(*e));
	if (!e)
		goto out;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_boot_ns();
	e->type = EV_CONNECT;
	e->err = -ret;
	e->cgroup_id = cg;
	e->netns = netns;
	e->pid = pid_tgid >> 32;
	e->tid = tid;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	__u16 family = *(__u16 *)pc->sa;
	e->family = family;
	e->dport = bpf_ntohs(*(__u16 *)(pc->sa + 2));
	if (family == AF_INET)
		__builtin_memcpy(e->daddr, pc->sa + 4, 4);
	else
		__builtin_memcpy(e->daddr, pc->sa + 8, 16);
	bpf_ringbuf_submit(e, 0);
out:
	bpf_map_delete_elem(&connects, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
