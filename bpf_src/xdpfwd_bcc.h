/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * BCC helpers shared by xdpfwd's programs. Compile with -DXDPFWD_PIN_DIR="<dir>":
 * every map lives in bpffs under that directory. Headers may hold macros and
 * plain functions only: BCC rewrites map syntax (map.lookup()) in its main text,
 * so program sources that use maps are concatenated into it (bpf/source.py).
 */
#ifndef XDPFWD_BCC_H
#define XDPFWD_BCC_H

#define PIN(name) XDPFWD_PIN_DIR "/" name

/*
 * -DXDPFWD_FRAGS=1: the programs are loaded with BPF_F_XDP_HAS_FRAGS (Linux 5.18+).
 * A frame may then come in several buffers: data..data_end is only the first, and
 * bpf_xdp_get_buff_len() is the length of the whole frame.
 */
#ifndef XDPFWD_FRAGS
#define XDPFWD_FRAGS 0
#endif
#define XDPFWD_LINEAR_LEN(ctx) ((u64)((ctx)->data_end - (ctx)->data))
#if XDPFWD_FRAGS && XDPFWD_KERN_CTX
/*
 * -DXDPFWD_KERN_CTX=1: the kernel has the kfunc bpf_cast_to_kern_ctx() (6.2+), whose
 * call the verifier turns into a register move. Through it the program reads the
 * struct xdp_buff's frags flag (at the offset and value xdpfwd takes from the
 * kernel's BTF), and calls bpf_xdp_get_buff_len() only for a frame in several
 * buffers: a helper call on every frame costs about 1 % of the forwarding rate with
 * this CPU's return-thunk mitigations. BCC cannot emit a kfunc call, so the C calls
 * helper number XDPFWD_KERN_CTX_CALL, which xdpfwd rewrites into the kfunc's call
 * before loading (bpf/loader.py).
 */
static void *(*xdpfwd_kern_ctx)(void *ctx) = (void *)XDPFWD_KERN_CTX_CALL;

static __always_inline u64 xdpfwd_frame_len(struct xdp_md *ctx)
{
	const void *buff = xdpfwd_kern_ctx(ctx);

	if (*(const u32 *)(buff + XDPFWD_XDP_BUFF_FLAGS_OFF) & XDPFWD_XDP_FLAGS_HAS_FRAGS)
		return bpf_xdp_get_buff_len(ctx);
	return XDPFWD_LINEAR_LEN(ctx);
}
#define XDPFWD_FRAME_LEN(ctx) xdpfwd_frame_len(ctx)
#elif XDPFWD_FRAGS
#define XDPFWD_FRAME_LEN(ctx) bpf_xdp_get_buff_len(ctx)
#else
#define XDPFWD_FRAME_LEN(ctx) XDPFWD_LINEAR_LEN(ctx)
#endif

/*
 * BCC's BPF_XDP_REDIRECT_MAP() in a pinned section: BCC adopts the map pinned
 * at _pin, or creates and pins a DEVMAP there. The section type only gives the C
 * side .redirect_map(), so the pinned map may also be a DEVMAP_HASH that
 * xdpfwd created itself (BCC cannot create that type).
 */
#define REDIRECT_MAP_PINNED(_name, _leaf_type, _max_entries, _pin)	\
	struct _name##_table_t {					\
		u32 key;						\
		_leaf_type leaf;					\
		u64 (*redirect_map)(int, int);				\
		u32 max_entries;					\
	};								\
	__attribute__((section("maps/devmap:" _pin)))			\
	struct _name##_table_t _name = { .max_entries = (_max_entries) }

/*
 * Per-CPU counters keyed by ifindex: an array of XDPFWD_STATS_SLOTS slots pinned
 * at _pin, and a hash for larger ifindexes pinned at _pin "_hi". (The lookup has to
 * be written out: BCC does not rewrite map calls that come from a macro.)
 */
#define SLOTTED_STATS(_name, _value_type, _pin)				\
	BPF_TABLE_PINNED("percpu_array", u32, _value_type, _name,		\
			 XDPFWD_STATS_SLOTS, PIN(_pin));			\
	BPF_TABLE_PINNED("percpu_hash", u32, _value_type, _name##_hi,		\
			 XDPFWD_MAX_PORTS, PIN(_pin XDPFWD_PIN_HI_SUFFIX))

static __always_inline void count(struct xdpfwd_counter *c, u64 bytes)
{
	c->packets++;
	c->bytes += bytes;
}

#endif /* XDPFWD_BCC_H */
