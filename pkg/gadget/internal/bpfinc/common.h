/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared pieces of kdiag's gadgets: the lost-event counter that every ring
 * buffer pairs with, and the in-kernel filter (a set of cgroup v2 ids and a
 * set of network-namespace inode numbers) that user space fills from the
 * Kubernetes filter flags.
 */
#ifndef KDIAG_COMMON_H
#define KDIAG_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define KDIAG_COMM_LEN 16
#define KDIAG_MAX_FILTER 4096

/* Set by the loader before the programs are loaded. */
const volatile __u8 filter_by_cgroup = 0;
const volatile __u8 filter_by_netns = 0;

/* lost counts, per CPU, every event whose ring buffer reservation failed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* filter_cgroups holds the cgroup v2 ids of the selected containers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KDIAG_MAX_FILTER);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroups SEC(".maps");

/* filter_netns holds the network namespace inode numbers of the selected pods. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KDIAG_MAX_FILTER);
	__type(key, __u32);
	__type(value, __u8);
} filter_netns SEC(".maps");

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&lost, &zero);
	if (c)
		(*c)++;
}

/* reserve wraps bpf_ringbuf_reserve so that a full buffer is never silent. */
static __always_inline void *reserve(void *rb, __u64 size)
{
	void *e = bpf_ringbuf_reserve(rb, size, 0);
	if (!e)
		count_lost();
	return e;
}

/* wanted reports whether an event of this cgroup and netns passes the filter. */
static __always_inline bool wanted(__u64 cgroup_id, __u32 netns)
{
	if (!filter_by_cgroup && !filter_by_netns)
		return true;
	if (filter_by_cgroup && bpf_map_lookup_elem(&filter_cgroups, &cgroup_id))
		return true;
	if (filter_by_netns && bpf_map_lookup_elem(&filter_netns, &netns))
		return true;
	return false;
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline __u64 sk_cgroup(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

#endif
