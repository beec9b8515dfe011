/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Miniature of include/linux/module_hashes.h from the module-hashes series:
 * the root of the Merkle tree over all in-tree modules, 36 bytes.
 */
#ifndef _LINUX_MODULE_HASHES_H
#define _LINUX_MODULE_HASHES_H

struct module_hashes_root {
	unsigned int levels;
	unsigned char hash[32];
};

extern const struct module_hashes_root module_hashes_root;

#endif /* _LINUX_MODULE_HASHES_H */
