// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kdiag trace dns: DNS messages (UDP and TCP, IPv4 and IPv6) seen at the
 * sockets that send and receive them. The program is a cgroup_skb hook on
 * the root of the cgroup2 hierarchy, so it sees every socket of the node
 * once, in the owning container's cgroup, whatever the network namespace:
 * no kprobes, no per-pod attachment, and no duplicates from the bridge.
 * The DNS payload is copied out; user space parses it.
 */
#include "common.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define DNS_MAX 512

struct event {
	__u64 ts;
	__u64 cgroup_id;
	__u32 netns;
	__u32 pid;
	__u32 tid;
	__u16 family;
	__u16 len; /* bytes of DNS message in data[] */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 egress;
	__u8 proto;
	__u8 truncated;
	__u8 pad;
	__u8 comm[KDIAG_COMM_LEN];
	__u8 data[DNS_MAX];
};

/* Keeps struct event in BTF so that bpf2go generates its Go type. */
const struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} events SEC(".maps");

/* ports holds the UDP/TCP ports (host order) that carry DNS. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

/* scratch builds an event before bpf_ringbuf_output copies only its used part. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *) __ksym __weak;

/* Set when the kernel has bpf_cast_to_kern_ctx (6.3+) to report the netns. */
const volatile __u8 have_kern_ctx = 0;

static __always_inline __u32 skb_netns(struct __sk_buff *skb)
{
	if (!have_kern_ctx || !bpf_cast_to_kern_ctx)
		return 0;
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct sock *sk = BPF_CORE_READ(kskb, sk);
	if (sk)
		return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return BPF_CORE_READ(kskb, dev, nd_net.net, ns.inum);
}

static __always_inline bool is_dns_port(__u16 sport, __u16 dport)
{
	return bpf_map_lookup_elem(&ports, &dport) || bpf_map_lookup_elem(&ports, &sport);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 egress)
{
	__u32 l4off;
	__u8 proto;
	__u16 family;
	__u8 saddr[16] = {}, daddr[16] = {};

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 1;
		/* Only the first fragment carries the UDP header. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 1;
		proto = ip.protocol;
		l4off = ip.ihl * 4;
		family = AF_INET;
		__builtin_memcpy(saddr, &ip.saddr, 4);
		__builtin_memcpy(daddr, &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 1;
		proto = ip6.nexthdr;
		l4off = sizeof(ip6);
		family = AF_INET6;
		__builtin_memcpy(saddr, &ip6.saddr, 16);
		__builtin_memcpy(daddr, &ip6.daddr, 16);
	} else {
		return 1;
	}

	__u16 sport, dport;
	__u32 dnsoff;
	if (proto == IPPROTO_UDP) {
		struct udphdr uh;
		if (bpf_skb_load_bytes(skb, l4off, &uh, sizeof(uh)))
			return 1;
		sport = bpf_ntohs(uh.source);
		dport = bpf_ntohs(uh.dest);
		dnsoff = l4off + sizeof(uh);
	} else if (proto == IPPROTO_TCP) {
		struct tcphdr th;
		if (bpf_skb_load_bytes(skb, l4off, &th, sizeof(th)))
			return 1;
		sport = bpf_ntohs(th.source);
		dport = bpf_ntohs(th.dest);
		/* A TCP DNS message starts with its 16-bit length. */
		dnsoff = l4off + th.doff * 4 + 2;
	} else {
		return 1;
	}
	if (!is_dns_port(sport, dport))
		return 1;
	if (skb->len < dnsoff + 12)
		return 1; /* no DNS header: SYN, ACK, FIN... */
	if (proto == IPPROTO_TCP) {
		/* Only segments that start a message. */
		__u16 msglen;
		if (bpf_skb_load_bytes(skb, dnsoff - 2, &msglen, sizeof(msglen)))
			return 1;
		if (bpf_ntohs(msglen) < 12)
			return 1;
	}

	__u64 cg = bpf_skb_cgroup_id(skb);
	__u32 netns = skb_netns(skb);
	if (!wanted(cg, netns))
		return 1;

	__u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 1;
	e->ts = bpf_ktime_get_boot_ns();
	e->cgroup_id = cg;
	e->netns = netns;
	e->family = family;
	__builtin_memcpy(e->saddr, saddr, 16);
	__builtin_memcpy(e->daddr, daddr, 16);
	e->sport = sport;
	e->dport = dport;
	e->egress = egress;
	e->proto = proto;
	if (egress) {
		/* Sending runs in the sender's context (sendmsg -> ip_output). */
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		e->pid = pid_tgid >> 32;
		e->tid = (__u32)pid_tgid;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	} else {
		e->pid = 0;
		e->tid = 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	}

	__u32 n = skb->len - dnsoff;
	e->truncated = 0;
	if (n > DNS_MAX) {
		n = DNS_MAX;
		e->truncated = 1;
	}
	/*
	 * n is in [12, DNS_MAX]; say it so that the verifier sees 0 < n <=
	 * DNS_MAX (clang would fold a plain range check away).
	 */
	__u32 m = n - 1;
	asm volatile("%[m] &= 0x1ff" : [m] "+r"(m));
	n = m + 1;
	if (bpf_skb_load_bytes(skb, dnsoff, e->data, n))
		return 1;
	e->len = n;
	__u64 size = offsetof(struct event, data) + n;
	if (size > sizeof(*e))
		return 1;
	if (bpf_ringbuf_output(&events, e, size, 0))
		count_lost();
	return 1;
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
