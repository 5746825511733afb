/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Wrapper of a user egress program. xdpfwd compiles, in this order: the counters
 * (xdpfwd_stats.c, xdpfwd_user.c), a static inline declaration of the user's
 * function under a private name, the user's file, then XDPFWD_USER_EGRESS(<function>):
 * a program with the user's function name that calls it and counts its verdict, so
 * the entry's counters see what the user's program dropped. Verdicts: XDP_PASS and
 * XDP_DROP as the user's function gave them; XDP_DROP for any other (see
 * xdpfwd_user_verdict()).
 */
#ifndef XDPFWD_USER_H
#define XDPFWD_USER_H

#define XDPFWD_USER_IMPL(_func) __xdpfwd_user_##_func

#define XDPFWD_USER_EGRESS(_func)					\
	int _func(struct xdp_md *ctx)					\
	{								\
		return xdpfwd_user_verdict(ctx, XDPFWD_USER_IMPL(_func)(ctx)); \
	}

#endif /* XDPFWD_USER_H */
