// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What the wrapper of a user egress program (xdpfwd_user.h) does with the user's
 * verdict; concatenated after xdpfwd_stats.c (see bpf/source.py).
 */

/*
 * Per forwarding entry (key: its ingress ifindex), per CPU: frames its user egress
 * program gave a verdict other than XDP_PASS or XDP_DROP. A devmap egress program
 * may only pass or drop: the kernel drops XDP_TX, XDP_REDIRECT and XDP_ABORTED
 * there (dev_map_bpf_prog_run()), so without this they would vanish uncounted.
 * Created and pinned by the first user program compiled in a pin dir.
 */
BPF_TABLE_PINNED("percpu_hash", u32, struct xdpfwd_counter, xdpfwd_entry_invalid,
		 XDPFWD_MAX_PORTS, PIN(XDPFWD_PIN_ENTRY_INVALID));

/*
 * Counts the frame on its entry after the user's verdict. Verdicts: XDP_PASS and
 * XDP_DROP unchanged; XDP_DROP for any other, counted in xdpfwd_entry_invalid
 * rather than as the program's drop.
 */
static __always_inline int xdpfwd_user_verdict(struct xdp_md *ctx, int verdict)
{
	u32 ingress = ctx->ingress_ifindex;
	struct xdpfwd_counter zero = {}, *invalid;

	if (verdict == XDP_PASS || verdict == XDP_DROP) {
		count_egress(ctx, verdict);
		return verdict;
	}
	invalid = xdpfwd_entry_invalid.lookup_or_try_init(&ingress, &zero);
	if (invalid)
		count(invalid, XDPFWD_FRAME_LEN(ctx));
	return XDP_DROP;
}
