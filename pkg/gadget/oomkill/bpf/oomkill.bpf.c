// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kdiag trace oomkill: the OOM killer's victim and the process whose
 * allocation triggered it, with the victim's memory cgroup (path, limit,
 * usage) read in the kernel, because the cgroup may be gone by the time user
 * space looks. tp_btf/mark_victim gives the victim's task_struct; the
 * classic tracepoint is the fallback and then describes the memory cgroup
 * of the triggering task (for a cgroup OOM, the same or a child).
 */
#include "common.h"
#include <bpf/bpf_tracing.h>

#define PATH_DEPTH 8
#define NAME_LEN 72

struct event {
	__u64 ts;
	__u64 memcg_id;          /* kernfs id of the victim's memory cgroup */
	__u64 trigger_cgroup_id; /* cgroup2 id of the triggering task */
	__u64 limit_pages;       /* memory cgroup limit (page_counter max) */
	__u64 usage_pages;       /* memory cgroup usage */
	__u64 total_vm_pages;
	__u64 anon_rss_pages;
	__u64 file_rss_pages;
	__u64 shmem_rss_pages;
	__u32 victim_pid;
	__u32 trigger_pid;
	__u32 trigger_tid;
	__u32 netns;
	__s16 oom_score_adj;
	__u8 depth;   /* names[] holds depth path components, leaf first */
	__u8 exact;   /* 1 when the memory cgroup is the victim's (tp_btf) */
	__u8 victim_comm[KDIAG_COMM_LEN];
	__u8 trigger_comm[KDIAG_COMM_LEN];
	char names[PATH_DEPTH][NAME_LEN];
};

/* Keeps struct event in BTF so that bpf2go generates its Go type. */
const struct event *unused_event __attribute__((unused));

/* page_kb is the page size in KiB, set by the loader. */
const volatile __u32 page_kb = 4;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps");

/* Before Linux 6.15 the kernfs parent pointer was called parent. */
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

/* fill_memcg describes the memory cgroup of task. */
static __always_inline void fill_memcg(struct event *e, struct task_struct *task)
{
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct cgroup_subsys_state *css = BPF_CORE_READ(task, cgroups, subsys[id]);
	if (!css)
		return;
	/* css is the first member of struct mem_cgroup. */
	struct mem_cgroup *memcg = (struct mem_cgroup *)css;
	e->limit_pages = BPF_CORE_READ(memcg, memory.max);
	e->usage_pages = BPF_CORE_READ(memcg, memory.usage.counter);
	struct kernfs_node *kn = BPF_CORE_READ(css, cgroup, kn);
	e->memcg_id = BPF_CORE_READ(kn, id);
	__u8 depth = 0;
#pragma unroll
	for (int i = 0; i < PATH_DEPTH; i++) {
		if (!kn)
			break;
		struct kernfs_node *parent = kn_parent(kn);
		if (!parent)
			break; /* the root's name is not part of the path */
		const char *name = BPF_CORE_READ(kn, name);
		bpf_probe_read_kernel_str(e->names[i], NAME_LEN, name);
		depth++;
		kn = parent;
	}
	e->depth = depth;
}

static __always_inline void fill_trigger(struct event *e)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->trigger_pid = pid_tgid >> 32;
	e->trigger_tid = (__u32)pid_tgid;
	e->trigger_cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->trigger_comm, sizeof(e->trigger_comm));
}

SEC("tp_btf/mark_victim")
int BPF_PROG(handle_mark_victim_btf, struct task_struct *task, uid_t uid)
{
	struct event *e = reserve(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_boot_ns();
	e->exact = 1;
	e->victim_pid = BPF_CORE_READ(task, tgid);
	BPF_CORE_READ_STR_INTO(&e->victim_comm, task, comm);
	e->oom_score_adj = BPF_CORE_READ(task, signal, oom_score_adj);
	e->netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	if (mm) {
		e->total_vm_pages = BPF_CORE_READ(mm, total_vm);
		e->file_rss_pages = BPF_CORE_READ(mm, rss_stat[MM_FILEPAGES].count);
		e->anon_rss_pages = BPF_CORE_READ(mm, rss_stat[MM_ANONPAGES].count);
		e->shmem_rss_pages = BPF_CORE_READ(mm, rss_stat[MM_SHMEMPAGES].count);
	}
	fill_trigger(e);
	fill_memcg(e, task);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/oom/mark_victim")
int handle_mark_victim_tp(struct trace_event_raw_mark_victim *ctx)
{
	struct event *e = reserve(&events, sizeof(*e));
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_boot_ns();
	e->victim_pid = ctx->pid;
	__u32 kb = page_kb ? page_kb : 4;
	e->total_vm_pages = ctx->total_vm / kb;
	e->anon_rss_pages = ctx->anon_rss / kb;
	e->file_rss_pages = ctx->file_rss / kb;
	e->shmem_rss_pages = ctx->shmem_rss / kb;
	e->oom_score_adj = ctx->oom_score_adj;
	/* The victim's comm is a __data_loc string: offset in the low 16 bits. */
	__u32 loc = ctx->__data_loc_comm;
	bpf_probe_read_kernel_str(e->victim_comm, sizeof(e->victim_comm), (void *)ctx + (loc & 0xffff));
	fill_trigger(e);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	e->netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	fill_memcg(e, task);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
