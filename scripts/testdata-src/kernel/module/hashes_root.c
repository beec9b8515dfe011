// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The blank placeholder the build links into vmlinux, as in
 * kernel/module/hashes_root.c: levels 0 and an all-zero hash, in its own
 * section so a post-link step can replace the 36 bytes.
 */
#include <linux/module_hashes.h>

const struct module_hashes_root module_hashes_root
	__attribute__((section(".module_hashes"))) = {};
