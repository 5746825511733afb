/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Wrapper of a user egress program. xdpfwd compiles, in this order: the counters
 * (xdpfwd_stats.c), a static inline declaration of the user's function under a
 * private name, the user's file, then XDPFWD_USER_EGRESS(<function>): a program
 * with the user's function name that calls it and counts its verdict, so the
 * entry's counters see what the user's program dropped.
 */
#ifndef XDPFWD_USER_H
#define XDPFWD_USER_H

#define XDPFWD_USER_IMPL(_func) __xdpfwd_user_##_func

#define XDPFWD_USER_EGRESS(_func)					\
	int _func(struct xdp_md *ctx)					\
	{								\
		int verdict = XDPFWD_USER_IMPL(_func)(ctx);		\
		count_egress(ctx, verdict);				\
		return verdict;						\
	}

#endif /* XDPFWD_USER_H */
